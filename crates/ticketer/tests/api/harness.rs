use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use ticketer::stack::{self, Ports};
use ticketer_auth::keys::SigningKey;
use ticketer_config::{Env, Service};
use ticketer_http::{Claims, Role};
use ticketer_testkit::TestDatabase;
use ticketer_testkit::TestVhost;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The Retry-After header, in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        ticketer_http::retry_after_secs(&self.headers)
    }

    /// The `field` names of a problem+json's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn text(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_string()
    }

    /// A booking request the buyer is told is sold out: refused at once
    /// (409, problem type sold-out, nothing booked) when the service
    /// already knew, else a booking that failed SOLD_OUT in the saga.
    pub fn is_sold_out(&self) -> bool {
        let refused = self.status == StatusCode::CONFLICT
            && self.text("type").ends_with("/sold-out")
            && self.body.get("booking_id").is_none();
        let failed = self.text("status") == "FAILED" && self.text("failure_reason") == "SOLD_OUT";
        refused || failed
    }
}

/// A running Ticketer and a client pointed at its gateway.
pub struct TestStack {
    pub base: String,
    /// Every service's own base URL, by name.
    pub services: Vec<(String, String)>,
    pub http: reqwest::Client,
    key_file: PathBuf,
    pub label: &'static str,
    _data: tempfile::TempDir,
    _dbs: Vec<TestDatabase>,
    _vhost: Option<TestVhost>,
    children: Vec<Child>,
    /// The production processes' variables (empty when embedded), to start
    /// one of them again.
    env: HashMap<String, String>,
    shutdown: CancellationToken,
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for c in &mut self.children {
            let _ = c.start_kill();
        }
    }
}

fn env_map(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// `token` with one character of its signature changed (not the last,
/// whose low bits are padding): its claims intact, its signature wrong.
pub fn broken_signature(token: &str) -> String {
    let at = token.len() - 10;
    let swap = if &token[at..=at] == "A" { "B" } else { "A" };
    format!("{}{swap}{}", &token[..at], &token[at + 1..])
}

pub fn test_urls() -> Option<(String, String, String)> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("TICKETER_TEST_POSTGRES_URL"),
        get("TICKETER_TEST_AMQP_URL"),
        get("TICKETER_TEST_REDIS_URL"),
    ) {
        (Some(pg), Some(amqp), Some(redis)) => Some((pg, amqp, redis)),
        _ => None,
    }
}

pub use ticketer_testkit::free_port;

impl TestStack {
    /// Every service in this process on the embedded backend, on free ports.
    /// Rate limiting is off unless `extra` turns it on.
    pub async fn embedded(extra: &[(&str, &str)]) -> TestStack {
        let data = tempfile::tempdir().unwrap();
        // Reads answered from the gateway's short-lived copy are tested on
        // their own; elsewhere a test reads what it just changed.
        let mut vars = env_map(&[
            ("GATEWAY_RATE_LIMIT_PER_MINUTE", "0".into()),
            ("GATEWAY_CACHE_TTL_MS", "0".into()),
        ]);
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let env = Env::from_map(Service::Gateway, vars);
        let shutdown = CancellationToken::new();
        let apps = stack::build_all(&env, data.path(), Ports::Ephemeral, shutdown.clone())
            .await
            .expect("embedded stack starts");
        let gateway = apps.iter().find(|a| a.name == "gateway").unwrap().port();
        let services = apps
            .iter()
            .map(|a| (a.name.to_string(), format!("http://127.0.0.1:{}", a.port())))
            .collect();
        tokio::spawn(stack::run(apps));
        TestStack {
            base: format!("http://127.0.0.1:{gateway}"),
            services,
            http: reqwest::Client::new(),
            key_file: data.path().join("auth-signing-key.pem"),
            label: "embedded",
            _data: data,
            _dbs: Vec::new(),
            _vhost: None,
            children: Vec::new(),
            env: HashMap::new(),
            shutdown,
        }
    }

    /// Each service as its own `ticketer serve` process, on its own
    /// PostgreSQL database, sharing a fresh RabbitMQ vhost and a Redis prefix.
    pub async fn production() -> Option<TestStack> {
        Self::production_with(&[]).await
    }

