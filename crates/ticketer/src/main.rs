//! `ticketer`: one binary for every way of running Ticketer.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ticketer::stack::{self, Ports};
use ticketer_config::{Env, InfraConfig, Service};
use ticketer_telemetry::LogFormat;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc malloc: glibc keeps freed memory in per-thread
/// arenas, so the 19 MiB blocks of Argon2 hashes computed on many blocking
/// threads stay resident (measured in docs/benchmarks.md); mimalloc returns
/// large freed blocks to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ticketer", version, about = "Event ticketing that does not oversell")]
struct Cli {
    /// Where embedded data lives: SQLite files, the signing key, mail.
    #[arg(long, global = true, env = "TICKETER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every service in this process on its contract port (embedded by
    /// default: SQLite, in-process bus and cache; honours *_DATABASE_URL,
    /// AMQP_URL and REDIS_URL when set).
    Dev,
    /// One service, configured by environment variables.
    Serve {
        /// gateway, auth, events, notification, booking, ticket or payment.
        service: Service,
    },
    /// Applies database migrations for one service, or `all`.
    Migrate { service: String },
    /// Load generators that check their results against the services' records.
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
    /// A flash sale on the production backend (every service its own
    /// process) while a seeded nemesis kills, pauses and restarts services
    /// and servers; then an audit of the services' records. Prints a JSON
    /// report as the last line; exits 1 unless the audit is clean.
    Chaos(ChaosArgs),
    /// Administrator accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Dead letters: the messages a queue's consumer gave up on (RabbitMQ's
    /// `<queue>.dlq` when AMQP_URL is set, else the consuming service's
    /// database).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(clap::Args)]
struct ChaosArgs {
    /// Draws the faults: the same seed, the same faults at the same times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long faults are injected; buyers arrive over the first 80%.
    #[arg(long, default_value_t = 90)]
    seconds: u64,
    #[arg(long, default_value_t = 400)]
    tickets: i64,
    #[arg(long, default_value_t = 2_000)]
    buyers: usize,
    /// At most this many buyers in flight; buyers arrive on schedule
    /// whatever the others do, up to this cap.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// The services' hold TTL in seconds (short, so that holds expire in the run).
    #[arg(long, default_value_t = 15)]
    hold_ttl: u64,
    /// The services' payment deadline in seconds.
    #[arg(long, default_value_t = 10)]
    payment_timeout: u64,
    /// Seconds the system may take to settle after the nemesis (default:
    /// hold TTL + payment deadline + 60).
    #[arg(long)]
    drain: Option<u64>,
    /// Leave PostgreSQL, RabbitMQ and Redis alone.
    #[arg(long)]
    no_server_faults: bool,
    /// Leave the network between the services and their servers alone.
    #[arg(long)]
    no_network_faults: bool,
    /// Keep the run's databases and vhost.
    #[arg(long)]
    keep: bool,
    /// Where logs and the signing key go (default: a new directory under the data dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[arg(
        long,
        env = "CHAOS_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    #[arg(
        long,
        env = "CHAOS_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672"
    )]
    amqp_url: String,
    #[arg(long, env = "CHAOS_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Shell command that restarts RabbitMQ (and returns once it is back).
    #[arg(
        long,
        env = "CHAOS_RESTART_RABBITMQ",
        default_value = "rabbitmqctl -q stop_app && rabbitmqctl -q start_app"
    )]
    restart_rabbitmq: String,
    /// Shell command that restarts PostgreSQL.
    #[arg(
        long,
        env = "CHAOS_RESTART_POSTGRES",
        default_value = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart -m fast"
    )]
    restart_postgres: String,
    #[arg(
        long,
        env = "CHAOS_STOP_REDIS",
        default_value = "redis-cli -h 127.0.0.1 -p 6379 shutdown nosave"
    )]
    stop_redis: String,
    #[arg(
        long,
        env = "CHAOS_START_REDIS",
        default_value = "mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log && until redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; do sleep 0.1; done"
    )]
    start_redis: String,
}

