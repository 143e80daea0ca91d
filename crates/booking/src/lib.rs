//! The booking service: takes bookings and drives each through the saga
//! (hold seats, charge, sell) by commands to the ticket and payment
//! services, answering customers as soon as a booking settles.

mod batcher;
mod creations;
mod driver;
mod lookups;
mod routes;
pub mod saga;
mod service;
mod store;
mod waiters;

pub use routes::ApiDoc;
pub use service::{BookingService, BookingView};
pub use store::MIGRATIONS;
use ticketer_bus::topology::{BOOKING_EVENTS, BOOKING_PAYMENTS, TICKET_OPERATIONS};
use ticketer_config::InfraConfig;
use ticketer_http::{launch_with, Idempotency, ServiceApp, ServiceParts};
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
    let timeouts = saga::Timeouts {
        payment: infra.env.seconds_or("PAYMENT_TIMEOUT_SECONDS", 120)?,
        reply: infra.env.seconds_or("REPLY_TIMEOUT_SECONDS", 30)?,
    };
    let max = infra.env.parse_or("MAX_TICKETS_PER_BOOKING", 10)?;
    let mut service = BookingService::new(db.clone(), max, timeouts, parts.cache.clone());
    // The same variable the payment service reads: a real provider's tokens
    // are the provider's to accept or decline.
    service.tokens = ticketer_contract::payment::TokenRule::for_provider(
        &infra
            .env
            .shared("PAYMENT_PROVIDER")
            .unwrap_or_else(|| "sandbox".into()),
    );
    service.recheck = std::time::Duration::from_millis(
        infra
            .env
            .parse_or("WAIT_RECHECK_MS", waiters::RECHECK.as_millis() as u64)?,
    );
    let mut tasks = Vec::new();
    for spec in [TICKET_OPERATIONS, BOOKING_PAYMENTS] {
        let driver = driver::SagaDriver::new(timeouts, service.waiters.clone());
        tasks.extend(parts.consume(spec, driver, infra, &shutdown).await?);
    }
    let mirror = driver::EventMirror { timeouts };
    tasks.extend(parts.consume(BOOKING_EVENTS, mirror, infra, &shutdown).await?);
    let sweep = std::time::Duration::from_millis(infra.env.parse_or("DEADLINE_SWEEP_MS", 1000)?);
    tasks.push(tokio::spawn(
        service.clone().run_deadlines(sweep, shutdown.clone()),
    ));
    // POST /bookings keeps its Idempotency-Key in the booking row itself.
    let app = launch_with(
        "booking",
        routes::router(service),
        ApiDoc::openapi(),
        parts,
        infra,
        listener,
        shutdown,
        Idempotency::AllPostsExcept(&["/api/v1/bookings"]),
    );
    Ok(app.with_tasks(tasks))
}
