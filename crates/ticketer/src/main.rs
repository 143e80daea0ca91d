//! `ticketer`: one binary for every way of running Ticketer.

use anyhow::Context;
use clap::Parser;
use ticketer::stack::{self, Ports};
use ticketer_config::{Env, InfraConfig, Service};
use ticketer_telemetry::LogFormat;
use tokio_util::sync::CancellationToken;

mod cli;

use cli::{AdminCommand, BenchScenario, Cli, Command, DlqCommand, Provisioning};

/// mimalloc instead of glibc malloc: glibc keeps freed memory in per-thread
/// arenas, so the 19 MiB blocks of Argon2 hashes computed on many blocking
/// threads stay resident (measured in docs/benchmarks.md); mimalloc returns
/// large freed blocks to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc asks for transparent huge pages on its arenas, so the first
/// touch of memory it took back (it returns freed pages after a second)
/// makes the kernel zero a whole 2 MiB page. Under a flash sale that was
/// 10-20 % of each service's CPU, and twice the resident memory; with huge
/// pages off, each touch costs a 4 KiB page (docs/benchmarks.md). Where the
/// kernel refuses, nothing is lost but that saving.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("ticketer: could not turn transparent huge pages off: {e}");
    }
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

fn log_format() -> LogFormat {
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("pretty") | Ok("text") => LogFormat::Pretty,
        _ => LogFormat::Json,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    no_huge_pages();
    let cli = Cli::parse();
    let service_name = match &cli.command {
        Command::Serve { service } => format!("ticketer-{service}"),
        _ => "ticketer".to_string(),
    };
    if let Command::Bench {
        scenario:
            BenchScenario::FanOut {
                recipients,
                database_url,
                smtp_url,
            },
    } = cli.command
    {
        let report =
            ticketer::bench::fan_out(recipients, database_url.as_deref(), smtp_url.as_deref()).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if let Command::Bench {
        scenario:
            BenchScenario::Search {
                gateway,
                events,
                concurrency,
                seconds,
            },
    } = cli.command
    {
        let cfg = ticketer::bench::search::SearchBench {
            gateway,
            events,
            concurrency,
            seconds,
        };
        let report = ticketer::bench::search::run(cfg).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if let Command::Bench {
        scenario:
            BenchScenario::FlashSale {
                gateway,
                scenario,
                tickets,
                buyers,
                concurrency,
                tickets_per_booking,
                provision,
                service_urls: urls,
                outcomes,
                waiting_room,
            },
    } = cli.command
    {
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
            outcomes,
            waiting_room,
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
    if let Command::Health { service } = cli.command {
        let service = service.unwrap_or(Service::Gateway);
        if let Err(e) = stack::probe_live(service, &Env::from_process(service)?).await {
            eprintln!("{service}: {e:#}");
            std::process::exit(1);
        }
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
        Command::Bench { .. } | Command::Chaos(_) | Command::Health { .. } => unreachable!("handled above"),
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
