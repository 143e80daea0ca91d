//! The events service: organizers create, edit, publish and cancel events;
//! everyone browses and searches the published ones. Every change is
//! announced on `ticketer.events` through the outbox.

mod consumers;
pub mod domain;
mod routes;
mod service;
mod store;

pub use routes::ApiDoc;
pub use service::{EventsError, EventsService};
use std::time::Duration;
pub use store::MIGRATIONS;

use ticketer_bus::topology::EVENTS_SALES;
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
    parts.db.migrate("events", MIGRATIONS).await?;
    let service = EventsService::new(parts.db.clone());
    let every = Duration::from_secs(60);
    let completion = tokio::spawn(service.clone().run_completion(every, shutdown.clone()));
    let mut tasks = parts
        .consume(EVENTS_SALES, consumers::Sales, infra, &shutdown)
        .await?;
    tasks.push(completion);
    let api = routes::router(service);
    let app = launch("events", api, ApiDoc::openapi(), parts, infra, listener, shutdown);
    Ok(app.with_tasks(tasks))
}
