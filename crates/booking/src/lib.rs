//! The booking service: the booking saga (shell: health, metrics and API document so far).

use ticketer_config::InfraConfig;
use ticketer_db::{Db, OutboxRelay};
use ticketer_http::{assemble, Metrics, Plumbing, Readiness, ServiceApp, TokenVerifier};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::{InfoBuilder, OpenApiBuilder};

/// This service's own schema; none yet beyond the shared outbox and inbox.
pub const MIGRATIONS: &[ticketer_db::Migration] = &[];

pub async fn build(
    infra: &InfraConfig,
    db: Db,
    bus: ticketer_bus::Bus,
    cache: ticketer_cache::Cache,
    verifier: TokenVerifier,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    db.migrate("booking", MIGRATIONS).await?;
    let relay = OutboxRelay::new(
        db.clone(),
        bus.clone(),
        infra.outbox_batch_size,
        infra.outbox_poll,
    );
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let openapi = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Ticketer booking")
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .build();
    let router = assemble(
        axum::Router::new(),
        Plumbing {
            service: "booking",
            metrics: Metrics::new("booking"),
            readiness: Readiness {
                db: Some(db),
                bus: Some(bus),
                cache: Some(cache),
            },
            verifier: Some(verifier),
            openapi: Some(openapi),
        },
    );
    Ok(ServiceApp::new("booking", listener, router, shutdown).with_tasks([relay]))
}
