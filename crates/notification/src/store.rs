//! The notification service's SQL.

use std::collections::HashMap;

use ticketer_db::{
    lists::{any_of, array_literal, Binds},
    placeholders, time, value_rows, AnyConnection, AnyRow, Db, DbError, Dialect, Migration, Row,
};

use crate::{
    compose::{Contact, EventInfo},
    templates::Template,
};

mod notifications;
mod preferences;

pub use notifications::*;
pub use preferences::{preferences, save_preferences, Preferences};

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "notifications",
        include_str!("../migrations/0001_notifications.sql"),
    ),
    Migration::portable(
        2,
        "preferences",
        include_str!("../migrations/0002_preferences.sql"),
    ),
    Migration::portable(3, "templates", include_str!("../migrations/0003_templates.sql")),
    Migration::portable(4, "channels", include_str!("../migrations/0004_channels.sql")),
];

pub async fn save_contact(conn: &mut AnyConnection, c: &Contact) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO contacts (user_id, email, first_name, last_name, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, first_name = excluded.first_name,
             last_name = excluded.last_name, updated_at = excluded.updated_at",
    )
    .bind(&c.user_id)
    .bind(&c.email)
    .bind(&c.first_name)
    .bind(&c.last_name)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(())
}

/// What the service knows of a user it may write to.
#[derive(Debug, Clone)]
pub struct Person {
    /// None when auth's registration never reached this service.
    pub contact: Option<Contact>,
    pub preferences: Preferences,
}

/// Longest IN list or VALUES list per statement: far below both
/// dialects' limits on bound values.
const PER_STATEMENT: usize = 500;

/// A user's contact and preferences from a row of contacts and preferences
/// left-joined (email, first_name, last_name and the preference columns).
fn person(r: &AnyRow, user_id: &str) -> Result<Person, sqlx::Error> {
    let contact = match r.try_get::<Option<String>, _>("email")? {
        Some(email) => Some(Contact {
            user_id: user_id.to_string(),
            email,
            first_name: r.try_get("first_name")?,
            last_name: r.try_get("last_name")?,
        }),
        None => None,
    };
    Ok(Person {
        contact,
        preferences: Preferences::from_row(r)?,
    })
}

/// The contact and preferences of each of `user_ids`, one statement per
/// few hundred users; someone this service has heard nothing of is absent.
pub async fn people(conn: &mut AnyConnection, user_ids: &[&str]) -> Result<HashMap<String, Person>, DbError> {
    let mut people: HashMap<String, Person> = HashMap::with_capacity(user_ids.len());
    let dialect = Dialect::of(conn);
    for chunk in user_ids.chunks(PER_STATEMENT) {
        // Both dialects name a VALUES list's column column1; PostgreSQL
        // takes the list as one array (see `ticketer_db::lists`).
        let users = match dialect {
            Dialect::Postgres => "unnest($1::text[]) AS u(column1)".to_string(),
            Dialect::Sqlite => format!("(VALUES {}) AS u", value_rows(chunk.len(), 1)),
        };
        let sql = format!(
            "SELECT u.column1 AS user_id, c.email, c.first_name, c.last_name, {}
             FROM {users}
             LEFT JOIN contacts c ON c.user_id = u.column1
             LEFT JOIN preferences p ON p.user_id = u.column1
             WHERE c.user_id IS NOT NULL OR p.user_id IS NOT NULL",
            preferences::COLUMNS,
        );
        let q = sqlx::query(&sql).bind_list(dialect, chunk);
        for r in q.fetch_all(&mut *conn).await? {
            let user_id: String = r.try_get("user_id")?;
            let person = person(&r, &user_id)?;
            people.insert(user_id, person);
        }
    }
    Ok(people)
}

/// Keeps the newest snapshot of an event (an older one arriving late
/// changes nothing).
pub async fn save_event(conn: &mut AnyConnection, e: &EventInfo, version: i64) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO events (event_id, name, location, event_date, start_time, organizer, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (event_id) DO UPDATE SET name = excluded.name, location = excluded.location,
             event_date = excluded.event_date, start_time = excluded.start_time,
             organizer = excluded.organizer, version = excluded.version, updated_at = excluded.updated_at
         WHERE events.version <= excluded.version",
    )
    .bind(e.event_id)
    .bind(&e.name)
    .bind(&e.location)
    .bind(&e.event_date)
    .bind(&e.start_time)
    .bind(&e.organizer)
    .bind(version)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(())
}

/// The events of `ids` this service has a snapshot of.
pub async fn events(conn: &mut AnyConnection, ids: &[i64]) -> Result<HashMap<i64, EventInfo>, DbError> {
    let mut events = HashMap::with_capacity(ids.len());
    let dialect = Dialect::of(conn);
    for chunk in ids.chunks(PER_STATEMENT) {
        let sql = format!(
            "SELECT event_id, name, location, event_date, start_time, organizer FROM events
             WHERE event_id {}",
            any_of(dialect, 1, chunk.len(), "bigint")
        );
        let q = sqlx::query(&sql).bind_list(dialect, chunk);
        for r in q.fetch_all(&mut *conn).await? {
            let e = EventInfo {
                event_id: r.try_get("event_id")?,
                name: r.try_get("name")?,
                location: r.try_get("location")?,
                event_date: r.try_get("event_date")?,
                start_time: r.try_get("start_time")?,
                organizer: r.try_get("organizer")?,
            };
            events.insert(e.event_id, e);
        }
    }
    Ok(events)
}