impl ChaosArgs {
    fn config(self, data_dir: &std::path::Path) -> anyhow::Result<ticketer::chaos::Config> {
        let work_dir = self.work_dir.unwrap_or_else(|| {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
            data_dir.join(format!("chaos-{stamp}-seed{}", self.seed))
        });
        Ok(ticketer::chaos::Config {
            run: ticketer::chaos::Run {
                seed: self.seed,
                seconds: self.seconds,
                tickets: self.tickets,
                buyers: self.buyers,
                concurrency: self.concurrency,
                hold_ttl_s: self.hold_ttl,
                payment_timeout_s: self.payment_timeout,
            },
            drain_s: self.drain.unwrap_or(self.hold_ttl + self.payment_timeout + 60),
            postgres_url: self.postgres_url,
            amqp_url: self.amqp_url,
            redis_url: self.redis_url,
            servers: (!self.no_server_faults).then_some(ticketer::chaos::ServerCommands {
                restart_rabbitmq: self.restart_rabbitmq,
                restart_postgres: self.restart_postgres,
                stop_redis: self.stop_redis,
                start_redis: self.start_redis,
            }),
            network: !self.no_network_faults,
            bin: std::env::current_exe().context("finding this binary")?,
            work_dir: std::path::absolute(work_dir)?,
            keep: self.keep,
        })
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Prints the waiting dead letters of a queue, one JSON line each.
    List { queue: String },
    /// Sends them back to the queue's consumer, once each.
    Replay { queue: String },
}

#[derive(Subcommand)]
enum BenchScenario {
    /// All buyers book at once through the gateway; prints progress on
    /// stderr and a JSON report as the last line of stdout.
    FlashSale {
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        gateway: String,
        /// A preset (pretix: 1,000 tickets, 5,000 buyers, 64 at once;
        /// standard: 10,000, 40,000, 500); the flags below override it.
        #[arg(long, value_enum)]
        scenario: Option<ticketer::bench::Scenario>,
        #[arg(long)]
        tickets: Option<i64>,
        #[arg(long)]
        buyers: Option<usize>,
        #[arg(long)]
        concurrency: Option<usize>,
        #[arg(long, default_value_t = 1)]
        tickets_per_booking: i64,
        /// How buyers are made: `direct` writes them into the auth database
        /// and signs their tokens with the service's key (operator access:
        /// the same --data-dir or AUTH_* variables as the server); `api`
        /// registers and logs in each through the gateway (two Argon2
        /// hashes per buyer).
        #[arg(long, value_enum, default_value = "direct")]
        provision: Provisioning,
        /// The server processes whose /metrics and /health/ready are read,
        /// as name=url pairs separated by commas; by default the contract
        /// ports on the gateway's host.
        #[arg(long)]
        service_urls: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Provisioning {
    Direct,
    Api,
}

/// Every service's base URL: `name=url,...`, else the contract ports on the
/// gateway's host.
fn service_urls(gateway: &str, given: Option<&str>) -> anyhow::Result<Vec<(String, String)>> {
    if let Some(list) = given {
        return list
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|pair| {
                let (name, url) = pair
                    .split_once('=')
                    .with_context(|| format!("--service-urls: `{pair}` is not name=url"))?;
                Ok((
                    name.trim().to_string(),
                    url.trim().trim_end_matches('/').to_string(),
                ))
            })
            .collect();
    }
    let host = gateway
        .split("://")
        .nth(1)
        .unwrap_or(gateway)
        .split(['/', ':'])
        .next()
        .unwrap_or("127.0.0.1")
        .to_string();
    Ok(Service::ALL
        .iter()
        .map(|svc| {
            let url = if *svc == Service::Gateway {
                gateway.trim_end_matches('/').to_string()
            } else {
                format!("http://{host}:{}", svc.default_port())
            };
            (svc.name().to_string(), url)
        })
        .collect())
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Creates an administrator, or grants ADMIN to an existing account.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, env = "TICKETER_ADMIN_PASSWORD")]
        password: String,
    },
}

