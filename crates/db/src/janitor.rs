//! Keeps the shared tables small: published outbox rows, inbox ids and
//! idempotency keys are only needed for a while.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{time, Db, DbError};

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Outbox rows stamped published by versions that kept them (the
    /// relay now deletes what the broker confirmed).
    pub outbox: Duration,
    /// Processed message ids: longer than any broker would redeliver.
    pub inbox: Duration,
    /// Stored answers to `Idempotency-Key` requests.
    pub idempotency: Duration,
    /// A claimed key whose request never finished (the process died).
    pub abandoned_claim: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            outbox: Duration::from_secs(3 * 24 * 3600),
            inbox: Duration::from_secs(7 * 24 * 3600),
            idempotency: Duration::from_secs(24 * 3600),
            abandoned_claim: Duration::from_secs(10 * 60),
        }
    }
}

/// Rows removed by one [`prune`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub outbox: u64,
    pub inbox: u64,
    pub idempotency: u64,
}

pub async fn prune(db: &Db, r: &Retention) -> Result<Pruned, DbError> {
    let outbox = sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1")
        .bind(time::ago(r.outbox))
        .execute(db.pool())
        .await?
        .rows_affected();
    let inbox = sqlx::query("DELETE FROM inbox WHERE processed_at < $1")
        .bind(time::ago(r.inbox))
        .execute(db.pool())
        .await?
        .rows_affected();
    let idempotency = sqlx::query(
        "DELETE FROM idempotency_keys
         WHERE created_at < $1 OR (status IS NULL AND created_at < $2)",
    )
    .bind(time::ago(r.idempotency))
    .bind(time::ago(r.abandoned_claim))
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(Pruned {
        outbox,
        inbox,
        idempotency,
    })
}

/// Prunes every `every` until `shutdown`. Several replicas may run it: the
/// deletes are idempotent.
pub async fn run(db: Db, retention: Retention, every: Duration, shutdown: CancellationToken) {
    loop {
        match prune(&db, &retention).await {
            Ok(p) if p != Pruned::default() => tracing::info!(?p, "pruned old rows"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning failed; will try again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
