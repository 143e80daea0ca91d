//! One service alone, as its neighbours see it: a throwaway database (a
//! SQLite file, or a PostgreSQL database with a RabbitMQ vhost), its HTTP
//! API on a free port, and the test listening where the service's answers
//! go. The whole stack is `crates/ticketer/tests/api/harness.rs`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use ticketer_auth::keys::SigningKey;
use ticketer_bus::{topology::QueueSpec, BatchHandler, Bus, Envelope, HandleError, Outgoing};
use ticketer_config::{ConfigError, Env, InfraConfig, Service};
use ticketer_http::{Claims, Role, ServiceApp};
use ticketer_runtime::Runtime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{amqp_url, postgres_url, skip_test, TestDatabase, TestVhost};

/// Where the rig runs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite and the in-process bus.
    Embedded,
    /// PostgreSQL and RabbitMQ, from the TICKETER_TEST_* URLs.
    Servers,
}

/// Every message that reached a queue the test listens on, as (kind,
/// payload), in arrival order.
#[derive(Default)]
pub struct Heard(Mutex<Vec<(String, Value)>>);

#[async_trait::async_trait]
impl BatchHandler for Heard {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        let mut all = self.0.lock().expect("not poisoned");
        all.extend(batch.iter().map(|m| (m.kind.clone(), m.payload.clone())));
        Ok(())
    }
}

impl Heard {
    pub fn all(&self) -> Vec<(String, Value)> {
        self.0.lock().expect("not poisoned").clone()
    }

    /// Waits until `enough` finds what it looks for in what was heard so
    /// far, and returns that; fails the test after `within`, saying `what`
    /// was awaited.
    pub async fn until<T>(
        &self,
        within: Duration,
        what: &str,
        mut enough: impl FnMut(&[(String, Value)]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = enough(&self.0.lock().expect("not poisoned")) {
                return found;
            }
            assert!(Instant::now() < deadline, "waited {within:?} for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The messages about `booking` (their `booking_id`), once there are
    /// `n` (30 s at most).
    pub async fn about(&self, booking: impl std::fmt::Display, n: usize) -> Vec<(String, Value)> {
        let booking = booking.to_string();
        let what = format!("{n} messages about booking {booking}");
        self.until(Duration::from_secs(30), &what, |all| {
            let got: Vec<_> = all
                .iter()
                .filter(|(_, p)| p["booking_id"].as_str() == Some(booking.as_str()))
                .cloned()
                .collect();
            (got.len() >= n).then_some(got)
        })
        .await
    }

    /// The first message of `kind`, once it arrives (20 s at most).
    pub async fn first(&self, kind: &str) -> Value {
        self.times(kind, 1).await;
        let all = self.all();
        let (_, payload) = all.iter().find(|(k, _)| k == kind).expect("counted");
        payload.clone()
    }

    /// Waits until `kind` arrived `n` times (20 s at most).
    pub async fn times(&self, kind: &str, n: usize) {
        let what = format!("{n} {kind}");
        self.until(Duration::from_secs(20), &what, |all| {
            (all.iter().filter(|(k, _)| k == kind).count() >= n).then_some(())
        })
        .await
    }
}

/// A service running alone for a test; stopped when dropped.
pub struct ServiceRig {
    pub bus: Bus,
    /// The service's own address, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    pub key: SigningKey,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    heard: HashMap<&'static str, Arc<Heard>>,
    _db: TestDatabase,
    _vhost: Option<TestVhost>,
    _data: tempfile::TempDir,
}

impl Drop for ServiceRig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl ServiceRig {
    /// Starts `service` with `build` (its crate's `build`) and the
    /// settings `settings` reads (its crate's `Settings::from_env`), its
    /// database URL and a 20 ms outbox poll set, plus `vars` (full names,
    /// e.g. `BOOKING_PAYMENT_TIMEOUT_SECONDS`). The test hears whatever reaches
    /// the `listen` queues. None (the test skipped) when `backend` is
    /// [`Backend::Servers`] and their URLs are not set.
    pub async fn start<S>(
        service: Service,
        backend: Backend,
        vars: &[(&str, &str)],
        listen: &[QueueSpec],
        settings: fn(&Env) -> Result<S, ConfigError>,
        build: impl AsyncFnOnce(S, Runtime, TcpListener, CancellationToken) -> anyhow::Result<ServiceApp>,
    ) -> Option<ServiceRig> {
        let (db, bus, vhost) = match backend {
            Backend::Embedded => (TestDatabase::sqlite(), Bus::in_process(), None),
            Backend::Servers => {
                let (Some(pg), Some(amqp)) = (postgres_url(), amqp_url()) else {
                    skip_test(
                        &format!("the {} service on PostgreSQL/RabbitMQ", service.name()),
                        "TICKETER_TEST_POSTGRES_URL and TICKETER_TEST_AMQP_URL",
                    );
                    return None;
                };
                let vhost = TestVhost::create(&amqp).expect("a RabbitMQ vhost");
                let bus = Bus::connect(Some(&vhost.url)).await.expect("RabbitMQ");
                let db = TestDatabase::postgres(&pg, service.name())
                    .await
                    .expect("a PostgreSQL database");
                (db, bus, Some(vhost))
            }
        };
        let data = tempfile::tempdir().expect("a data dir");
        let prefix = service.env_prefix();
        let mut all = HashMap::from([
            (format!("{prefix}DATABASE_URL"), db.url.clone()),
            (format!("{prefix}OUTBOX_POLL_MS"), "20".to_string()),
        ]);
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env = Env::from_map(service, all);
        let infra = InfraConfig::from_env(service, &env, data.path().to_path_buf()).expect("settings");
        let shutdown = CancellationToken::new();
        let mut heard = HashMap::new();
        for queue in listen {
            let h = Arc::new(Heard::default());
            bus.subscribe(queue.subscription(), h.clone(), shutdown.clone())
                .await
                .expect("listening");
            heard.insert(queue.name, h);
        }
        let key = SigningKey::from_pem(&SigningKey::generate_pem()).expect("a key");
        let settings = settings(&infra.env).expect("the service's settings");
        let runtime = Runtime::new(
            infra,
            db.connect().await.expect("the database"),
            bus.clone(),
            Some(ticketer_cache::Cache::memory()),
            key.verifier("ticketer-auth"),
        );
        let listener = ticketer_http::bind("127.0.0.1", 0).await.expect("a port");
        let app = build(settings, runtime, listener, shutdown.clone())
            .await
            .expect("the service starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        Some(ServiceRig {
            bus,
            base,
            key,
            http: reqwest::Client::new(),
            shutdown,
            heard,
            _db: db,
            _vhost: vhost,
            _data: data,
        })
    }

    /// What reached `queue`, one of those the rig was started to listen on.
    pub fn heard(&self, queue: &QueueSpec) -> &Heard {
        self.heard
            .get(queue.name)
            .unwrap_or_else(|| panic!("the rig does not listen on {}", queue.name))
    }

    /// Publishes `msg` on `exchange`, as a neighbouring service would.
    pub async fn send(&self, exchange: &str, msg: Envelope) {
        self.bus
            .publish(&[Outgoing::new(exchange, &msg)])
            .await
            .expect("published");
    }

    /// A bearer token for `user` with `roles`, valid for five minutes.
    pub fn token(&self, user: &str, roles: Vec<Role>) -> String {
        let now = chrono::Utc::now().timestamp();
        self.key.sign(&Claims {
            sub: user.to_string(),
            email: "rig@example.com".into(),
            roles,
            iat: now,
            exp: now + 300,
            iss: "ticketer-auth".into(),
            nbf: None,
        })
    }
}
