//! The ticket service: the seat inventory of every published event and the
//! ticket lifecycle. It keeps inventory in step with the events service,
//! holds, sells and releases seats on the booking saga's commands, and
//! answers availability.

pub mod availability;
mod commands;
mod consumers;
mod holds;
pub mod inventory;
pub mod lifecycle;
mod routes;
pub mod sale;
mod seats_metrics;
pub mod settings;
mod store;

pub use routes::ApiDoc;
pub use settings::Settings;
pub use store::MIGRATIONS;
use ticketer_bus::topology::{TICKET_COMMANDS, TICKET_INVENTORY};
use ticketer_http::ServiceApp;
use ticketer_runtime::{launch, Runtime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub async fn build(
    settings: Settings,
    runtime: Runtime,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    let db = runtime.db.clone();
    db.migrate("ticket", MIGRATIONS).await?;
    let feed = consumers::EventFeed;
    let mut tasks = runtime.consume(TICKET_INVENTORY, feed, &shutdown).await?;
    let commands = commands::TicketCommands {
        hold_ttl: settings.hold_ttl,
    };
    tasks.extend(
        runtime
            .consume(TICKET_COMMANDS, commands.clone(), &shutdown)
            .await?,
    );
    tasks.push(tokio::spawn(commands::run_expiry(
        db.clone(),
        settings.hold_sweep,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(seats_metrics::run(
        db.clone(),
        runtime.metrics.clone(),
        std::time::Duration::from_secs(5),
        shutdown.clone(),
    )));
    if let Some(cache) = runtime.cache.clone() {
        tasks.push(tokio::spawn(availability::run(
            db.clone(),
            cache,
            settings.availability_publish,
            shutdown.clone(),
        )));
    }
    let app = launch(
        "ticket",
        routes::router(db.clone()).merge(holds::router(db, commands, settings.service_token)),
        ApiDoc::openapi(),
        runtime,
        listener,
        shutdown,
    );
    Ok(app.with_tasks(tasks))
}