    /// [`TestStack::production`] with extra variables for every process.
    pub async fn production_with(extra: &[(&str, &str)]) -> Option<TestStack> {
        let Some((pg, amqp, redis)) = test_urls() else {
            ticketer_testkit::skip_test(
                "production-backend test",
                "TICKETER_TEST_POSTGRES_URL, TICKETER_TEST_AMQP_URL and TICKETER_TEST_REDIS_URL",
            );
            return None;
        };
        let data = tempfile::tempdir().unwrap();
        let key_file = data.path().join("signing-key.pem");
        std::fs::write(&key_file, SigningKey::generate_pem()).unwrap();
        let vhost = TestVhost::create(&amqp).expect("rabbitmq vhost");
        let mut common = env_map(&[
            ("HOST", "127.0.0.1".into()),
            ("AMQP_URL", vhost.url.clone()),
            ("REDIS_URL", redis),
            ("REDIS_PREFIX", format!("test:{}:", uuid::Uuid::new_v4().simple())),
            ("AUTH_JWT_PRIVATE_KEY_FILE", key_file.display().to_string()),
            ("GATEWAY_RATE_LIMIT_PER_MINUTE", "0".into()),
            ("GATEWAY_CACHE_TTL_MS", "0".into()),
            ("SERVICE_TOKEN", format!("test-{}", uuid::Uuid::new_v4().simple())),
            // Two stacks side by side at 16 connections per service came
            // within a few of PostgreSQL's default 100; a test's load
            // needs far fewer.
            ("DB_MAX_CONNECTIONS", "4".into()),
            ("TICKETER_DATA_DIR", data.path().display().to_string()),
            (
                "RUST_LOG",
                std::env::var("TEST_LOG")
                    .map(|_| "info".to_string())
                    .unwrap_or_else(|_| "error".into()),
            ),
        ]);
        for (k, v) in extra {
            common.insert(k.to_string(), v.to_string());
        }
        let mut dbs = Vec::new();
        for svc in Service::ALL {
            if svc != Service::Gateway {
                let db = TestDatabase::postgres(&pg, svc.name())
                    .await
                    .expect("test database");
                common.insert(format!("{}DATABASE_URL", svc.env_prefix()), db.url.clone());
                dbs.push(db);
            }
        }
        // A port checked free can still be taken by another test's child
        // before ours binds it; a stack that lost that race is started
        // again on other ports. Any other failure to start fails the test,
        // with what the services said.
        for attempt in 1.. {
            let ports = distinct_free_ports();
            let mut env = common.clone();
            env.insert(
                "JWKS_URL".into(),
                format!(
                    "http://127.0.0.1:{}/api/v1/auth/.well-known/jwks.json",
                    ports[&Service::Auth]
                ),
            );
            for svc in Service::ALL {
                env.insert(format!("{}PORT", svc.env_prefix()), ports[&svc].to_string());
                if svc != Service::Gateway {
                    env.insert(
                        format!("GATEWAY_{}_URL", svc.name().to_uppercase()),
                        format!("http://127.0.0.1:{}", ports[&svc]),
                    );
                }
            }
            let logs: Vec<PathBuf> = Service::ALL
                .iter()
                .map(|svc| data.path().join(format!("{}-{attempt}.log", svc.name())))
                .collect();
            let mut children: Vec<Child> = Service::ALL
                .iter()
                .zip(&logs)
                .map(|(svc, log)| spawn_ticketer_logged(&["serve", svc.name()], &env, log))
                .collect();
            let base = format!("http://127.0.0.1:{}", ports[&Service::Gateway]);
            let http = reqwest::Client::new();
            match start_up(&http, &base, &mut children, &logs).await {
                Ok(()) => {
                    return Some(TestStack {
                        base,
                        services: Service::ALL
                            .iter()
                            .map(|svc| (svc.name().to_string(), format!("http://127.0.0.1:{}", ports[svc])))
                            .collect(),
                        http,
                        key_file,
                        label: "production",
                        _data: data,
                        _dbs: dbs,
                        _vhost: Some(vhost),
                        children,
                        env,
                        shutdown: CancellationToken::new(),
                    })
                }
                Err(said) if said.contains("Address already in use") && attempt < 3 => {
                    eprintln!("production stack: a port was taken, starting again: {said}");
                    for c in &mut children {
                        let _ = c.kill().await;
                    }
                }
                Err(said) => panic!("production stack did not start: {said}"),
            }
        }
        unreachable!()
    }

    /// Kills one service's process outright (SIGKILL: nothing it holds in
    /// memory survives) and starts it again on the same port, database and
    /// queues; returns once it is ready. Production stacks only.
    pub async fn restart(&mut self, service: &str) {
        let i = Service::ALL
            .iter()
            .position(|s| s.name() == service)
            .expect("a service of the stack");
        assert!(!self.children.is_empty(), "only a production stack has processes");
        self.children[i].kill().await.expect("killed");
        let log = self._data.path().join(format!("{service}-restarted.log"));
        self.children[i] = spawn_ticketer_logged(&["serve", service], &self.env, &log);
        let url = &self.services.iter().find(|(n, _)| n == service).unwrap().1;
        wait_ok(&format!("{url}/health/ready")).await;
    }

    /// Where the notification service writes its emails (no SMTP server
    /// is given to the tests).
    pub fn mail_dir(&self) -> PathBuf {
        self._data.path().join("mail")
    }

