//! The ticket service's SQL.

use std::collections::HashMap;

use ticketer_db::{
    lists::{nullable_array_literal, probed, rows_with, Binds, Lock},
    time, value_rows, AnyConnection, Db, DbError, Dialect, Migration, Row,
};

use crate::{inventory::Counters, lifecycle::TicketStatus, sale::Seat};

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

/// Seats for sale and seats held per event on sale: (event_id, available,
/// held).
pub async fn on_sale_availability(db: &Db) -> Result<Vec<(i64, i64, i64)>, DbError> {
    Ok(
        sqlx::query_as("SELECT event_id, available, held FROM inventory WHERE status = 'ON_SALE'")
            .fetch_all(db.reader())
            .await?,
    )
}

/// Seats (available, held, sold) of the newest `limit` events on sale.
pub async fn on_sale_seats(db: &Db, limit: i64) -> Result<Vec<(i64, i64, i64, i64)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT event_id, available, held, sold FROM inventory WHERE status = 'ON_SALE'
         ORDER BY event_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.reader())
    .await?)
}

/// The inventory row, locked for the rest of the transaction on PostgreSQL
/// (SQLite has one writer, so the transaction already excludes others).
pub async fn lock(conn: &mut AnyConnection, event_id: i64) -> Result<Option<Inventory>, DbError> {
    let lock = ticketer_db::for_update(conn);
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

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds every inventory column, in the order of `insert` and `update`.
fn bind_inventory<'q>(q: Query<'q>, inv: &'q Inventory) -> Query<'q> {
    let c = inv.counters;
    q.bind(inv.event_id)
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
}

/// Creates the inventory; false if it already existed.
pub async fn insert(conn: &mut AnyConnection, inv: &Inventory) -> Result<bool, DbError> {
    let sql =
        "INSERT INTO inventory (event_id, organizer, status, capacity, available, held, sold, price_minor,
             currency, event_date, event_version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (event_id) DO NOTHING";
    let done = bind_inventory(sqlx::query(sql), inv).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

pub async fn update(conn: &mut AnyConnection, inv: &Inventory) -> Result<(), DbError> {
    let sql = "UPDATE inventory SET organizer = $2, status = $3, capacity = $4, available = $5, held = $6,
             sold = $7, price_minor = $8, currency = $9, event_date = $10, event_version = $11, updated_at = $12
         WHERE event_id = $1";
    bind_inventory(sqlx::query(sql), inv).execute(conn).await?;
    Ok(())
}

/// Every ticket of a cancelled event becomes CANCELLED (a void one stays void).
pub async fn cancel_tickets(conn: &mut AnyConnection, event_id: i64) -> Result<u64, DbError> {
    let done = sqlx::query(
        "UPDATE tickets SET status = 'CANCELLED', hold_expires_at = NULL, version = version + 1, updated_at = $2
         WHERE event_id = $1 AND status NOT IN ('CANCELLED', 'VOID')",
    )
    .bind(event_id)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The event each of `bookings` has tickets for; bookings with none are left out.
pub async fn events_of(
    conn: &mut AnyConnection,
    bookings: &[String],
) -> Result<HashMap<String, i64>, DbError> {
    let dialect = Dialect::of(conn);
    let sql = format!(
        "SELECT DISTINCT booking_id, event_id FROM ({}) AS theirs",
        rows_with(
            dialect,
            "booking_id, event_id",
            "tickets",
            "booking_id",
            1,
            bookings.len(),
            "text",
            Lock::No
        )
    );
    let q = sqlx::query_as::<_, (String, i64)>(&sql).bind_list(dialect, bookings);
    Ok(q.fetch_all(conn).await?.into_iter().collect())
}

const SEAT_COLUMNS: &str = "ticket_id, status, booking_id, customer_id, hold_expires_at";

fn seat_from_row(r: &ticketer_db::AnyRow) -> Result<Seat, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(Seat {
        ticket_id: r.try_get("ticket_id")?,
        status: TicketStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown ticket status {status}").into()))?,
        booking_id: r.try_get("booking_id")?,
        customer_id: r.try_get("customer_id")?,
        hold_expires_at: r.try_get("hold_expires_at")?,
    })
}

/// What a batch of commands for one event reads, in one statement: every
/// ticket of `bookings`, and up to `free` of the event's rows back on sale
/// (lowest id first) that holds may take again.
pub async fn seats(
    conn: &mut AnyConnection,
    event_id: i64,
    bookings: &[String],
    free: i64,
) -> Result<Vec<Seat>, DbError> {
    let dialect = Dialect::of(conn);
    let mine = if bookings.is_empty() {
        String::new()
    } else {
        format!(
            "{} UNION ALL ",
            rows_with(
                dialect,
                SEAT_COLUMNS,
                "tickets",
                "booking_id",
                3,
                bookings.len(),
                "text",
                Lock::No
            )
        )
    };
    let sql = format!(
        "{mine}SELECT {SEAT_COLUMNS} FROM (SELECT {SEAT_COLUMNS} FROM tickets
             WHERE event_id = $1 AND status = 'AVAILABLE' AND booking_id IS NULL ORDER BY ticket_id LIMIT $2) AS f"
    );
    let q = sqlx::query(&sql)
        .bind(event_id)
        .bind(free)
        .bind_list(dialect, bookings);
    let rows = q.fetch_all(conn).await?;
    Ok(rows.iter().map(seat_from_row).collect::<Result<_, _>>()?)
}

/// Rows per statement when writing seats: far below either database's
/// limit on bound values.
const SEATS_PER_STATEMENT: usize = 500;

/// New ticket rows of `event_id`, a statement per few hundred.
pub async fn insert_seats(conn: &mut AnyConnection, event_id: i64, seats: &[Seat]) -> Result<(), DbError> {
    let now = time::now();
    if seats.is_empty() {
        return Ok(());
    }
    if Dialect::of(conn) == Dialect::Postgres {
        // One text for every batch size (see `ticketer_db::lists`).
        let column = |f: fn(&Seat) -> Option<&str>| nullable_array_literal(seats.iter().map(f));
        sqlx::query(
            "INSERT INTO tickets (ticket_id, event_id, status, booking_id, customer_id, hold_expires_at,
                 created_at, updated_at)
             SELECT id, $1, status, booking, customer, expires, $6, $6
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $7::text[])
                  AS v(id, status, booking, customer, expires)",
        )
        .bind(event_id)
        .bind(column(|s| Some(&s.ticket_id)))
        .bind(column(|s| Some(s.status.as_str())))
        .bind(column(|s| s.booking_id.as_deref()))
        .bind(column(|s| s.customer_id.as_deref()))
        .bind(&now)
        .bind(column(|s| s.hold_expires_at.as_deref()))
        .execute(&mut *conn)
        .await?;
        return Ok(());
    }
    for chunk in seats.chunks(SEATS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO tickets (ticket_id, event_id, status, booking_id, customer_id, hold_expires_at,
                 created_at, updated_at)
             VALUES {}",
            value_rows(chunk.len(), 8)
        );
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q
                .bind(&s.ticket_id)
                .bind(event_id)
                .bind(s.status.as_str())
                .bind(&s.booking_id)
                .bind(&s.customer_id)
                .bind(&s.hold_expires_at)
                .bind(now.clone())
                .bind(now.clone());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Stores the new state of existing ticket rows, a statement per few hundred.
