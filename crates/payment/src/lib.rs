//! The payment service: charges and refunds on the booking saga's commands,
//! through a provider (the built-in sandbox decides by token), one charge
//! per booking at most.

mod charges;
mod commands;
pub mod provider;
mod routes;
pub mod settings;
mod store;

use std::{sync::Arc, time::Duration};

pub use routes::ApiDoc;
pub use settings::Settings;
pub use store::MIGRATIONS;
use ticketer_bus::topology::PAYMENT_COMMANDS;
use ticketer_http::ServiceApp;
use ticketer_runtime::{launch, Runtime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// How often charges left PROCESSING are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub async fn build(
    settings: Settings,
    runtime: Runtime,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    let db = runtime.db.clone();
    db.migrate("payment", MIGRATIONS).await?;
    let provider = provider_of(&settings)?;
    let consumer = commands::PaymentConsumer::new(db.clone(), PAYMENT_COMMANDS.name, provider.clone())
        .with_patience(settings.patience);
    // A charge left PROCESSING for longer than any provider call takes was
    // left by a crash: asked again with the same key.
    let sweeps = consumer
        .processing()
        .run_sweeps(SWEEP_EVERY, settings.processing_stale, shutdown.clone());
    let consumer = Arc::new(consumer);
    let mut tasks = runtime
        .consume_batches(PAYMENT_COMMANDS, consumer.clone(), &shutdown)
        .await?;
    tasks.push(tokio::spawn(sweeps));
    let app = launch(
        "payment",
        routes::router(db, provider).merge(charges::router(consumer, settings.service_token)),
        ApiDoc::openapi(),
        runtime,
        listener,
        shutdown,
    );
    Ok(app.with_tasks(tasks))
}

/// The provider the settings name.
fn provider_of(settings: &Settings) -> anyhow::Result<Arc<dyn provider::PaymentProvider>> {
    Ok(match &settings.provider {
        settings::Provider::Sandbox { delay } => Arc::new(provider::Sandbox { delay: *delay }),
        settings::Provider::Stripe { url, secret_key } => Arc::new(provider::Stripe::new(url, secret_key)?),
    })
}
