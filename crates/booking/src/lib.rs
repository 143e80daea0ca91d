//! The booking service: takes bookings and drives each through the saga
//! (hold seats, charge, sell) by commands to the ticket and payment
//! services, answering customers as soon as a booking settles.

mod routes;
pub mod saga;
mod service;
mod store;

use std::sync::Arc;

pub use routes::ApiDoc;
pub use service::{BookingService, BookingView};
pub use store::MIGRATIONS;
use ticketer_bus::topology::{BOOKING_EVENTS, BOOKING_PAYMENTS, TICKET_OPERATIONS};
use ticketer_config::InfraConfig;
use ticketer_db::Inbox;
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
    db.migrate("booking", MIGRATIONS).await?;
    let mut consumers = Vec::new();
    for spec in [TICKET_OPERATIONS, BOOKING_PAYMENTS] {
        let sub = spec.subscription().tuned(
            infra.consumer_prefetch,
            infra.consumer_concurrency,
            infra.consumer_batch_size,
        );
        let inbox = Inbox::new(db.clone(), spec.name, service::SagaDriver { db: db.clone() });
        consumers.extend(
            parts
                .bus
                .subscribe(sub, Arc::new(inbox), shutdown.clone())
                .await?,
        );
    }
    let sub = BOOKING_EVENTS.subscription().tuned(
        infra.consumer_prefetch,
        infra.consumer_concurrency,
        infra.consumer_batch_size,
    );
    let mirror = Inbox::new(
        db.clone(),
        BOOKING_EVENTS.name,
        service::EventMirror { db: db.clone() },
    );
    consumers.extend(
        parts
            .bus
            .subscribe(sub, Arc::new(mirror), shutdown.clone())
            .await?,
    );
    let service = BookingService::new(db, infra.env.parse_or("MAX_TICKETS_PER_BOOKING", 10)?);
    let app = launch(
        "booking",
        routes::router(service),
        ApiDoc::openapi(),
        parts,
        infra,
        listener,
        shutdown,
    );
    Ok(app.with_tasks(consumers))
}
