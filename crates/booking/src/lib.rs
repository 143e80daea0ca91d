//! The booking service: the booking saga (shell: health, metrics and API document so far).

pub mod saga;

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
    parts.db.migrate("booking", MIGRATIONS).await?;
    let api = axum::Router::new();
    Ok(launch(
        "booking",
        api,
        empty_openapi("booking"),
        parts,
        infra,
        listener,
        shutdown,
    ))
}
