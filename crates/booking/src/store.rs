//! The booking service's SQL.

use ticketer_contract::Money;
use ticketer_db::{
    lists::{nullable_array_literal, probed, rows_with, Binds, Lock},
    time, value_rows, AnyConnection, AnyRow, Db, DbError, Dialect, Migration, Row,
};
use uuid::Uuid;

use crate::saga::{FailureReason, Saga, Stage};

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(1, "bookings", include_str!("../migrations/0001_bookings.sql")),
    Migration::portable(2, "events", include_str!("../migrations/0002_events.sql")),
    Migration::portable(3, "deadlines", include_str!("../migrations/0003_deadlines.sql")),
    Migration::portable(4, "held at", include_str!("../migrations/0004_held_at.sql")),
    Migration::portable(
        5,
        "idempotency",
        include_str!("../migrations/0005_idempotency.sql"),
    ),
    Migration::portable(6, "hold until", include_str!("../migrations/0006_hold_until.sql")),
    Migration::portable(
        7,
        "payment method",
        include_str!("../migrations/0007_payment_method.sql"),
    ),
    Migration::portable(8, "given back", include_str!("../migrations/0008_given_back.sql")),
    Migration::portable(
        9,
        "waiting rooms",
        include_str!("../migrations/0009_waiting_rooms.sql"),
    ),
];

mod creation;
mod events;
mod rooms;
#[cfg(test)]
pub use creation::insert;
pub use creation::{by_keys, insert_all, RequestKey};
pub use events::{event, open_bookings, upsert_event, EventInfo};
pub use rooms::{close_room, open_room, room};

/// How a booking pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentSource {
    /// A provider's token given with the booking.
    Token(String),
    /// A card the customer saved with the payment service.
    Method(Uuid),
}

impl PaymentSource {
    /// The token to charge, as ProcessPayment and the row carry it: empty
    /// for a saved card, which the payment service looks up.
    pub fn token(&self) -> String {
        match self {
            PaymentSource::Token(t) => t.clone(),
            PaymentSource::Method(_) => String::new(),
        }
    }