    /// The sum of `metric`'s series whose labels contain `labels` on
    /// `service`'s own `/metrics` (a backend's port, open to scrapers).
    pub async fn metric_sum(&self, service: &str, metric: &str, labels: &str) -> f64 {
        let base = &self.services.iter().find(|(n, _)| n == service).unwrap().1;
        let text = self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(metric) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Creates the event `body` describes as `organizer` and publishes it;
    /// its id.
    pub async fn published_event(&self, organizer: &str, body: Value) -> i64 {
        let r = self
            .call(Method::POST, "/api/v1/events", Some(organizer), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}: {}", self.label, r.body);
        let id = r.body["id"].as_i64().unwrap();
        let path = format!("/api/v1/events/{id}/publish");
        let r = self.call(Method::POST, &path, Some(organizer), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {}", self.label, r.body);
        id
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request reaches the gateway");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Polls GET `path` until it answers 200 with a body `done` accepts
    /// (messages between services take a moment); fails after 15 s.
    pub async fn eventually(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.poll(path, None, done).await
    }

    /// [`TestStack::eventually`] as the holder of `token`.
    pub async fn eventually_as(&self, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.poll(path, Some(token), done).await
    }

    async fn poll(&self, path: &str, token: Option<&str>, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = self.call(Method::GET, path, token, None).await;
            if r.status == StatusCode::OK && done(&r.body) {
                return r.body;
            }
            assert!(
                Instant::now() < deadline,
                "{}: GET {path} never got there; last answer {} {}",
                self.label,
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn raw_post(&self, path: &str, token: &str, body: &str) -> Reply {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// An anonymous POST that, like a real client, waits and tries again
    /// while auth answers 503 (its password hashing is busy: the whole
    /// suite registers users at once on two cores) for up to half a minute.
    pub async fn call_patiently(&self, path: &str, body: Value) -> Reply {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.call(Method::POST, path, None, Some(body.clone())).await;
            if r.status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > give_up {
                return r;
            }
            let wait = r.retry_after().unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.min(5))).await;
        }
    }

    /// Registers and logs in; returns (user id, access token, refresh token).
    pub async fn user(&self, role: &str) -> (String, String, String) {
        let email = format!(
            "{}-{}@example.com",
            role.to_lowercase(),
            uuid::Uuid::new_v4().simple()
        );
        let r = self
            .call_patiently(
                "/api/v1/auth/register",
                serde_json::json!({"email": email, "password": "s3cret-pass", "first_name": "Test", "last_name": role, "role": role}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}: register: {}",
            self.label,
            r.body
        );
        let id = r.text("id");
        let r = self
            .call_patiently(
                "/api/v1/auth/login",
                serde_json::json!({"email": email, "password": "s3cret-pass"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}: login: {}", self.label, r.body);
        (id, r.text("access_token"), r.text("refresh_token"))
    }

    /// A token signed with the real key, with claims of our choosing.
    pub fn forge(&self, sub: &str, roles: Vec<Role>, exp_offset_secs: i64) -> String {
        self.forge_with(sub, roles, |c| c.exp = c.iat + 3600 + exp_offset_secs)
    }

    /// [`Self::forge`] with any claim changed by `tweak` (issued an hour
    /// ago, valid for an hour from now, unless tweaked).
    pub fn forge_with(&self, sub: &str, roles: Vec<Role>, tweak: impl FnOnce(&mut Claims)) -> String {
        let key = SigningKey::from_pem(&std::fs::read_to_string(&self.key_file).unwrap()).unwrap();
        let now = chrono::Utc::now().timestamp();
        let mut claims = Claims {
            sub: sub.to_string(),
            email: "forged@example.com".into(),
            roles,
            iat: now - 3600,
            exp: now + 3600,
            iss: "ticketer-auth".into(),
            nbf: None,
        };
        tweak(&mut claims);
        key.sign(&claims)
    }
}

/// Starts the real `ticketer` binary with exactly `env`; killed on drop.
pub fn spawn_ticketer(args: &[&str], env: &HashMap<String, String>) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ticketer"))
        .args(args)
        .env_clear()
        .envs(env)
        .stdout(if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ticketer")
}

/// [`spawn_ticketer`] with its output appended to `log` (unless
/// TEST_LOG shows it), so that a failed start can say why.
pub fn spawn_ticketer_logged(args: &[&str], env: &HashMap<String, String>, log: &std::path::Path) -> Child {
    if std::env::var("TEST_LOG").is_ok() {
        return spawn_ticketer(args, env);
    }
    let out = std::fs::File::create(log).expect("child's log file");
    Command::new(env!("CARGO_BIN_EXE_ticketer"))
        .args(args)
        .env_clear()
        .envs(env)
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ticketer")
}

/// Seven ports, one per service, each free when asked.
fn distinct_free_ports() -> HashMap<Service, u16> {
    let mut ports = HashMap::new();
    for svc in Service::ALL {
        let mut port = free_port();
        while ports.values().any(|p| *p == port) {
            port = free_port();
        }
        ports.insert(svc, port);
    }
    ports
}

/// Waits up to a minute for the gateway to report every service
/// ready; on failure, says which child exited or what the gateway's
/// /health said last, with the end of each service's log.
async fn start_up(
    http: &reqwest::Client,
    base: &str,
    children: &mut [Child],
    logs: &[PathBuf],
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            let ok = r.status().is_success();
            last = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
            if ok {
                return Ok(());
            }
        }
        let exited = children
            .iter_mut()
            .zip(Service::ALL)
            .find_map(|(c, svc)| c.try_wait().ok().flatten().map(|status| (svc, status)));
        if exited.is_some() || Instant::now() > deadline {
            let tails: Vec<String> = logs
                .iter()
                .map(|log| {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
                    format!("{}:\n  {tail}", log.display())
                })
                .collect();
            let why = match exited {
                Some((svc, status)) => format!("{} exited ({status})", svc.name()),
                None => format!("gateway /health never 200 in 60 s; last: {last}"),
            };
            return Err(format!("{why}\n{}", tails.join("\n")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `url` until it answers 2xx; fails the test after a minute.
pub async fn wait_ok(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A call through the gateway of a `ticketer` process this test started
/// (waiting up to 10 s for a booking to settle); fails the test unless 2xx.
pub async fn call_gateway(
    http: &reqwest::Client,
    method: Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, url).header("prefer", "wait=10");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// Registers a new account with `role` and `password` through `gateway`
/// and logs in: (access token, refresh token).
pub async fn signed_up(
    http: &reqwest::Client,
    gateway: &str,
    role: &str,
    password: &str,
) -> (String, String) {
    let email = format!(
        "{}-{}@example.com",
        role.to_lowercase(),
        uuid::Uuid::new_v4().simple()
    );
    let profile = serde_json::json!({"email": email, "password": password, "first_name": "T", "last_name": role, "role": role});
    call_gateway(
        http,
        Method::POST,
        format!("{gateway}/api/v1/auth/register"),
        None,
        Some(profile),
    )
    .await;
    let login = serde_json::json!({"email": email, "password": password});
    let tokens = call_gateway(
        http,
        Method::POST,
        format!("{gateway}/api/v1/auth/login"),
        None,
        Some(login),
    )
    .await;
    (
        tokens["access_token"].as_str().unwrap().to_string(),
        tokens["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// Sends SIGTERM and returns the exit code, failing if it takes too long.
pub async fn terminate(child: &mut Child) -> Option<i32> {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped within 30 s of SIGTERM")
        .unwrap()
        .code()
}

/// The environment for a `ticketer dev` this test starts: loopback only,
/// no rate limit, data under `data_dir`, every service on a free port,
/// and `extra`; with the gateway's base URL.
pub fn dev_env(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> (HashMap<String, String>, String) {
    let mut env: HashMap<String, String> = HashMap::from([
        ("HOST".into(), "127.0.0.1".into()),
        ("GATEWAY_RATE_LIMIT_PER_MINUTE".into(), "0".into()),
        ("TICKETER_DATA_DIR".into(), data_dir.display().to_string()),
    ]);
    for svc in Service::ALL {
        env.insert(format!("{}PORT", svc.env_prefix()), free_port().to_string());
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let gateway = format!("http://127.0.0.1:{}", env["GATEWAY_PORT"]);
    (env, gateway)
}

/// An organizer's event with `capacity` seats at 20.00, created and
/// published through `gateway`, once the ticket service has it on sale.
pub async fn event_on_sale_at(http: &reqwest::Client, gateway: &str, organizer: &str, capacity: i64) -> i64 {
    let event = serde_json::json!({
        "event_name": "Sale", "description": "", "category": "Music", "location": "Hall",
        "event_date": "2031-03-03", "start_time": "20:00", "end_time": "23:00",
        "ticket_capacity": capacity, "ticket_price": "20.00"
    });
    let created = call_gateway(
        http,
        Method::POST,
        format!("{gateway}/api/v1/events"),
        Some(organizer),
        Some(event),
    )
    .await;
    let id = created["id"].as_i64().unwrap();
    let publish = format!("{gateway}/api/v1/events/{id}/publish");
    call_gateway(http, Method::POST, publish, Some(organizer), None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http
            .get(format!("{gateway}/api/v1/tickets/availability/{id}"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            return id;
        }
        assert!(Instant::now() < deadline, "event {id} never went on sale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
