//! `ticketer chaos`: a flash sale on the production backend, every service
//! its own `ticketer serve` process, while a nemesis drawn from a seed kills
//! services, pauses one for longer than holds and payment deadlines last,
//! restarts RabbitMQ and PostgreSQL and stops Redis. Then the system is left
//! to drain and the services' own records are audited: the run proves the
//! promises (no seat sold twice, no money kept without a seat, no accepted
//! booking left unfinished, nothing stuck) or says which one broke.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde::Serialize;
use ticketer_config::Service;

mod audit;
pub mod nemesis;
mod network;
mod processes;
mod sale;
mod servers;
mod shoppers;

pub use audit::Audit;
pub use servers::ServerCommands;

use audit::Records;
use nemesis::{Fault, Planned, Shape};
use network::{Condition, Network};
use processes::Processes;
use servers::{sh, Resources};
use ticketer_config::address_of;

/// What is sold, to whom, and how the nemesis is drawn.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub seed: u64,
    /// How long the nemesis runs; buyers arrive over the first 80% of it.
    pub seconds: u64,
    pub tickets: i64,
    pub buyers: usize,
    pub concurrency: usize,
    /// TICKET_HOLD_TTL_SECONDS of the run (short, so that holds expire
    /// during it).
    pub hold_ttl_s: u64,
    /// BOOKING_PAYMENT_TIMEOUT_SECONDS of the run.
    pub payment_timeout_s: u64,
    /// Buyers admitted at once by a waiting room in front of the sale, if
    /// it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_room: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub run: Run,
    /// How long the system may take to settle once the nemesis stopped.
    pub drain_s: u64,
    /// An administrator's URL of the PostgreSQL server (database
    /// `postgres`); the run makes its own databases there.
    pub postgres_url: String,
    /// The RabbitMQ server without a vhost; the run makes its own.
    pub amqp_url: String,
    pub redis_url: String,
    /// None: the servers are left alone.
    pub servers: Option<ServerCommands>,
    /// Slow, lossy and cut links between the saga's services and their
    /// servers.
    pub network: bool,
    /// The `ticketer` binary the services run from.
    pub bin: PathBuf,
    /// Signing key, logs of every process.
    pub work_dir: PathBuf,
    /// Keep the databases and the vhost for a look afterwards.
    pub keep: bool,
}

impl Config {
    fn shape(&self) -> Shape {
        Shape {
            run: Duration::from_secs(self.run.seconds),
            kill_every: (Duration::from_secs(2), Duration::from_secs(6)),
            pause_for: Duration::from_secs(self.run.hold_ttl_s.max(self.run.payment_timeout_s) + 5),
            servers: self.servers.is_some(),
            network: self.network,
        }
    }
}

/// The report, printed as one JSON line.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub run: Run,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Faults that could not be injected (a command that failed).
    pub faults_failed: Vec<String>,
    /// Service processes that exited by themselves and were started again.
    pub crash_restarts: usize,
    /// Requests the buyers sent, retries included.
    pub requests: usize,
    /// Error answers the buyers saw (each retried with the same key).
    pub errors: usize,
    /// Buyers who got nothing but errors for two minutes.
    pub gave_up: usize,
    /// Buyers refused at once because nothing was left.
    pub refused: usize,
    /// Buyers whose booking was still pending when they stopped following it.
    pub left_pending: usize,
    pub cancels_asked: usize,
    pub cancels_unanswered: usize,
    /// From the nemesis stopping to every service ready again.
    pub recovered_after_s: f64,
    /// From the nemesis stopping to everything settled.
    pub drained_after_s: f64,
    pub audit: Audit,
    pub clean: bool,
    /// Where the services' logs are.
    pub logs: String,
    pub plan: Vec<Planned>,
}

async fn answers(http: &reqwest::Client, url: &str) -> bool {
    matches!(http.get(url).send().await, Ok(r) if r.status().is_success())
}

