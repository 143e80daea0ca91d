//! The ticket service's SQL.

use ticketer_db::{time, AnyConnection, Db, DbError, Dialect, Migration, Row};

use crate::inventory::Counters;

pub const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "inventory and tickets",
    include_str!("../migrations/0001_inventory.sql"),
)];

/// Whether the event's seats can be bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleStatus {
    OnSale,
    Cancelled,
    Closed,
}

impl SaleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SaleStatus::OnSale => "ON_SALE",
            SaleStatus::Cancelled => "CANCELLED",
            SaleStatus::Closed => "CLOSED",
        }
    }

    fn parse(s: &str) -> Result<Self, sqlx::Error> {
        match s {
            "ON_SALE" => Ok(SaleStatus::OnSale),
            "CANCELLED" => Ok(SaleStatus::Cancelled),
            "CLOSED" => Ok(SaleStatus::Closed),
            other => Err(sqlx::Error::Decode(format!("unknown sale status {other}").into())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub event_id: i64,
    pub organizer: String,
    pub status: SaleStatus,
    pub counters: Counters,
    pub price_minor: i64,
    pub currency: String,
    pub event_date: String,
    pub event_version: i64,
}

const COLUMNS: &str = "event_id, organizer, status, capacity, available, held, sold, price_minor, currency, \
     event_date, event_version";

fn from_row(row: &ticketer_db::AnyRow) -> Result<Inventory, sqlx::Error> {
    Ok(Inventory {
        event_id: row.try_get("event_id")?,
        organizer: row.try_get("organizer")?,
        status: SaleStatus::parse(&row.try_get::<String, _>("status")?)?,
        counters: Counters {
            capacity: row.try_get("capacity")?,
            available: row.try_get("available")?,
            held: row.try_get("held")?,
            sold: row.try_get("sold")?,
        },
        price_minor: row.try_get("price_minor")?,
        currency: row.try_get("currency")?,
        event_date: row.try_get("event_date")?,
        event_version: row.try_get("event_version")?,
    })
}

/// The inventory row, locked for the rest of the transaction on PostgreSQL
/// (SQLite has one writer, so the transaction already excludes others).
pub async fn lock(
    conn: &mut AnyConnection,
    dialect: Dialect,
    event_id: i64,
) -> Result<Option<Inventory>, DbError> {
    let lock = match dialect {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM inventory WHERE event_id = $1{lock}"
    ))
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

pub async fn get(db: &Db, event_id: i64) -> Result<Option<Inventory>, DbError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM inventory WHERE event_id = $1"))
        .bind(event_id)
        .fetch_optional(db.reader())
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Creates the inventory; false if it already existed.
pub async fn insert(conn: &mut AnyConnection, inv: &Inventory) -> Result<bool, DbError> {
    let c = inv.counters;
    let done = sqlx::query(
        "INSERT INTO inventory (event_id, organizer, status, capacity, available, held, sold, price_minor,
             currency, event_date, event_version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(inv.event_id)
    .bind(&inv.organizer)
    .bind(inv.status.as_str())
    .bind(c.capacity)
    .bind(c.available)
    .bind(c.held)
    .bind(c.sold)
    .bind(inv.price_minor)
    .bind(&inv.currency)
    .bind(&inv.event_date)
    .bind(inv.event_version)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn update(conn: &mut AnyConnection, inv: &Inventory) -> Result<(), DbError> {
    let c = inv.counters;
    sqlx::query(
        "UPDATE inventory SET status = $2, capacity = $3, available = $4, held = $5, sold = $6,
             price_minor = $7, currency = $8, event_date = $9, event_version = $10, updated_at = $11
         WHERE event_id = $1",
    )
    .bind(inv.event_id)
    .bind(inv.status.as_str())
    .bind(c.capacity)
    .bind(c.available)
    .bind(c.held)
    .bind(c.sold)
    .bind(inv.price_minor)
    .bind(&inv.currency)
    .bind(&inv.event_date)
    .bind(inv.event_version)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(())
}

/// Every ticket of a cancelled event becomes CANCELLED.
pub async fn cancel_tickets(conn: &mut AnyConnection, event_id: i64) -> Result<u64, DbError> {
    let done = sqlx::query(
        "UPDATE tickets SET status = 'CANCELLED', hold_expires_at = NULL, version = version + 1, updated_at = $2
         WHERE event_id = $1 AND status <> 'CANCELLED'",
    )
    .bind(event_id)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
