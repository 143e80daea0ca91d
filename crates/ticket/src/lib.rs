//! The ticket service: the seat inventory of every published event and the
//! ticket lifecycle. So far it keeps inventory in step with the events
//! service and answers availability; holds and sales come with the booking
//! saga.

mod consumers;
pub mod inventory;
pub mod lifecycle;
mod routes;
mod store;

use std::sync::Arc;

pub use routes::ApiDoc;
pub use store::MIGRATIONS;
use ticketer_bus::topology::TICKET_INVENTORY;
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
    db.migrate("ticket", MIGRATIONS).await?;
    let sub = TICKET_INVENTORY.subscription().tuned(
        infra.consumer_prefetch,
        infra.consumer_concurrency,
        infra.consumer_batch_size,
    );
    let feed = consumers::EventFeed {
        dialect: db.dialect(),
    };
    let inbox = Inbox::new(db.clone(), TICKET_INVENTORY.name, feed);
    let consumers = parts
        .bus
        .subscribe(sub, Arc::new(inbox), shutdown.clone())
        .await?;
    let app = launch(
        "ticket",
        routes::router(db),
        ApiDoc::openapi(),
        parts,
        infra,
        listener,
        shutdown,
    );
    Ok(app.with_tasks(consumers))
}
