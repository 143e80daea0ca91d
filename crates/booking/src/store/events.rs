//! The booking service's copy of the events it sells: whose they are, when
//! they start, and whether they were cancelled.

use ticketer_db::{AnyConnection, DbError, Row};
use uuid::Uuid;

/// An event as the booking service mirrors it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    pub event_id: i64,
    pub organizer: String,
    pub event_date: String,
    pub start_time: String,
    pub status: String,
    pub version: i64,
}

pub async fn event(conn: &mut AnyConnection, event_id: i64) -> Result<Option<EventInfo>, DbError> {
    let row = sqlx::query(
        "SELECT event_id, organizer, event_date, start_time, status, version FROM events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(EventInfo {
        event_id: r.try_get("event_id")?,
        organizer: r.try_get("organizer")?,
        event_date: r.try_get("event_date")?,
        start_time: r.try_get("start_time")?,
        status: r.try_get("status")?,
        version: r.try_get("version")?,
    }))
}

/// Stores `e` unless a newer snapshot is already there; true if stored.
pub async fn upsert_event(conn: &mut AnyConnection, e: &EventInfo) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO events (event_id, organizer, event_date, start_time, status, version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (event_id) DO UPDATE SET organizer = excluded.organizer, event_date = excluded.event_date,
             start_time = excluded.start_time, status = excluded.status, version = excluded.version
         WHERE events.version < excluded.version",
    )
    .bind(e.event_id)
    .bind(&e.organizer)
    .bind(&e.event_date)
    .bind(&e.start_time)
    .bind(&e.status)
    .bind(e.version)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Bookings of an event still in flight or confirmed.
pub async fn open_bookings(conn: &mut AnyConnection, event_id: i64) -> Result<Vec<Uuid>, DbError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT booking_id FROM bookings
         WHERE event_id = $1 AND stage IN ('HOLDING', 'PAYING', 'PAID', 'RESERVING', 'RECORDING', 'CONFIRMED')",
    )
    .bind(event_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|(id,)| ticketer_db::uuid_of(id)).collect()
}