fn log_format() -> LogFormat {
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("pretty") | Ok("text") => LogFormat::Pretty,
        _ => LogFormat::Json,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let service_name = match &cli.command {
        Command::Serve { service } => format!("ticketer-{service}"),
        _ => "ticketer".to_string(),
    };
    if let Command::Bench { scenario } = cli.command {
        let BenchScenario::FlashSale {
            gateway,
            scenario,
            tickets,
            buyers,
            concurrency,
            tickets_per_booking,
            provision,
            service_urls: urls,
        } = scenario;
        let (t, b, c) = scenario.map_or((100, 500, 64), |s| s.sizes());
        let services = service_urls(&gateway, urls.as_deref())?;
        let cfg = ticketer::bench::FlashSale {
            scenario: match (scenario, tickets, buyers, concurrency) {
                (Some(s), None, None, None) => s.name(),
                _ => "custom",
            },
            tickets: tickets.unwrap_or(t),
            buyers: buyers.unwrap_or(b),
            concurrency: concurrency.unwrap_or(c),
            tickets_per_booking,
            services,
            gateway,
            metrics_token: std::env::var("GATEWAY_METRICS_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        };
        let buyers = match provision {
            Provisioning::Api => ticketer::bench::Buyers::Api,
            Provisioning::Direct => {
                let started = std::time::Instant::now();
                let env = Env::from_process(Service::Auth)?;
                let tokens = ticketer::bench::provision_buyers(&env, &cli.data_dir, cfg.buyers).await?;
                ticketer::bench::Buyers::Provisioned {
                    tokens,
                    took: started.elapsed(),
                }
            }
        };
        let report = ticketer::bench::run(cfg, buyers).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if let Command::Chaos(args) = cli.command {
        let report = ticketer::chaos::run(args.config(&cli.data_dir)?).await?;
        println!("{}", serde_json::to_string(&report)?);
        if !report.clean {
            eprintln!("chaos: the audit found broken promises (see the report)");
            std::process::exit(1);
        }
        return Ok(());
    }
    let _telemetry = ticketer_telemetry::init(&service_name, log_format())?;
    let shutdown = CancellationToken::new();

    match cli.command {
        Command::Dev => {
            let env = Env::from_process(Service::Gateway)?;
            let apps = stack::build_all(&env, &cli.data_dir, Ports::Contract, shutdown.clone()).await?;
            let gateway = apps
                .iter()
                .find(|a| a.name == "gateway")
                .map(|a| a.port())
                .unwrap_or(0);
            tracing::info!(gateway = %format!("http://localhost:{gateway}"), docs = %format!("http://localhost:{gateway}/docs"), "Ticketer is up");
            stack::cancel_on_signal(shutdown);
            stack::run(apps).await
        }
        Command::Serve { service } => {
            let env = Env::from_process(service)?;
            let app = stack::build_one(service, &env, &cli.data_dir, shutdown.clone()).await?;
            stack::cancel_on_signal(shutdown);
            stack::run(vec![app]).await
        }
        Command::Migrate { service } => {
            let services: Vec<Service> = if service == "all" {
                Service::BACKENDS.to_vec()
            } else {
                vec![service.parse()?]
            };
            for svc in services {
                let env = Env::from_process(svc)?;
                let infra = InfraConfig::from_env(svc, &env, cli.data_dir.clone())?;
                let db = stack::connect_db(&infra).await?;
                db.migrate(svc.name(), stack::migrations(svc))
                    .await
                    .with_context(|| format!("migrating {svc}"))?;
                println!("{svc}: migrations applied");
            }
            Ok(())
        }
        Command::Bench { .. } | Command::Chaos(_) => unreachable!("handled above"),
        Command::Admin {
            command: AdminCommand::Create { email, password },
        } => {
            let env = Env::from_process(Service::Auth)?;
            let infra = InfraConfig::from_env(Service::Auth, &env, cli.data_dir.clone())?;
            let config = ticketer_auth::Config::from_env(&env, &cli.data_dir)?;
            let db = stack::connect_db(&infra).await?;
            let id = ticketer_auth::create_admin(&config, &infra, db, &email, &password).await?;
            println!("administrator {email} ready (id {id})");
            Ok(())
        }
        Command::Dlq { command } => {
            let env = Env::from_process(Service::Gateway)?;
            match command {
                DlqCommand::List { queue } => {
                    for letter in ticketer::dlq::list(&env, &cli.data_dir, &queue).await? {
                        println!("{}", serde_json::to_string(&letter)?);
                    }
                }
                DlqCommand::Replay { queue } => {
                    let n = ticketer::dlq::replay(&env, &cli.data_dir, &queue).await?;
                    println!("{n} dead letters of {queue} sent again");
                }
            }
            Ok(())
        }
    }
}
