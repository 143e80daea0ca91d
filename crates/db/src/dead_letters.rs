//! Dead letters kept in the consuming service's own database, for the
//! in-process bus (RabbitMQ keeps its own in `<queue>.dlq`): they survive a
//! restart, `ticketer dlq list` shows them and `ticketer dlq replay` sends
//! them again. A replayed message keeps its id, so consumers that already
//! applied it skip it; the one that gave up tries again.

use ticketer_bus::{DeadLetter, Envelope};

use crate::{time, AnyConnection, Db, DbError, Row};

/// A kept dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub id: i64,
    pub consumer: String,
    /// None when the body was not even an envelope.
    pub message_id: Option<String>,
    /// The message type (its routing key).
    pub kind: String,
    pub reason: String,
    pub dead_at: String,
}

pub async fn keep(db: &Db, consumer: &str, letter: &DeadLetter) -> Result<(), DbError> {
    keep_in(&mut *db.pool().acquire().await?, consumer, letter).await
}

/// [`keep`], on a connection (inside a transaction).
pub async fn keep_in(conn: &mut AnyConnection, consumer: &str, letter: &DeadLetter) -> Result<(), DbError> {
    let message_id = Envelope::from_bytes(&letter.body)
        .ok()
        .map(|e| e.message_id.to_string());
    sqlx::query(
        "INSERT INTO dead_letters (consumer, message_id, exchange, routing_key, body, reason, dead_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(consumer)
    .bind(message_id)
    .bind(&letter.exchange)
    .bind(&letter.routing_key)
    .bind(String::from_utf8_lossy(&letter.body).into_owned())
    .bind(&letter.reason)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(())
}

/// The dead letters of `consumer` not replayed yet, oldest first.
pub async fn waiting(db: &Db, consumer: &str) -> Result<Vec<Kept>, DbError> {
    let rows = sqlx::query(
        "SELECT id, consumer, message_id, routing_key, reason, dead_at FROM dead_letters
         WHERE consumer = $1 AND replayed_at IS NULL ORDER BY id",
    )
    .bind(consumer)
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Kept {
                id: r.try_get("id")?,
                consumer: r.try_get("consumer")?,
                message_id: r.try_get("message_id")?,
                kind: r.try_get("routing_key")?,
                reason: r.try_get("reason")?,
                dead_at: r.try_get("dead_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::from)
}

/// Puts every waiting dead letter of `consumer` back in this service's
/// outbox, to its original exchange and routing key, and stamps it
/// replayed; how many. A letter whose body is not an envelope stays: sent
/// again it would fail again.
#[tracing::instrument(skip(db))]
pub async fn replay(db: &Db, consumer: &str) -> Result<usize, DbError> {
    let mut tx = db.begin().await?;
    let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT id, message_id, exchange, routing_key, body FROM dead_letters
         WHERE consumer = $1 AND replayed_at IS NULL AND message_id IS NOT NULL ORDER BY id",
    )
    .bind(consumer)
    .fetch_all(&mut *tx)
    .await?;
    let now = time::now();
    for (id, message_id, exchange, routing_key, body) in &rows {
        // Sent from here before (an earlier replay, by a version that kept
        // published rows): send it anew.
        sqlx::query("DELETE FROM outbox WHERE message_id = $1 AND published_at IS NOT NULL")
            .bind(message_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO outbox (message_id, exchange, routing_key, body, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(message_id)
        .bind(exchange)
        .bind(routing_key)
        .bind(body)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2")
            .bind(&now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    db.outbox_written();
    Ok(rows.len())
}
