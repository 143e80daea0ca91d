//! The notification service's SQL.

use ticketer_db::{time, value_rows, AnyConnection, AnyRow, Db, DbError, Migration, Row};

use crate::{
    compose::{Contact, EventInfo},
    templates::Template,
};

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
];

/// The channels a user wants to be told through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Email, on unless turned off.
    pub email: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences { email: true }
    }
}

/// The user's preferences, or the defaults.
pub async fn preferences(conn: &mut AnyConnection, user_id: &str) -> Result<Preferences, DbError> {
    let row = sqlx::query("SELECT email FROM preferences WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(r) => Preferences {
            email: r.try_get::<i64, _>("email")? != 0,
        },
        None => Preferences::default(),
    })
}

pub async fn save_preferences(db: &Db, user_id: &str, p: Preferences) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO preferences (user_id, email, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at",
    )
    .bind(user_id)
    .bind(i64::from(p.email))
    .bind(time::now())
    .execute(db.pool())
    .await?;
    Ok(())
}

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

pub async fn contact(conn: &mut AnyConnection, user_id: &str) -> Result<Option<Contact>, DbError> {
    let row = sqlx::query("SELECT user_id, email, first_name, last_name FROM contacts WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(row
        .map(|r| -> Result<Contact, sqlx::Error> {
            Ok(Contact {
                user_id: r.try_get("user_id")?,
                email: r.try_get("email")?,
                first_name: r.try_get("first_name")?,
                last_name: r.try_get("last_name")?,
            })
        })
        .transpose()?)
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

pub async fn event(conn: &mut AnyConnection, event_id: i64) -> Result<Option<EventInfo>, DbError> {
    let row = sqlx::query(
        "SELECT event_id, name, location, event_date, start_time, organizer FROM events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    Ok(row
        .map(|r| -> Result<EventInfo, sqlx::Error> {
            Ok(EventInfo {
                event_id: r.try_get("event_id")?,
                name: r.try_get("name")?,
                location: r.try_get("location")?,
                event_date: r.try_get("event_date")?,
                start_time: r.try_get("start_time")?,
                organizer: r.try_get("organizer")?,
            })
        })
        .transpose()?)
}

pub async fn hold(
    conn: &mut AnyConnection,
    booking_id: &str,
    event_id: i64,
    customer: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO holdings (booking_id, event_id, customer_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(booking_id)
    .bind(event_id)
    .bind(customer)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn release(conn: &mut AnyConnection, booking_id: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM holdings WHERE booking_id = $1")
        .bind(booking_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// One customer holding tickets for an event, as the service knows them.
#[derive(Debug, Clone)]
pub struct Holder {
    pub user_id: String,
    pub contact: Option<Contact>,
    pub wants_email: bool,
}

/// Everyone holding confirmed bookings for the event, each once, with
/// their contact and preferences, in one statement however many they are.
pub async fn holders_to_tell(conn: &mut AnyConnection, event_id: i64) -> Result<Vec<Holder>, DbError> {
    let rows = sqlx::query(
        "SELECT DISTINCT h.customer_id, c.email, c.first_name, c.last_name, p.email AS wants_email
         FROM holdings h
         LEFT JOIN contacts c ON c.user_id = h.customer_id
         LEFT JOIN preferences p ON p.user_id = h.customer_id
         WHERE h.event_id = $1 ORDER BY h.customer_id",
    )
    .bind(event_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| -> Result<Holder, sqlx::Error> {
            let user_id: String = r.try_get("customer_id")?;
            let email: Option<String> = r.try_get("email")?;
            let contact = match email {
                Some(email) => Some(Contact {
                    user_id: user_id.clone(),
                    email,
                    first_name: r.try_get("first_name")?,
                    last_name: r.try_get("last_name")?,
                }),
                None => None,
            };
            let wants: Option<i64> = r.try_get("wants_email")?;
            Ok(Holder {
                user_id,
                contact,
                wants_email: wants.is_none_or(|w| w != 0),
            })
        })
        .collect::<Result<_, _>>()
        .map_err(DbError::from)
}

/// A notification to store (and then send).
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub dedup_key: String,
    pub recipient_id: Option<String>,
    pub recipient: String,
    pub channel: &'static str,
    pub notification_type: &'static str,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    /// PENDING, or FAILED at once when it cannot be sent at all.
    pub status: &'static str,
    pub last_error: Option<String>,
    pub event_id: Option<i64>,
    pub booking_id: Option<String>,
}

/// Stores it unless one with its dedup key exists; true when stored.
pub async fn insert(conn: &mut AnyConnection, n: &NewNotification) -> Result<bool, DbError> {
    Ok(insert_all(conn, std::slice::from_ref(n)).await? == 1)
}

/// Rows per INSERT: 15 values each, well under both dialects' limits.
const PER_INSERT: usize = 500;

/// Stores those whose dedup key is new, a few hundred per statement;
/// returns how many were stored.
pub async fn insert_all(conn: &mut AnyConnection, all: &[NewNotification]) -> Result<u64, DbError> {
    let now = time::now();
    let mut stored = 0;
    for chunk in all.chunks(PER_INSERT) {
        let sql = format!(
            "INSERT INTO notifications (id, dedup_key, recipient_id, recipient, channel, notification_type,
                 subject, body_text, body_html, status, next_attempt_at, last_error, event_id, booking_id,
                 created_at)
             VALUES {} ON CONFLICT (dedup_key) DO NOTHING",
            value_rows(chunk.len(), 15)
        );
        let mut q = sqlx::query(&sql);
        for n in chunk {
            q = q
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&n.dedup_key)
                .bind(&n.recipient_id)
                .bind(&n.recipient)
                .bind(n.channel)
                .bind(n.notification_type)
                .bind(&n.subject)
                .bind(&n.body_text)
                .bind(&n.body_html)
                .bind(n.status)
                .bind(&now)
                .bind(&n.last_error)
                .bind(n.event_id)
                .bind(&n.booking_id)
                .bind(&now);
        }
        stored += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(stored)
}

/// A stored notification.
#[derive(Debug, Clone)]
pub struct Notification {
    pub id: String,
    pub recipient_id: Option<String>,
    pub recipient: String,
    pub channel: String,
    pub notification_type: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub status: String,
    pub retry_count: i64,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
    pub event_id: Option<i64>,
    pub booking_id: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

const COLUMNS: &str =
    "id, recipient_id, recipient, channel, notification_type, subject, body_text, body_html,
     status, retry_count, next_attempt_at, last_error, event_id, booking_id, created_at, sent_at";

fn from_row(r: &AnyRow) -> Result<Notification, sqlx::Error> {
    Ok(Notification {
        id: r.try_get("id")?,
        recipient_id: r.try_get("recipient_id")?,
        recipient: r.try_get("recipient")?,
        channel: r.try_get("channel")?,
        notification_type: r.try_get("notification_type")?,
        subject: r.try_get("subject")?,
        body_text: r.try_get("body_text")?,
        body_html: r.try_get("body_html")?,
        status: r.try_get("status")?,
        retry_count: r.try_get::<i64, _>("retry_count")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        event_id: r.try_get("event_id")?,
        booking_id: r.try_get("booking_id")?,
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
    })
}

/// Takes up to `limit` PENDING notifications that are due, each leased
/// for `lease` (another worker, here or on a replica, leaves them alone
/// meanwhile; a worker that dies lets the lease run out). Oldest first.
pub async fn claim_due(
    db: &Db,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<Notification>, DbError> {
    let now = time::now();
    let due = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE status = 'PENDING' AND next_attempt_at <= $1
         ORDER BY next_attempt_at LIMIT $2"
    ))
    .bind(&now)
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    let until = time::from_now(lease);
    let mut claimed = Vec::with_capacity(due.len());
    for row in &due {
        let n = from_row(row)?;
        // Only one claimant moves next_attempt_at from the value it read.
        let took = sqlx::query(
            "UPDATE notifications SET next_attempt_at = $1
             WHERE id = $2 AND status = 'PENDING' AND next_attempt_at = $3",
        )
        .bind(&until)
        .bind(&n.id)
        .bind(&n.next_attempt_at)
        .execute(db.pool())
        .await?;
        if took.rows_affected() == 1 {
            claimed.push(n);
        }
    }
    Ok(claimed)
}

pub async fn mark_sent(db: &Db, id: &str) -> Result<(), DbError> {
    sqlx::query("UPDATE notifications SET status = 'SENT', sent_at = $1, last_error = NULL WHERE id = $2")
        .bind(time::now())
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// A failed attempt: tried again at `retry_at`, or FAILED for good when None.
pub async fn mark_failed_attempt(
    db: &Db,
    id: &str,
    error: &str,
    retry_at: Option<String>,
) -> Result<(), DbError> {
    let (status, next) = match retry_at {
        Some(at) => ("PENDING", at),
        None => ("FAILED", time::now()),
    };
    sqlx::query(
        "UPDATE notifications SET status = $1, retry_count = retry_count + 1, next_attempt_at = $2, last_error = $3
         WHERE id = $4",
    )
    .bind(status)
    .bind(next)
    .bind(error)
    .bind(id)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Which notifications a listing asks for.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub recipient_id: Option<String>,
    pub booking_id: Option<String>,
    pub event_id: Option<i64>,
}

/// A page of notifications matching `f`, newest first, and their total.
pub async fn page(db: &Db, f: &Filter, limit: i64, offset: i64) -> Result<(Vec<Notification>, i64), DbError> {
    let mut clauses = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if f.recipient_id.is_some() {
        clauses.push(format!("recipient_id = {}", next()));
    }
    if f.booking_id.is_some() {
        clauses.push(format!("booking_id = {}", next()));
    }
    if f.event_id.is_some() {
        clauses.push(format!("event_id = {}", next()));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let (limit_at, offset_at) = (next(), next());
    let list = format!(
        "SELECT {COLUMNS} FROM notifications {filter} ORDER BY created_at DESC, id DESC LIMIT {limit_at} OFFSET {offset_at}"
    );
    let count = format!("SELECT COUNT(*) AS total FROM notifications {filter}");
    let mut q = sqlx::query(&list);
    let mut c = sqlx::query(&count);
    if let Some(v) = &f.recipient_id {
        q = q.bind(v);
        c = c.bind(v);
    }
    if let Some(v) = &f.booking_id {
        q = q.bind(v);
        c = c.bind(v);
    }
    if let Some(v) = f.event_id {
        q = q.bind(v);
        c = c.bind(v);
    }
    let rows = q.bind(limit).bind(offset).fetch_all(db.reader()).await?;
    let total: i64 = c.fetch_one(db.reader()).await?.try_get("total")?;
    Ok((rows.iter().map(from_row).collect::<Result<_, _>>()?, total))
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
