//! `ticketer`: one binary for every way of running Ticketer.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ticketer::stack::{self, Ports};
use ticketer_config::{Env, InfraConfig, Service};
use ticketer_telemetry::LogFormat;
use tokio_util::sync::CancellationToken;

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
    /// Administrator accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum BenchScenario {
    /// All buyers book at once; prints a JSON report (last line).
    FlashSale {
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        gateway: String,
        #[arg(long, default_value_t = 100)]
        tickets: i64,
        #[arg(long, default_value_t = 500)]
        buyers: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 1)]
        tickets_per_booking: i64,
    },
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
            tickets,
            buyers,
            concurrency,
            tickets_per_booking,
        } = scenario;
        let report = ticketer::bench::run(ticketer::bench::FlashSale {
            gateway,
            tickets,
            buyers,
            concurrency,
            tickets_per_booking,
        })
        .await?;
        println!("{}", serde_json::to_string(&report)?);
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
        Command::Bench { .. } => unreachable!("handled above"),
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
    }
}
