//! The `idempotency_keys` table every service database holds: a request
//! claims its key in its own commit before it runs, stores its answer
//! after, or forgets the claim when it failed. The HTTP middleware that
//! decides when to do which lives in `ticketer_http::idempotency`.

use std::time::Duration;

use crate::{time, Db, DbError, Row};

/// What a key holds: the digest of the request that claimed it and, once
/// that request answered, the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub request_hash: String,
    /// None while the claiming request has not answered.
    pub status: Option<i64>,
    pub content_type: Option<String>,
    pub body: Option<String>,
}

/// Claims `key` for `scope`; false when it was claimed already.
pub async fn claim(db: &Db, scope: &str, key: &str, hash: &str) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .bind(time::now())
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims the key afresh if the same request claimed it more than `stale`
/// ago and never stored an answer. One statement, so of several retries
/// at once only one takes it over.
pub async fn take_over_stale(
    db: &Db,
    scope: &str,
    key: &str,
    hash: &str,
    stale: Duration,
) -> Result<bool, DbError> {
    let now = chrono::Utc::now();
    let cutoff = now - chrono::Duration::from_std(stale).unwrap_or_default();
    let done = sqlx::query(
        "UPDATE idempotency_keys SET created_at = $4
         WHERE scope = $1 AND idem_key = $2 AND request_hash = $3 AND status IS NULL AND created_at < $5",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .bind(time::format(now))
    .bind(time::format(cutoff))
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What `key` holds for `scope`, if it is claimed.
pub async fn find(db: &Db, scope: &str, key: &str) -> Result<Option<Kept>, DbError> {
    let row = sqlx::query(
        "SELECT request_hash, status, content_type, body FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(db.pool())
    .await?;
    row.map(|row| {
        Ok(Kept {
            request_hash: row.try_get("request_hash")?,
            status: row.try_get("status")?,
            content_type: row.try_get("content_type")?,
            body: row.try_get("body")?,
        })
    })
    .transpose()
}

/// Keeps the answer of the request that claimed `key`.
pub async fn store_answer(
    db: &Db,
    scope: &str,
    key: &str,
    status: u16,
    content_type: Option<&str>,
    body: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5 WHERE scope = $1 AND idem_key = $2",
    )
    .bind(scope)
    .bind(key)
    .bind(status as i64)
    .bind(content_type)
    .bind(body)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Drops the claim of a request that failed, so that a retry runs anew.
pub async fn forget(db: &Db, scope: &str, key: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
        .bind(scope)
        .bind(key)
        .execute(db.pool())
        .await?;
    Ok(())
}
