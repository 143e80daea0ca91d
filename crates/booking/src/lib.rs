//! The booking service: takes bookings and drives each through the saga
//! (hold seats, charge, sell) by commands to the ticket and payment
//! services, answering customers as soon as a booking settles.

mod batcher;
mod creations;
mod direct;
mod driver;
mod lookups;
mod rooms;
mod routes;
pub mod saga;
mod service;
pub mod settings;
mod store;
mod waiters;

pub use routes::ApiDoc;
pub use service::{BookingService, BookingView};
pub use settings::Settings;
pub use store::MIGRATIONS;
use ticketer_bus::topology::{BOOKING_EVENTS, BOOKING_PAYMENTS, TICKET_OPERATIONS};
use ticketer_http::{Idempotency, ServiceApp};
use ticketer_runtime::{launch_with, Runtime};
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
    db.migrate("booking", MIGRATIONS).await?;
    let timeouts = settings.timeouts;
    let mut service = BookingService::new(db.clone(), settings.max_tickets, timeouts, runtime.cache.clone());
    service.tokens = settings.tokens;
    service.recheck = settings.wait_recheck;
    let answers_counted = driver::answers_counted(&runtime.metrics);
    if let Some(peers) = settings.peers() {
        // Each answer is recorded under the queue it would have come on.
        let driver =
            driver::SagaDriver::new(timeouts, service.waiters.clone()).counting(answers_counted.clone());
        let answers = ticketer_db::Inbox::new(db.clone(), "direct answers", driver);
        service = service.with_direct(direct::Direct::start(
            db.clone(),
            peers,
            answers,
            timeouts.reply,
            &runtime.metrics,
        )?);
    }
    let mut tasks = Vec::new();
    for spec in [TICKET_OPERATIONS, BOOKING_PAYMENTS] {
        let driver =
            driver::SagaDriver::new(timeouts, service.waiters.clone()).counting(answers_counted.clone());
        tasks.extend(runtime.consume(spec, driver, &shutdown).await?);
    }
    let mirror = driver::EventMirror { timeouts };
    tasks.extend(runtime.consume(BOOKING_EVENTS, mirror, &shutdown).await?);
    service.rooms.register(&runtime.metrics);
    tasks.push(tokio::spawn(service.rooms.clone().run(shutdown.clone())));
    tasks.push(tokio::spawn(
        service
            .clone()
            .run_deadlines(settings.deadline_sweep, shutdown.clone()),
    ));
    // POST /bookings keeps its Idempotency-Key in the booking row itself.
    let app = launch_with(
        "booking",
        routes::router(service),
        ApiDoc::openapi(),
        runtime,
        listener,
        shutdown,
        Idempotency::AllPostsExcept(&["/api/v1/bookings"]),
    );
    Ok(app.with_tasks(tasks))
}
