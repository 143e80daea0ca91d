//! The payment service's SQL.

use ticketer_db::{
    lists::{any_of, nullable_array_literal, rows_with, Binds, Lock},
    time, value_rows, AnyConnection, AnyRow, Db, DbError, Dialect, Migration, Row,
};

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(1, "payments", include_str!("../migrations/0001_payments.sql")),
    Migration::portable(2, "processing", include_str!("../migrations/0002_processing.sql")),
    Migration::portable(3, "methods", include_str!("../migrations/0003_methods.sql")),
    Migration::portable(
        4,
        "method deletion",
        include_str!("../migrations/0004_method_deletion.sql"),
    ),
];

pub mod methods;

/// A charge the provider has not answered yet.
pub const PROCESSING: &str = "PROCESSING";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: String,
    pub booking_id: String,
    pub customer_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub provider_reference: Option<String>,
    /// While PROCESSING: the ProcessPayment envelope, as JSON.
    pub pending_command: Option<String>,
}

const COLUMNS: &str = "payment_id, booking_id, customer_id, amount_minor, currency, status, failure_reason,
     provider_reference, pending_command";

fn from_row(r: &AnyRow) -> Result<Payment, sqlx::Error> {
    Ok(Payment {
        payment_id: r.try_get("payment_id")?,
        booking_id: r.try_get("booking_id")?,
        customer_id: r.try_get("customer_id")?,
        amount_minor: r.try_get("amount_minor")?,
        currency: r.try_get("currency")?,
        status: r.try_get("status")?,
        failure_reason: r.try_get("failure_reason")?,
        provider_reference: r.try_get("provider_reference")?,
        pending_command: r.try_get("pending_command")?,
    })
}

/// The booking's payment, if it has one.
pub async fn find(db: &Db, booking_id: &str) -> Result<Option<Payment>, DbError> {
    let mut conn = db.reading().await?;
    Ok(by_bookings(&mut conn, &[booking_id.to_string()])
        .await?
        .into_iter()
        .next())
}

/// The payments on record for these bookings, in one statement.
pub async fn by_bookings(conn: &mut AnyConnection, bookings: &[String]) -> Result<Vec<Payment>, DbError> {
    if bookings.is_empty() {
        return Ok(Vec::new());
    }
    let dialect = Dialect::of(conn);
    let sql = rows_with(
        dialect,
        COLUMNS,
        "payments",
        "booking_id",
        1,
        bookings.len(),
        "text",
        Lock::No,
    );
    let rows = sqlx::query(&sql)
        .bind_list(dialect, bookings)
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// New payments, in one statement.
pub async fn insert_all(conn: &mut AnyConnection, payments: &[&Payment]) -> Result<(), DbError> {
    if payments.is_empty() {
        return Ok(());
    }
    let now = time::now();
    if Dialect::of(conn) == Dialect::Postgres {
        // One text for every batch size (see `ticketer_db::lists`).
        let column =
            |f: fn(&Payment) -> Option<String>| nullable_array_literal(payments.iter().map(|p| f(p)));
        sqlx::query(
            "INSERT INTO payments (payment_id, booking_id, customer_id, amount_minor, currency, status,
                 failure_reason, provider_reference, pending_command, created_at, updated_at)
             SELECT id, booking, customer, amount, currency, status, failure, reference, command, $10, $10
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                         $7::text[], $8::text[], $9::text[])
                  AS v(id, booking, customer, amount, currency, status, failure, reference, command)",
        )
        .bind(column(|p| Some(p.payment_id.clone())))
        .bind(column(|p| Some(p.booking_id.clone())))
        .bind(column(|p| Some(p.customer_id.clone())))
        .bind(column(|p| Some(p.amount_minor.to_string())))
        .bind(column(|p| Some(p.currency.clone())))
        .bind(column(|p| Some(p.status.clone())))
        .bind(column(|p| p.failure_reason.clone()))
        .bind(column(|p| p.provider_reference.clone()))
        .bind(column(|p| p.pending_command.clone()))
        .bind(&now)
        .execute(conn)
        .await?;
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO payments (payment_id, booking_id, customer_id, amount_minor, currency, status,
             failure_reason, provider_reference, pending_command, created_at, updated_at)
         VALUES {}",
        value_rows(payments.len(), 11)
    );
    let mut q = sqlx::query(&sql);
    for p in payments {
        q = q
            .bind(p.payment_id.clone())
            .bind(p.booking_id.clone())
            .bind(p.customer_id.clone())
            .bind(p.amount_minor)
            .bind(p.currency.clone())
            .bind(p.status.clone())
            .bind(p.failure_reason.clone())
            .bind(p.provider_reference.clone())
            .bind(p.pending_command.clone())
            .bind(now.clone())
            .bind(now.clone());
    }
    q.execute(conn).await?;
    Ok(())
}

/// These bookings' payments were given back, in one statement.
pub async fn mark_refunded(conn: &mut AnyConnection, bookings: &[String]) -> Result<(), DbError> {
    if bookings.is_empty() {
        return Ok(());
    }
    let dialect = Dialect::of(conn);
    let sql = format!(
        "UPDATE payments SET status = 'REFUNDED', updated_at = $1 WHERE booking_id {}",
        any_of(dialect, 2, bookings.len(), "text")
    );
    sqlx::query(&sql)
        .bind(time::now())
        .bind_list(dialect, bookings)
        .execute(conn)
        .await?;
    Ok(())
}

/// Settles a PROCESSING charge with what the provider answered; false when
/// it was not PROCESSING any more (settled by someone else meanwhile).
pub async fn settle(conn: &mut AnyConnection, p: &Payment) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE payments SET status = $1, failure_reason = $2, provider_reference = $3,
             pending_command = NULL, updated_at = $4
         WHERE booking_id = $5 AND status = 'PROCESSING'",
    )
    .bind(&p.status)
    .bind(&p.failure_reason)
    .bind(&p.provider_reference)
    .bind(time::now())
    .bind(&p.booking_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Charges PROCESSING since before `before`: (booking id, pending command),
/// oldest first, at most `limit`.
pub async fn processing_since(db: &Db, before: &str, limit: i64) -> Result<Vec<(String, String)>, DbError> {
    let rows = sqlx::query(
        "SELECT booking_id, pending_command FROM payments
         WHERE status = 'PROCESSING' AND updated_at < $1
         ORDER BY updated_at LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            let command: Option<String> = r.try_get("pending_command")?;
            Ok((r.try_get("booking_id")?, command.unwrap_or_default()))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::from)
}
