//! The events service's SQL.

use chrono::{DateTime, Utc};
use ticketer_contract::Money;
use ticketer_db::{time, AnyConnection, AnyRow, Db, DbError, Dialect, Migration, Row};
use ticketer_http::PageRequest;
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

/// Filters for the public listing.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub q: Option<String>,
    pub category: Option<String>,
    pub location: Option<String>,
    pub from: Option<chrono::NaiveDate>,
    pub to: Option<chrono::NaiveDate>,
}

/// Each word of `q` as an FTS5 string (quotes doubled), so that nothing a
/// client types is read as FTS syntax (AND, NEAR, column filters, `*`);
/// words side by side must all match.
fn fts_query(q: &str) -> String {
    q.split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A WHERE clause with its text arguments, numbered as they are added.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<String>,
}

impl Where {
    fn push(&mut self, clause: impl FnOnce(usize) -> String, arg: String) {
        self.args.push(arg);
        self.clauses.push(clause(self.args.len()));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// Matches counted: all of them, or up to a limit (`Some(n)`: n + 1 rows
/// are counted at most, so that "more than n" is known).
#[derive(Debug, Clone, Copy)]
pub enum Counting {
    All,
    UpTo(i64),
}

/// A page of events and how many match: `(events, total, capped)`, capped
/// when counting stopped at the limit.
pub type Found = (Vec<Event>, i64, bool);

async fn page_of(db: &Db, w: Where, page: PageRequest, counting: Counting) -> Result<Found, DbError> {
    let filter = w.sql();
    // Counting every match of a broad search costs a pass over most of the
    // table on both databases; a bounded count stops early.
    let count_sql = match counting {
        Counting::All => format!("SELECT COUNT(*) FROM events {filter}"),
        Counting::UpTo(n) => format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM events {filter} LIMIT {}) AS matched",
            n.max(0) + 1
        ),
    };
    let mut count = sqlx::query_as::<_, (i64,)>(&count_sql);
    for a in &w.args {
        count = count.bind(a.clone());
    }
    let (total,) = count.fetch_one(db.reader()).await?;
    let n = w.args.len();
    let sql = format!(
        "SELECT {COLUMNS} FROM events {filter} ORDER BY event_date, start_time, id LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    );
    let mut q = sqlx::query(&sql);
    for a in &w.args {
        q = q.bind(a.clone());
    }
    let rows = q
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(db.reader())
        .await?;
    let events = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok(match counting {
        Counting::UpTo(n) if total > n => (events, n, true),
        _ => (events, total, false),
    })
}

pub async fn list_published(
    db: &Db,
    f: &ListFilter,
    page: PageRequest,
    counting: Counting,
) -> Result<Found, DbError> {
    let mut w = Where::default();
    w.push(
        |i| format!("status = ${i}"),
        EventStatus::Published.as_str().into(),
    );
    if let Some(q) = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        match db.dialect() {
            Dialect::Postgres => w.push(
                |i| format!("search @@ plainto_tsquery('english', ${i})"),
                q.to_string(),
            ),
            // Every word must appear in the name or the description.
            Dialect::Sqlite => w.push(
                |i| format!("id IN (SELECT rowid FROM events_search WHERE events_search MATCH ${i})"),
                fts_query(q),
            ),
        }
    }
    if let Some(c) = &f.category {
        w.push(|i| format!("lower(category) = ${i}"), c.trim().to_lowercase());
    }
    if let Some(l) = &f.location {
        w.push(
            |i| format!("lower(location) LIKE ${i} ESCAPE '\\'"),
            ticketer_db::like_pattern(l.trim()),
        );
    }
    if let Some(from) = f.from {
        w.push(
            |i| format!("event_date >= ${i}"),
            from.format("%Y-%m-%d").to_string(),
        );
    }
    if let Some(to) = f.to {
        w.push(
            |i| format!("event_date <= ${i}"),
            to.format("%Y-%m-%d").to_string(),
        );
    }
    page_of(db, w, page, counting).await
}

pub async fn list_by_organizer(
    db: &Db,
    organizer: Uuid,
    page: PageRequest,
) -> Result<(Vec<Event>, i64), DbError> {
    let mut w = Where::default();
    w.push(|i| format!("organizer = ${i}"), organizer.to_string());
    let (events, total, _) = page_of(db, w, page, Counting::All).await?;
    Ok((events, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_are_quoted_not_parsed() {
        assert_eq!(fts_query(" Rock  night "), "\"Rock\" \"night\"");
        assert_eq!(fts_query("a\"b OR c*"), "\"a\"\"b\" \"OR\" \"c*\"");
    }
}
