//! The events service: organizers create, edit, publish and cancel events;
//! everyone browses and searches the published ones. Every change is
//! announced on `ticketer.events` through the outbox.

pub mod domain;
mod routes;
mod service;
mod store;

pub use routes::ApiDoc;
pub use service::{EventSnapshot, EventsError, EventsService};
pub use store::MIGRATIONS;
use ticketer_config::InfraConfig;
use ticketer_db::{Db, OutboxRelay};
use ticketer_http::{assemble, Metrics, Plumbing, Readiness, ServiceApp, TokenVerifier};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub async fn build(
    infra: &InfraConfig,
    db: Db,
    bus: ticketer_bus::Bus,
    verifier: TokenVerifier,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    db.migrate("events", MIGRATIONS).await?;
    let service = EventsService { db: db.clone() };
    let relay = OutboxRelay::new(
        db.clone(),
        bus.clone(),
        infra.outbox_batch_size,
        infra.outbox_poll,
    );
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let router = assemble(
        routes::router(service),
        Plumbing {
            service: "events",
            metrics: Metrics::new("events"),
            readiness: Readiness {
                db: Some(db),
                bus: Some(bus),
                cache: None,
            },
            verifier: Some(verifier),
            openapi: Some(ApiDoc::openapi()),
        },
    );
    Ok(ServiceApp::new("events", listener, router, shutdown).with_tasks([relay]))
}