pub async fn update_seats(conn: &mut AnyConnection, seats: &[Seat]) -> Result<(), DbError> {
    let now = time::now();
    if seats.is_empty() {
        return Ok(());
    }
    if Dialect::of(conn) == Dialect::Postgres {
        // One text for every batch size (see `ticketer_db::lists`).
        let column = |f: fn(&Seat) -> Option<&str>| nullable_array_literal(seats.iter().map(f));
        // Every writer of an event's tickets holds its inventory row
        // (`lock`), so each row is found by its address.
        let seats_given = probed(
            "tickets",
            "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
             AS v(id, status, booking, customer, expires)",
            "v",
            "ticket_id = v.id",
        );
        let sql = format!(
            "UPDATE tickets SET status = v.status, booking_id = v.booking, customer_id = v.customer,
                 hold_expires_at = v.expires, version = tickets.version + 1, updated_at = $6
             FROM {seats_given}
             WHERE tickets.ctid = v.row_id"
        );
        sqlx::query(&sql)
            .bind(column(|s| Some(&s.ticket_id)))
            .bind(column(|s| Some(s.status.as_str())))
            .bind(column(|s| s.booking_id.as_deref()))
            .bind(column(|s| s.customer_id.as_deref()))
            .bind(column(|s| s.hold_expires_at.as_deref()))
            .bind(&now)
            .execute(&mut *conn)
            .await?;
        return Ok(());
    }
    for chunk in seats.chunks(SEATS_PER_STATEMENT) {
        // VALUES columns are column1, column2, ... on both dialects.
        let sql = format!(
            "UPDATE tickets SET status = v.column2, booking_id = v.column3, customer_id = v.column4,
                 hold_expires_at = v.column5, version = tickets.version + 1, updated_at = v.column6
             FROM (VALUES {}) AS v
             WHERE tickets.ticket_id = v.column1",
            value_rows(chunk.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q
                .bind(&s.ticket_id)
                .bind(s.status.as_str())
                .bind(&s.booking_id)
                .bind(&s.customer_id)
                .bind(&s.hold_expires_at)
                .bind(now.clone());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

mod tickets;
pub use tickets::{ticket, tickets_where, Ticket, TicketFilter};