    /// The saved card named, if it is one.
    pub fn method(&self) -> Option<Uuid> {
        match self {
            PaymentSource::Token(_) => None,
            PaymentSource::Method(m) => Some(*m),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Booking {
    pub booking_id: Uuid,
    pub customer_id: Uuid,
    pub event_id: i64,
    pub number_of_tickets: i64,
    pub payment: PaymentSource,
    pub saga: Saga,
    pub currency: Option<String>,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
    /// When the seats were held, once they were.
    pub held_at: Option<String>,
}

impl Booking {
    /// A booking just made, at the saga's start, with a fresh id.
    pub fn new(
        customer_id: Uuid,
        event_id: i64,
        number_of_tickets: i64,
        payment: PaymentSource,
        saga: Saga,
    ) -> Self {
        let now = time::now();
        Booking {
            booking_id: Uuid::now_v7(),
            customer_id,
            event_id,
            number_of_tickets,
            payment,
            saga,
            currency: None,
            version: 1,
            created_at: now.clone(),
            updated_at: now,
            held_at: None,
        }
    }
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Holding => "HOLDING",
        Stage::Paying => "PAYING",
        Stage::Paid => "PAID",
        Stage::Reserving => "RESERVING",
        Stage::Recording => "RECORDING",
        Stage::Confirmed => "CONFIRMED",
        Stage::Refunding => "REFUNDING",
        Stage::Cancelled => "CANCELLED",
        Stage::Failed => "FAILED",
    }
}

fn parse_stage(s: &str) -> Result<Stage, sqlx::Error> {
    Stage::ALL
        .into_iter()
        .find(|st| stage_name(*st) == s)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown stage {s}").into()))
}

const COLUMNS: &str =
    "booking_id, customer_id, event_id, number_of_tickets, payment_token, payment_method_id, stage, failure_reason, \
     ticket_ids, amount_minor, currency, version, created_at, updated_at, held_at, hold_until";

fn from_row(r: &AnyRow) -> Result<Booking, sqlx::Error> {
    let uuid = |c: &str| -> Result<Uuid, sqlx::Error> {
        Uuid::parse_str(&r.try_get::<String, _>(c)?).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let ticket_ids: Vec<Uuid> = serde_json::from_str(&r.try_get::<String, _>("ticket_ids")?)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Booking {
        booking_id: uuid("booking_id")?,
        customer_id: uuid("customer_id")?,
        event_id: r.try_get("event_id")?,
        number_of_tickets: r.try_get("number_of_tickets")?,
        payment: match r.try_get::<Option<String>, _>("payment_method_id")? {
            Some(_) => PaymentSource::Method(uuid("payment_method_id")?),
            None => PaymentSource::Token(r.try_get("payment_token")?),
        },
        saga: Saga {
            stage: parse_stage(&r.try_get::<String, _>("stage")?)?,
            failure: r
                .try_get::<Option<String>, _>("failure_reason")?
                .as_deref()
                .and_then(FailureReason::parse),
            ticket_ids,
            amount: r
                .try_get::<Option<i64>, _>("amount_minor")?
                .map(Money::from_minor),
            hold_until: r
                .try_get::<Option<String>, _>("hold_until")?
                .as_deref()
                .map(time::parse)
                .transpose()?,
        },
        currency: r.try_get("currency")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        held_at: r.try_get("held_at")?,
    })
}

/// The bookings with these ids that exist, in one statement, locked or not.
async fn by_ids<'c, E>(exec: E, dialect: Dialect, ids: &[Uuid], lock: Lock) -> Result<Vec<Booking>, DbError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = rows_with(
        dialect,
        COLUMNS,
        "bookings",
        "booking_id",
        1,
        ids.len(),
        "text",
        lock,
    );
    let rows = sqlx::query(&sql).bind_list(dialect, ids).fetch_all(exec).await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// The booking, locked for the transaction on PostgreSQL.
pub async fn lock(conn: &mut AnyConnection, id: Uuid) -> Result<Option<Booking>, DbError> {
    Ok(lock_all(conn, &[id]).await?.into_iter().next())
}

/// The bookings with these ids that exist, in one statement.
pub async fn get_all(db: &Db, ids: &[Uuid]) -> Result<Vec<Booking>, DbError> {
    by_ids(db.reader(), db.dialect(), ids, Lock::No).await
}

#[cfg(test)]
pub async fn get(db: &Db, id: Uuid) -> Result<Option<Booking>, DbError> {
    Ok(get_all(db, &[id]).await?.into_iter().next())
}

/// The bookings with these ids that exist, locked for the transaction on
/// PostgreSQL in id order (so two batches cannot wait on each other);
/// SQLite has one writer, so the transaction already excludes others.
pub async fn lock_all(conn: &mut AnyConnection, ids: &[Uuid]) -> Result<Vec<Booking>, DbError> {
    let dialect = Dialect::of(conn);
    by_ids(conn, dialect, ids, Lock::ForUpdate).await
}

/// Stores the sagas' new states, each only if its row is still at the
/// booking's `version`, in one statement; true if every one was stored.
/// With each booking goes its deadline: when its new stage stops waiting,
/// if it waits. Each is stored as changed at `now`.
pub async fn advance_all(
    conn: &mut AnyConnection,
    steps: &[(&Booking, Option<String>)],
    now: &str,
) -> Result<bool, DbError> {
    if steps.is_empty() {
        return Ok(true);
    }
    if Dialect::of(conn) == Dialect::Postgres {
        return advance_all_postgres(conn, steps, now).await;
    }
    // VALUES columns are column1, column2, ... on both dialects.
    let sql = format!(
        "UPDATE bookings SET stage = v.column3, status = v.column4, failure_reason = v.column5,
             ticket_ids = v.column6, amount_minor = v.column7, currency = v.column8,
             version = bookings.version + 1, updated_at = v.column9, deadline_at = v.column10,
             held_at = v.column11, hold_until = v.column12
         FROM (VALUES {}) AS v
         WHERE bookings.booking_id = v.column1 AND bookings.version = v.column2",
        value_rows(steps.len(), 12)
    );
    let mut q = sqlx::query(&sql);
    for (b, deadline) in steps {
        q = q
            .bind(b.booking_id.to_string())
            .bind(b.version)
            .bind(stage_name(b.saga.stage))
            .bind(b.saga.stage.status().as_str())
            .bind(b.saga.failure.map(|f| f.as_str()))
            .bind(serde_json::to_string(&b.saga.ticket_ids).expect("uuids serialize"))
            .bind(b.saga.amount.map(Money::minor))
            .bind(b.currency.clone())
            .bind(now)
            .bind(deadline.clone())
            .bind(b.held_at.clone())
            .bind(b.saga.hold_until.map(time::format));
    }
    let done = q.execute(conn).await?;
    Ok(done.rows_affected() == steps.len() as u64)
}

/// [`advance_all`] on PostgreSQL: one text for every batch size, the
/// columns as arrays (see `ticketer_db::lists`).
async fn advance_all_postgres(
    conn: &mut AnyConnection,
    steps: &[(&Booking, Option<String>)],
    now: &str,
) -> Result<bool, DbError> {
    let column = |f: fn(&Booking, &Option<String>) -> Option<String>| {
        nullable_array_literal(steps.iter().map(|(b, d)| f(b, d)))
    };
    // The rows are locked (lock_all), so each is found by its address.
    let steps_given = probed(
        "bookings",
        "unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[])
         AS v(id, version, stage, status, failure, tickets, amount, currency, deadline, held, until)",
        "v",
        "booking_id = v.id AND version = v.version",
    );
    let sql = format!(
        "UPDATE bookings SET stage = v.stage, status = v.status, failure_reason = v.failure,
             ticket_ids = v.tickets, amount_minor = v.amount, currency = v.currency,
             version = bookings.version + 1, updated_at = $12, deadline_at = v.deadline,
             held_at = v.held, hold_until = v.until
         FROM {steps_given}
         WHERE bookings.ctid = v.row_id"
    );
    let done = sqlx::query(&sql)
        .bind(column(|b, _| Some(b.booking_id.to_string())))
        .bind(column(|b, _| Some(b.version.to_string())))
        .bind(column(|b, _| Some(stage_name(b.saga.stage).to_string())))
        .bind(column(|b, _| Some(b.saga.stage.status().as_str().to_string())))
        .bind(column(|b, _| b.saga.failure.map(|f| f.as_str().to_string())))
        .bind(column(|b, _| {
            Some(serde_json::to_string(&b.saga.ticket_ids).expect("uuids serialize"))
        }))
        .bind(column(|b, _| b.saga.amount.map(|a| a.minor().to_string())))
        .bind(column(|b, _| b.currency.clone()))
        .bind(column(|_, d| d.clone()))
        .bind(column(|b, _| b.held_at.clone()))
        .bind(column(|b, _| b.saga.hold_until.map(time::format)))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == steps.len() as u64)
}

