//! The ticket service: inventory, holds and the ticket lifecycle (shell: health, metrics and API document so far).

pub mod lifecycle;

use ticketer_config::InfraConfig;
use ticketer_http::{empty_openapi, launch, ServiceApp, ServiceParts};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// This service's own schema; none yet beyond the shared outbox and inbox.
pub const MIGRATIONS: &[ticketer_db::Migration] = &[];

pub async fn build(
    infra: &InfraConfig,
    parts: ServiceParts,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    parts.db.migrate("ticket", MIGRATIONS).await?;
    let api = axum::Router::new();
    Ok(launch(
        "ticket",
        api,
        empty_openapi("ticket"),
        parts,
        infra,
        listener,
        shutdown,
    ))
}
