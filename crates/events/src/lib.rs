//! The events service: organizers create, edit, publish and cancel events;
//! everyone browses and searches the published ones. Every change is
//! announced on `ticketer.events` through the outbox.

mod consumers;
pub mod domain;
mod routes;
mod service;
pub mod settings;
mod store;

pub use routes::ApiDoc;
pub use service::{EventsError, EventsService};
pub use settings::Settings;
pub use store::MIGRATIONS;

use ticketer_bus::topology::EVENTS_SALES;
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
    runtime.db.migrate("events", MIGRATIONS).await?;
    let service = EventsService::new(runtime.db.clone()).with_search_count_limit(settings.search_count_limit);
    let completion = tokio::spawn(
        service
            .clone()
            .run_completion(settings.completion_sweep, shutdown.clone()),
    );
    let mut tasks = runtime.consume(EVENTS_SALES, consumers::Sales, &shutdown).await?;
    tasks.push(completion);
    let api = routes::router(service);
    let app = launch("events", api, ApiDoc::openapi(), runtime, listener, shutdown);
    Ok(app.with_tasks(tasks))
}
