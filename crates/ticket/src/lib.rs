//! The ticket service: the seat inventory of every published event and the
//! ticket lifecycle. It keeps inventory in step with the events service,
//! holds, sells and releases seats on the booking saga's commands, and
//! answers availability.

pub mod availability;
mod commands;
mod consumers;
pub mod inventory;
pub mod lifecycle;
mod routes;
pub mod sale;
mod seats_metrics;
mod store;

pub use routes::ApiDoc;
pub use store::MIGRATIONS;
use ticketer_bus::topology::{TICKET_COMMANDS, TICKET_INVENTORY};
use ticketer_config::InfraConfig;
use ticketer_http::{launch, ServiceApp, ServiceParts};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub async fn build(
    infra: &InfraConfig,
    parts: ServiceParts,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    let db = parts.db.clone();
    db.migrate("ticket", MIGRATIONS).await?;
    let feed = consumers::EventFeed;
    let mut tasks = parts.consume(TICKET_INVENTORY, feed, infra, &shutdown).await?;
    let commands = commands::TicketCommands {
        hold_ttl: chrono::Duration::from_std(infra.env.seconds_or("HOLD_TTL_SECONDS", 600)?)
            .map_err(|_| anyhow::anyhow!("TICKET_HOLD_TTL_SECONDS is too long"))?,
    };
    tasks.extend(parts.consume(TICKET_COMMANDS, commands, infra, &shutdown).await?);
    let sweep = std::time::Duration::from_millis(infra.env.parse_or("HOLD_SWEEP_MS", 1000)?);
    tasks.push(tokio::spawn(commands::run_expiry(
        db.clone(),
        sweep,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(seats_metrics::run(
        db.clone(),
        parts.metrics.clone(),
        std::time::Duration::from_secs(5),
        shutdown.clone(),
    )));
    if let Some(cache) = parts.cache.clone() {
        let every = std::time::Duration::from_millis(infra.env.parse_or("AVAILABILITY_PUBLISH_MS", 100)?);
        tasks.push(tokio::spawn(availability::run(
            db.clone(),
            cache,
            every,
            shutdown.clone(),
        )));
    }
    let app = launch(
        "ticket",
        routes::router(db),
        ApiDoc::openapi(),
        parts,
        infra,
        listener,
        shutdown,
    );
    Ok(app.with_tasks(tasks))
}
