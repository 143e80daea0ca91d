//! The notifications themselves: stored once per cause and recipient,
//! then claimed, sent and marked by the delivery worker.

use ticketer_db::{
    lists::nullable_array_literal, time, value_rows, AnyConnection, AnyRow, Db, DbError, Dialect, Row,
};

use super::PER_STATEMENT;

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

/// Stores those whose dedup key is new, a few hundred per statement;
/// returns how many were stored.
pub async fn insert_all(conn: &mut AnyConnection, all: &[NewNotification]) -> Result<u64, DbError> {
    let now = time::now();
    let mut stored = 0;
    if Dialect::of(conn) == Dialect::Postgres && !all.is_empty() {
        // One text for every batch size (see `ticketer_db::lists`).
        let column =
            |f: &dyn Fn(&NewNotification) -> Option<String>| nullable_array_literal(all.iter().map(f));
        let done = sqlx::query(
            "INSERT INTO notifications (id, dedup_key, recipient_id, recipient, channel, notification_type,
                 subject, body_text, body_html, status, next_attempt_at, last_error, event_id, booking_id,
                 created_at)
             SELECT id, dedup, recipient_id, recipient, channel, kind, subject, body_text, body_html,
                    status, $14, last_error, event_id, booking_id, $14
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[],
                         $13::text[])
                  AS v(id, dedup, recipient_id, recipient, channel, kind, subject, body_text, body_html,
                       status, last_error, event_id, booking_id)
             ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(column(&|_| Some(uuid::Uuid::now_v7().to_string())))
        .bind(column(&|n| Some(n.dedup_key.clone())))
        .bind(column(&|n| n.recipient_id.clone()))
        .bind(column(&|n| Some(n.recipient.clone())))
        .bind(column(&|n| Some(n.channel.to_string())))
        .bind(column(&|n| Some(n.notification_type.to_string())))
        .bind(column(&|n| Some(n.subject.clone())))
        .bind(column(&|n| Some(n.body_text.clone())))
        .bind(column(&|n| Some(n.body_html.clone())))
        .bind(column(&|n| Some(n.status.to_string())))
        .bind(column(&|n| n.last_error.clone()))
        .bind(column(&|n| n.event_id.map(|e| e.to_string())))
        .bind(column(&|n| n.booking_id.clone()))
        .bind(&now)
        .execute(&mut *conn)
        .await?;
        return Ok(done.rows_affected());
    }
    for chunk in all.chunks(PER_STATEMENT) {
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

/// Takes up to `limit` PENDING notifications of `channel` that are due,
/// each leased for `lease` (another worker, here or on a replica, leaves
/// them alone meanwhile; a worker that dies lets the lease run out),
/// oldest first, in one statement: a row another worker leased in the
/// meantime no longer matches when the update reaches it, so only one
/// takes it.
pub async fn claim_due(
    db: &Db,
    channel: &str,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<Notification>, DbError> {
    let now = time::now();
    let until = time::from_now(lease);
    let rows = sqlx::query(&format!(
        "UPDATE notifications SET next_attempt_at = $1
         WHERE id IN (SELECT id FROM notifications
                      WHERE channel = $2 AND status = 'PENDING' AND next_attempt_at <= $3
                      ORDER BY next_attempt_at LIMIT $4)
           AND status = 'PENDING' AND next_attempt_at <= $3
         RETURNING {COLUMNS}"
    ))
    .bind(&until)
    .bind(channel)
    .bind(&now)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Marks these notifications SENT, a few hundred per statement.
pub async fn mark_all_sent(db: &Db, ids: &[String]) -> Result<(), DbError> {
    let now = time::now();
    for chunk in ids.chunks(PER_STATEMENT) {
        let sql = format!(
            "UPDATE notifications SET status = 'SENT', sent_at = $1, last_error = NULL WHERE id IN ({})",
            ticketer_db::placeholders(2, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(&now);
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(db.pool()).await?;
    }
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

/// The notification `id`, if there is one.
pub async fn by_id(db: &Db, id: &str) -> Result<Option<Notification>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM notifications WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(db.pool()).await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Puts a FAILED notification that has an address back in the queue, due
/// now (its retry count kept: it is tried once more, and again only while
/// attempts are left); false when it is not such a one.
pub async fn requeue(db: &Db, id: &str) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE notifications SET status = 'PENDING', next_attempt_at = $1
         WHERE id = $2 AND status = 'FAILED' AND recipient <> ''",
    )
    .bind(time::now())
    .bind(id)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many notifications are SENT and how many FAILED, over all.
pub async fn status_counts(db: &Db) -> Result<(usize, usize), DbError> {
    let row = sqlx::query(
        "SELECT COALESCE(SUM(CASE WHEN status = 'SENT' THEN 1 ELSE 0 END), 0) AS sent,
                COALESCE(SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END), 0) AS failed
         FROM notifications",
    )
    .fetch_one(db.reader())
    .await?;
    let (sent, failed): (i64, i64) = (row.try_get("sent")?, row.try_get("failed")?);
    Ok((sent as usize, failed as usize))
}
