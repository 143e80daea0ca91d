//! The payment service's SQL.

use ticketer_db::{time, AnyConnection, AnyRow, Db, DbError, Migration, Row};

pub const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "payments",
    include_str!("../migrations/0001_payments.sql"),
)];

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
}

const COLUMNS: &str =
    "payment_id, booking_id, customer_id, amount_minor, currency, status, failure_reason, provider_reference";

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
    })
}

pub async fn by_booking(conn: &mut AnyConnection, booking_id: &str) -> Result<Option<Payment>, DbError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM payments WHERE booking_id = $1"))
        .bind(booking_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

pub async fn find(db: &Db, booking_id: &str) -> Result<Option<Payment>, DbError> {
    by_booking(&mut *db.reader().acquire().await?, booking_id).await
}

pub async fn insert(conn: &mut AnyConnection, p: &Payment) -> Result<(), DbError> {
    let now = time::now();
    sqlx::query(
        "INSERT INTO payments (payment_id, booking_id, customer_id, amount_minor, currency, status,
             failure_reason, provider_reference, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(&p.payment_id)
    .bind(&p.booking_id)
    .bind(&p.customer_id)
    .bind(p.amount_minor)
    .bind(&p.currency)
    .bind(&p.status)
    .bind(&p.failure_reason)
    .bind(&p.provider_reference)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_refunded(conn: &mut AnyConnection, booking_id: &str) -> Result<(), DbError> {
    sqlx::query("UPDATE payments SET status = 'REFUNDED', updated_at = $2 WHERE booking_id = $1")
        .bind(booking_id)
        .bind(time::now())
        .execute(conn)
        .await?;
    Ok(())
}