/// A confirmed booking: who holds tickets for which event.
pub struct Holding {
    pub booking_id: String,
    pub event_id: i64,
    pub customer_id: String,
}

/// Remembers confirmed bookings (one seen before changes nothing), to
/// tell their holders if the event is cancelled.
pub async fn hold_all(conn: &mut AnyConnection, all: &[Holding]) -> Result<(), DbError> {
    let dialect = Dialect::of(conn);
    for chunk in all.chunks(PER_STATEMENT) {
        if dialect == Dialect::Postgres {
            // One text for every batch size (see `ticketer_db::lists`).
            sqlx::query(
                "INSERT INTO holdings (booking_id, event_id, customer_id)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(array_literal(chunk.iter().map(|h| &h.booking_id)))
            .bind(array_literal(chunk.iter().map(|h| h.event_id)))
            .bind(array_literal(chunk.iter().map(|h| &h.customer_id)))
            .execute(&mut *conn)
            .await?;
            continue;
        }
        let sql = format!(
            "INSERT INTO holdings (booking_id, event_id, customer_id) VALUES {} ON CONFLICT DO NOTHING",
            value_rows(chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for h in chunk {
            q = q.bind(&h.booking_id).bind(h.event_id).bind(&h.customer_id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Forgets cancelled bookings.
pub async fn release_all(conn: &mut AnyConnection, booking_ids: &[String]) -> Result<(), DbError> {
    let dialect = Dialect::of(conn);
    for chunk in booking_ids.chunks(PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM holdings WHERE booking_id {}",
            any_of(dialect, 1, chunk.len(), "text")
        );
        sqlx::query(&sql)
            .bind_list(dialect, chunk)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Everyone holding confirmed bookings for the event, each once, with
/// their contact and preferences, in one statement however many they are.
pub async fn holders_to_tell(
    conn: &mut AnyConnection,
    event_id: i64,
) -> Result<HashMap<String, Person>, DbError> {
    let rows = sqlx::query(&format!(
        "SELECT DISTINCT h.customer_id, c.email, c.first_name, c.last_name, {}
         FROM holdings h
         LEFT JOIN contacts c ON c.user_id = h.customer_id
         LEFT JOIN preferences p ON p.user_id = h.customer_id
         WHERE h.event_id = $1",
        preferences::COLUMNS
    ))
    .bind(event_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| -> Result<(String, Person), sqlx::Error> {
            let user_id: String = r.try_get("customer_id")?;
            let person = person(r, &user_id)?;
            Ok((user_id, person))
        })
        .collect::<Result<_, _>>()
        .map_err(DbError::from)
}

/// The administrator's template for a type and channel, if there is one.
pub async fn template(
    conn: &mut AnyConnection,
    kind: &str,
    channel: &str,
) -> Result<Option<Template>, DbError> {
    let row = sqlx::query(
        "SELECT subject, body_text, body_html FROM templates WHERE notification_type = $1 AND channel = $2",
    )
    .bind(kind)
    .bind(channel)
    .fetch_optional(conn)
    .await?;
    Ok(row
        .map(|r| -> Result<Template, sqlx::Error> {
            Ok(Template {
                subject: r.try_get("subject")?,
                text: r.try_get("body_text")?,
                html: r.try_get("body_html")?,
            })
        })
        .transpose()?)
}

/// The administrator's templates for `kinds` on `channel`, by kind.
pub async fn templates(
    conn: &mut AnyConnection,
    kinds: &[&str],
    channel: &str,
) -> Result<HashMap<String, Template>, DbError> {
    if kinds.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT notification_type, subject, body_text, body_html FROM templates
         WHERE channel = $1 AND notification_type IN ({})",
        placeholders(2, kinds.len())
    );
    let mut q = sqlx::query(&sql).bind(channel);
    for k in kinds {
        q = q.bind(*k);
    }
    let mut found = HashMap::new();
    for r in q.fetch_all(conn).await? {
        let t = Template {
            subject: r.try_get("subject")?,
            text: r.try_get("body_text")?,
            html: r.try_get("body_html")?,
        };
        found.insert(r.try_get("notification_type")?, t);
    }
    Ok(found)
}

pub async fn save_template(db: &Db, kind: &str, channel: &str, t: &Template) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO templates (notification_type, channel, subject, body_text, body_html, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (notification_type, channel) DO UPDATE SET subject = excluded.subject,
             body_text = excluded.body_text, body_html = excluded.body_html, updated_at = excluded.updated_at",
    )
    .bind(kind)
    .bind(channel)
    .bind(&t.subject)
    .bind(&t.text)
    .bind(&t.html)
    .bind(time::now())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Back to the shipped template; false when there was no other.
pub async fn drop_template(db: &Db, kind: &str, channel: &str) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM templates WHERE notification_type = $1 AND channel = $2")
        .bind(kind)
        .bind(channel)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() == 1)
}