async fn wait_for(http: &reqwest::Client, url: &str, within: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if answers(http, url).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{url} did not answer within {within:?}")
}

/// Waits until every service says it is ready; how long that took. Says
/// every few seconds which are not, and why.
async fn all_ready(within: Duration) -> anyhow::Result<f64> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        let mut down = Vec::new();
        for svc in Service::ALL {
            let url = format!("http://127.0.0.1:{}/health/ready", svc.default_port());
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => down.push(format!("{svc}: {}", r.text().await.unwrap_or_default())),
                Err(e) => down.push(format!("{svc}: {e}")),
            }
        }
        if down.is_empty() {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > within {
            bail!("not ready {within:?} after the nemesis: {}", down.join("; "));
        }
        if said.elapsed() > Duration::from_secs(5) {
            eprintln!("chaos: not ready yet: {}", down.join("; "));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn run(cfg: Config) -> anyhow::Result<Report> {
    let shape = cfg.shape();
    if cfg.run.seconds * 85 / 100 < shape.pause_for.as_secs() {
        bail!(
            "--seconds {} is too short for a pause of {} s (hold TTL and payment deadline plus 5 s)",
            cfg.run.seconds,
            shape.pause_for.as_secs()
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for port in Service::ALL.map(Service::default_port) {
        if answers(&http, &format!("http://127.0.0.1:{port}/health/live")).await {
            bail!("something already listens on port {port}; stop it first");
        }
    }
    std::fs::create_dir_all(&cfg.work_dir)?;
    let res = Resources {
        id: format!(
            "chaos_{}_{}",
            cfg.run.seed,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        postgres_admin: cfg.postgres_url.clone(),
        amqp_base: cfg.amqp_url.clone(),
        redis_url: cfg.redis_url.clone(),
    };
    res.create().await?;
    let outcome = run_on(&cfg, &res, shape).await;
    if cfg.keep {
        eprintln!("chaos: kept databases {}_<service> and vhost {}", res.id, res.id);
    } else {
        res.remove().await;
    }
    outcome
}

/// `url` with its `host:port` replaced by the proxy's.
fn through(url: &str, port: u16) -> String {
    url.replacen(&address_of(url), &format!("127.0.0.1:{port}"), 1)
}

fn environment(cfg: &Config, res: &Resources, network: Option<&Network>) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("AMQP_URL", res.amqp_url()),
        ("REDIS_URL", cfg.redis_url.clone()),
        ("REDIS_PREFIX", format!("{}:", res.id)),
        (
            "AUTH_JWT_PRIVATE_KEY_FILE",
            cfg.work_dir.join("signing-key.pem").display().to_string(),
        ),
        ("HOST", "127.0.0.1".into()),
        (
            "JWKS_URL",
            "http://127.0.0.1:4040/api/v1/auth/.well-known/jwks.json".into(),
        ),
        ("GATEWAY_RATE_LIMIT_PER_MINUTE", "0".into()),
        ("TICKET_HOLD_TTL_SECONDS", cfg.run.hold_ttl_s.to_string()),
        (
            "BOOKING_PAYMENT_TIMEOUT_SECONDS",
            cfg.run.payment_timeout_s.to_string(),
        ),
        ("BOOKING_REPLY_TIMEOUT_SECONDS", "5".into()),
        // The booking's first steps asked for directly, as in production:
        // a service killed mid-call leaves its part to the queues.
        (
            "SERVICE_TOKEN",
            format!("chaos-{}", uuid::Uuid::new_v4().simple()),
        ),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for svc in Service::BACKENDS {
        let db = res.database_url(svc);
        match network.and_then(|n| n.ports(svc)) {
            Some(ports) => {
                env.insert(
                    format!("{}DATABASE_URL", svc.env_prefix()),
                    through(&db, ports.postgres),
                );
                let amqp = through(&res.amqp_url(), ports.rabbitmq);
                env.insert(format!("{}AMQP_URL", svc.env_prefix()), amqp);
                env.insert(
                    format!("GATEWAY_{}_URL", svc.name().to_uppercase()),
                    format!("http://127.0.0.1:{}", ports.from_gateway),
                );
            }
            None => {
                env.insert(format!("{}DATABASE_URL", svc.env_prefix()), db);
            }
        }
    }
    env
}

async fn run_on(cfg: &Config, res: &Resources, shape: Shape) -> anyhow::Result<Report> {
    let network = match shape.network {
        true => Some(Arc::new(
            Network::start(&address_of(&cfg.postgres_url), &address_of(&cfg.amqp_url)).await?,
        )),
        false => None,
    };
    let env = environment(cfg, res, network.as_deref());
    let procs = Processes::new(cfg.bin.clone(), env.clone(), cfg.work_dir.clone());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    // auth first: it makes the signing key the others check tokens with.
    procs.start(Service::Auth).await?;
    wait_for(
        &http,
        "http://127.0.0.1:4040/health/ready",
        Duration::from_secs(60),
    )
    .await?;
    for svc in Service::ALL.into_iter().filter(|s| *s != Service::Auth) {
        procs.start(svc).await?;
    }
    wait_for(&http, "http://127.0.0.1:5000/health", Duration::from_secs(60)).await?;
    let watch = tokio::spawn(procs.clone().watch());
    let result = sale::sale(cfg, res, shape, &procs, network, &env).await;
    watch.abort();
    procs.stop_all().await;
    result
}

/// Carries out one fault; Err when a command failed.
async fn inject(
    procs: &Processes,
    servers: Option<&ServerCommands>,
    network: Option<&Network>,
    fault: &Fault,
) -> anyhow::Result<()> {
    let servers = || servers.context("no server commands");
    match fault {
        Fault::Kill { service, down_ms } => {
            let svc: Service = service.parse()?;
            procs.kill(svc).await;
            tokio::time::sleep(Duration::from_millis(*down_ms)).await;
            procs.start(svc).await
        }
        Fault::Pause { service, for_ms } => {
            let svc: Service = service.parse()?;
            procs.signal(svc, "STOP").await?;
            tokio::time::sleep(Duration::from_millis(*for_ms)).await;
            procs.signal(svc, "CONT").await
        }
        Fault::RestartRabbitmq => sh("restart RabbitMQ", &servers()?.restart_rabbitmq).await,
        Fault::RestartPostgres => sh("restart PostgreSQL", &servers()?.restart_postgres).await,
        Fault::StopRedis { for_ms } => {
            sh("stop Redis", &servers()?.stop_redis).await?;
            tokio::time::sleep(Duration::from_millis(*for_ms)).await;
            sh("start Redis", &servers()?.start_redis).await
        }
        Fault::SlowNetwork {
            service,
            delay_ms,
            for_ms,
        } => {
            let slow = Condition::Slow(Duration::from_millis(*delay_ms));
            bad_network(network, service, slow, *for_ms).await
        }
        Fault::LossyNetwork { service, for_ms } => {
            let lossy = Condition::Lossy {
                one_in: 20,
                rto: Duration::from_millis(300),
            };
            bad_network(network, service, lossy, *for_ms).await
        }
        Fault::Partition { service, for_ms } => bad_network(network, service, Condition::Cut, *for_ms).await,
    }
}

/// `service`'s links in `condition` for `for_ms`, then clear again.
async fn bad_network(
    network: Option<&Network>,
    service: &str,
    condition: Condition,
    for_ms: u64,
) -> anyhow::Result<()> {
    let network = network.context("no network proxies")?;
    let svc: Service = service.parse()?;
    network.set(svc, condition);
    tokio::time::sleep(Duration::from_millis(for_ms)).await;
    network.set(svc, Condition::Clear);
    Ok(())
}
