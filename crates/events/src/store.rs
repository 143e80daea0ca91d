//! The events service's SQL.

use chrono::{DateTime, Utc};
use ticketer_contract::Money;
use ticketer_db::{time, AnyConnection, AnyRow, Db, DbError, Migration, Row};
use uuid::Uuid;

use crate::domain::{parse_date, parse_time, EventDetails, EventStatus};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        postgres: include_str!("../migrations/postgres/0001_events.sql"),
        sqlite: include_str!("../migrations/sqlite/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "search",
        postgres: include_str!("../migrations/postgres/0002_search.sql"),
        sqlite: include_str!("../migrations/sqlite/0002_search.sql"),
    },
    Migration {
        version: 3,
        name: "places",
        postgres: include_str!("../migrations/postgres/0003_places.sql"),
        sqlite: include_str!("../migrations/sqlite/0003_places.sql"),
    },
    Migration {
        version: 4,
        name: "categories",
        postgres: include_str!("../migrations/postgres/0004_categories.sql"),
        sqlite: include_str!("../migrations/sqlite/0004_categories.sql"),
    },
];

#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub details: EventDetails,
    pub organizer: Uuid,
    pub status: EventStatus,
    pub tickets_sold: i64,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, event_name, description, category, location, event_date, start_time, end_time,
    ticket_capacity, ticket_price_minor, currency, organizer, status, tickets_sold, version, created_at, updated_at";

fn decode_err(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("corrupt {what} in events row").into())
}

fn from_row(row: &AnyRow) -> Result<Event, sqlx::Error> {
    let text = |c: &str| row.try_get::<String, _>(c);
    Ok(Event {
        id: row.try_get("id")?,
        details: EventDetails {
            event_name: text("event_name")?,
            description: text("description")?,
            category: text("category")?,
            location: text("location")?,
            event_date: parse_date(&text("event_date")?).ok_or_else(|| decode_err("event_date"))?,
            start_time: parse_time(&text("start_time")?).ok_or_else(|| decode_err("start_time"))?,
            end_time: parse_time(&text("end_time")?).ok_or_else(|| decode_err("end_time"))?,
            ticket_capacity: row.try_get("ticket_capacity")?,
            ticket_price: Money::from_minor(row.try_get("ticket_price_minor")?),
            currency: text("currency")?,
        },
        organizer: Uuid::parse_str(&text("organizer")?).map_err(|_| decode_err("organizer"))?,
        status: EventStatus::parse(&text("status")?).ok_or_else(|| decode_err("status"))?,
        tickets_sold: row.try_get("tickets_sold")?,
        version: row.try_get("version")?,
        created_at: time::parse(&text("created_at")?)?,
        updated_at: time::parse(&text("updated_at")?)?,
    })
}

fn date(d: &EventDetails) -> String {
    d.event_date.format("%Y-%m-%d").to_string()
}

fn hm(t: chrono::NaiveTime) -> String {
    t.format("%H:%M").to_string()
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the ten detail columns, in table order.
fn bind_details<'q>(q: Query<'q>, d: &'q EventDetails) -> Query<'q> {
    q.bind(&d.event_name)
        .bind(&d.description)
        .bind(&d.category)
        .bind(&d.location)
        .bind(date(d))
        .bind(hm(d.start_time))
        .bind(hm(d.end_time))
        .bind(d.ticket_capacity)
        .bind(d.ticket_price.minor())
        .bind(&d.currency)
}

pub async fn insert(conn: &mut AnyConnection, d: &EventDetails, organizer: Uuid) -> Result<Event, DbError> {
    let now = time::now();
    let sql = format!(
        "INSERT INTO events (event_name, description, category, location, event_date, start_time, end_time,
            ticket_capacity, ticket_price_minor, currency, organizer, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
         RETURNING {COLUMNS}"
    );
    let row = bind_details(sqlx::query(&sql), d)
        .bind(organizer.to_string())
        .bind(EventStatus::Draft.as_str())
        .bind(now)
        .fetch_one(conn)
        .await?;
    Ok(from_row(&row)?)
}

pub async fn get(conn: &mut AnyConnection, id: i64) -> Result<Option<Event>, DbError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM events WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Writes `event` if nobody changed it since it was read at `event.version`;
/// returns the stored event, or None when the version moved on.
pub async fn update(conn: &mut AnyConnection, event: &Event) -> Result<Option<Event>, DbError> {
    let d = &event.details;
    let sql = format!(
        "UPDATE events SET event_name = $3, description = $4, category = $5, location = $6, event_date = $7,
            start_time = $8, end_time = $9, ticket_capacity = $10, ticket_price_minor = $11, currency = $12,
            status = $13, updated_at = $14, version = version + 1
         WHERE id = $1 AND version = $2
         RETURNING {COLUMNS}"
    );
    let row = bind_details(sqlx::query(&sql).bind(event.id).bind(event.version), d)
        .bind(event.status.as_str())
        .bind(time::now())
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Published events whose end is before `now` (dates and times compare
/// correctly as text in their fixed formats).
pub async fn finished_ids(db: &Db, now: chrono::NaiveDateTime, limit: i64) -> Result<Vec<i64>, DbError> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM events
         WHERE status = $1 AND (event_date < $2 OR (event_date = $2 AND end_time <= $3))
         ORDER BY event_date, end_time, id LIMIT $4",
    )
    .bind(EventStatus::Published.as_str())
    .bind(now.format("%Y-%m-%d").to_string())
    .bind(now.format("%H:%M").to_string())
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Adds `delta` (negative for cancellations) to an event's tickets sold.
pub async fn add_sold(conn: &mut AnyConnection, event_id: i64, delta: i64) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE events SET tickets_sold = CASE WHEN tickets_sold + $2 < 0 THEN 0 ELSE tickets_sold + $2 END
         WHERE id = $1",
    )
    .bind(event_id)
    .bind(delta)
    .execute(conn)
    .await?;
    Ok(())
}

mod search;
pub use search::{list_by_organizer, list_published, Counting, Found, ListFilter};
