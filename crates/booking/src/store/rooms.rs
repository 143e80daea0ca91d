//! The waiting rooms organizers open, one per event at most.

use std::time::Duration;

use ticketer_cache::RoomRule;
use ticketer_db::{time, Db, DbError, Row};

/// The room in front of the event's sale, if one is open.
pub async fn room(db: &Db, event_id: i64) -> Result<Option<RoomRule>, DbError> {
    let row = sqlx::query("SELECT admitted_at_once, claim_seconds FROM waiting_rooms WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(db.reader())
        .await?;
    let Some(r) = row else { return Ok(None) };
    let at_once: i32 = r.try_get("admitted_at_once")?;
    let claim: i32 = r.try_get("claim_seconds")?;
    Ok(Some(RoomRule {
        admitted_at_once: at_once.max(1) as u32,
        claim: Duration::from_secs(claim.max(1) as u64),
    }))
}

/// Opens the event's room, or changes how it admits.
pub async fn open_room(db: &Db, event_id: i64, rule: RoomRule, opened_by: &str) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO waiting_rooms (event_id, admitted_at_once, claim_seconds, opened_by, opened_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (event_id) DO UPDATE SET admitted_at_once = excluded.admitted_at_once,
             claim_seconds = excluded.claim_seconds, opened_by = excluded.opened_by,
             opened_at = excluded.opened_at",
    )
    .bind(event_id)
    .bind(rule.admitted_at_once as i32)
    .bind(rule.claim.as_secs() as i32)
    .bind(opened_by)
    .bind(time::now())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Closes the event's room; true if one was open.
pub async fn close_room(db: &Db, event_id: i64) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM waiting_rooms WHERE event_id = $1")
        .bind(event_id)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}
