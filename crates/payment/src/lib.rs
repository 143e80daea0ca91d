//! The payment service: charges and refunds on the booking saga's commands,
//! through a provider (the built-in sandbox decides by token), one charge
//! per booking at most.

mod commands;
pub mod provider;
mod routes;
mod store;

use std::sync::Arc;

pub use routes::ApiDoc;
pub use store::MIGRATIONS;
use ticketer_bus::topology::PAYMENT_COMMANDS;
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
    db.migrate("payment", MIGRATIONS).await?;
    let sandbox = Arc::new(provider::Sandbox {
        delay: std::time::Duration::from_millis(infra.env.parse_or("SANDBOX_DELAY_MS", 3000)?),
    });
    let consumer = commands::PaymentConsumer::new(db.clone(), PAYMENT_COMMANDS.name, sandbox);
    let tasks = parts
        .consume_batches(PAYMENT_COMMANDS, Arc::new(consumer), infra, &shutdown)
        .await?;
    let app = launch(
        "payment",
        routes::router(db),
        ApiDoc::openapi(),
        parts,
        infra,
        listener,
        shutdown,
    );
    Ok(app.with_tasks(tasks))
}
