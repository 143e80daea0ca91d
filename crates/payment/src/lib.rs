//! The payment service: charges and refunds on the booking saga's commands,
//! through a provider (the built-in sandbox decides by token), one charge
//! per booking at most.

mod commands;
pub mod provider;
mod routes;
mod store;

use std::{sync::Arc, time::Duration};

pub use routes::ApiDoc;
pub use store::MIGRATIONS;
use ticketer_bus::topology::PAYMENT_COMMANDS;
use ticketer_config::InfraConfig;
use ticketer_http::{launch, ServiceApp, ServiceParts};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// How often charges left PROCESSING are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub async fn build(
    infra: &InfraConfig,
    parts: ServiceParts,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    let db = parts.db.clone();
    db.migrate("payment", MIGRATIONS).await?;
    let provider = choose_provider(infra)?;
    let patience = infra
        .env
        .parse_or("PROVIDER_PATIENCE_MS", commands::PATIENCE.as_millis() as u64)?;
    let consumer = commands::PaymentConsumer::new(db.clone(), PAYMENT_COMMANDS.name, provider.clone())
        .with_patience(Duration::from_millis(patience));
    // A charge left PROCESSING for longer than any provider call takes was
    // left by a crash: asked again with the same key.
    let stale = Duration::from_secs(infra.env.parse_or("PROCESSING_STALE_SECONDS", 60)?);
    let sweeps = consumer
        .processing()
        .run_sweeps(SWEEP_EVERY, stale, shutdown.clone());
    let mut tasks = parts
        .consume_batches(PAYMENT_COMMANDS, Arc::new(consumer), infra, &shutdown)
        .await?;
    tasks.push(tokio::spawn(sweeps));
    let app = launch(
        "payment",
        routes::router(db, provider),
        ApiDoc::openapi(),
        parts,
        infra,
        listener,
        shutdown,
    );
    Ok(app.with_tasks(tasks))
}

/// PAYMENT_PROVIDER: `sandbox` (the default: decides by token) or `stripe`
/// (Stripe's API at PAYMENT_STRIPE_URL, https://api.stripe.com unless
/// set, with PAYMENT_STRIPE_SECRET_KEY).
fn choose_provider(infra: &InfraConfig) -> anyhow::Result<Arc<dyn provider::PaymentProvider>> {
    let env = &infra.env;
    match env.get("PROVIDER").as_deref().unwrap_or("sandbox") {
        "sandbox" => Ok(Arc::new(provider::Sandbox {
            delay: Duration::from_millis(env.parse_or("SANDBOX_DELAY_MS", 3000)?),
        })),
        "stripe" => {
            let url = env
                .get("STRIPE_URL")
                .unwrap_or_else(|| "https://api.stripe.com".into());
            let key = env
                .get("STRIPE_SECRET_KEY")
                .ok_or_else(|| anyhow::anyhow!("PAYMENT_PROVIDER=stripe needs PAYMENT_STRIPE_SECRET_KEY"))?;
            Ok(Arc::new(provider::Stripe::new(&url, &key)?))
        }
        other => anyhow::bail!("PAYMENT_PROVIDER must be sandbox or stripe, not {other}"),
    }
}