/// Whether the (locked) booking's deadline has passed.
pub async fn is_overdue(conn: &mut AnyConnection, id: Uuid) -> Result<bool, DbError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT booking_id FROM bookings WHERE booking_id = $1 AND deadline_at <= $2")
            .bind(id.to_string())
            .bind(time::now())
            .fetch_optional(conn)
            .await?;
    Ok(row.is_some())
}

/// Whether seats of `event_id` may be on their way back to the ticket
/// service: a booking that held some failed or was cancelled since `since`,
/// or seats held for a booking never made were given back since then
/// (their ReleaseTickets may still be in the queue).
pub async fn seats_coming_back(db: &Db, event_id: i64, since: &str) -> Result<bool, DbError> {
    let failed: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM bookings
         WHERE event_id = $1 AND status IN ('FAILED', 'CANCELLED') AND held_at IS NOT NULL
           AND updated_at >= $2
         LIMIT 1",
    )
    .bind(event_id)
    .bind(since)
    .fetch_optional(db.reader())
    .await?;
    if failed.is_some() {
        return Ok(true);
    }
    let given: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM given_back WHERE event_id = $1 AND given_at >= $2 LIMIT 1")
            .bind(event_id)
            .bind(since)
            .fetch_optional(db.reader())
            .await?;
    Ok(given.is_some())
}

/// Notes that the seats of `given` (booking, event), bookings never made,
/// are on their way back as of `now`; notes older than `forget_before`
/// are dropped, long past any release's way.
pub async fn note_given_back(
    conn: &mut AnyConnection,
    given: &[(Uuid, i64)],
    now: &str,
    forget_before: &str,
) -> Result<(), DbError> {
    sqlx::query("DELETE FROM given_back WHERE given_at < $1")
        .bind(forget_before)
        .execute(&mut *conn)
        .await?;
    for (booking, event) in given {
        sqlx::query(
            "INSERT INTO given_back (booking_id, event_id, given_at) VALUES ($1, $2, $3)
             ON CONFLICT (booking_id) DO UPDATE SET given_at = excluded.given_at",
        )
        .bind(booking.to_string())
        .bind(event)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Bookings whose deadline has passed.
pub async fn overdue(db: &Db, limit: i64) -> Result<Vec<Uuid>, DbError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT booking_id FROM bookings WHERE deadline_at <= $1 ORDER BY deadline_at LIMIT $2",
    )
    .bind(time::now())
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.iter().map(|(id,)| ticketer_db::uuid_of(id)).collect()
}

/// One page of bookings matching `filter` (`customer_id = $1` or
/// `event_id = $1`), optionally of one status, newest first.
pub async fn page(
    db: &Db,
    by_customer: Option<Uuid>,
    by_event: Option<i64>,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Booking>, i64), DbError> {
    let mut clauses = Vec::new();
    let mut text_args: Vec<String> = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if let Some(c) = by_customer {
        clauses.push(format!("customer_id = ${}", next()));
        text_args.push(c.to_string());
    }
    if let Some(s) = status {
        clauses.push(format!("status = ${}", next()));
        text_args.push(s.to_string());
    }
    let event_slot = by_event.map(|_| next());
    if let Some(slot) = event_slot {
        clauses.push(format!("event_id = ${slot}"));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    let count_sql = format!("SELECT COUNT(*) FROM bookings {filter}");
    let (l, o) = (next(), next());
    let page_sql = format!(
        "SELECT {COLUMNS} FROM bookings {filter} ORDER BY created_at DESC, booking_id LIMIT ${l} OFFSET ${o}"
    );
    let mut count = sqlx::query_as::<_, (i64,)>(&count_sql);
    let mut rows = sqlx::query(&page_sql);
    for a in &text_args {
        count = count.bind(a.clone());
        rows = rows.bind(a.clone());
    }
    if let Some(e) = by_event {
        count = count.bind(e);
        rows = rows.bind(e);
    }
    let (total,) = count.fetch_one(db.reader()).await?;
    let rows = rows.bind(limit).bind(offset).fetch_all(db.reader()).await?;
    Ok((rows.iter().map(from_row).collect::<Result<_, _>>()?, total))
}
