//! Tickets as their owners and organizers read them.

use ticketer_db::{Db, DbError, Row};

/// A ticket as its owner or organizer sees it.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub ticket_id: String,
    pub event_id: i64,
    pub status: String,
    pub booking_id: Option<String>,
    pub customer_id: Option<String>,
    pub hold_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const TICKET_COLUMNS: &str =
    "ticket_id, event_id, status, booking_id, customer_id, hold_expires_at, created_at, updated_at";

fn ticket_from_row(r: &ticketer_db::AnyRow) -> Result<Ticket, sqlx::Error> {
    Ok(Ticket {
        ticket_id: r.try_get("ticket_id")?,
        event_id: r.try_get("event_id")?,
        status: r.try_get("status")?,
        booking_id: r.try_get("booking_id")?,
        customer_id: r.try_get("customer_id")?,
        hold_expires_at: r.try_get("hold_expires_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub async fn ticket(db: &Db, ticket_id: &str) -> Result<Option<Ticket>, DbError> {
    let row = sqlx::query(&format!(
        "SELECT {TICKET_COLUMNS} FROM tickets WHERE ticket_id = $1"
    ))
    .bind(ticket_id)
    .fetch_optional(db.reader())
    .await?;
    Ok(row.as_ref().map(ticket_from_row).transpose()?)
}

/// One page of tickets where `column` equals `value`, newest first.
pub async fn tickets_where(
    db: &Db,
    column: TicketFilter,
    value: &str,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Ticket>, i64), DbError> {
    let (filter, cast) = match column {
        TicketFilter::Customer => ("customer_id = $1", false),
        TicketFilter::Event => ("event_id = $1", true),
    };
    let count_sql = format!("SELECT COUNT(*) FROM tickets WHERE {filter}");
    let page_sql = format!(
        "SELECT {TICKET_COLUMNS} FROM tickets WHERE {filter} ORDER BY created_at DESC, ticket_id LIMIT $2 OFFSET $3"
    );
    let (total, rows) = if cast {
        let id: i64 = value
            .parse()
            .map_err(|_| sqlx::Error::Decode("event id".into()))?;
        let (total,): (i64,) = sqlx::query_as(&count_sql).bind(id).fetch_one(db.reader()).await?;
        let rows = sqlx::query(&page_sql)
            .bind(id)
            .bind(limit)
            .bind(offset)
            .fetch_all(db.reader())
            .await?;
        (total, rows)
    } else {
        let (total,): (i64,) = sqlx::query_as(&count_sql)
            .bind(value)
            .fetch_one(db.reader())
            .await?;
        let rows = sqlx::query(&page_sql)
            .bind(value)
            .bind(limit)
            .bind(offset)
            .fetch_all(db.reader())
            .await?;
        (total, rows)
    };
    let tickets = rows.iter().map(ticket_from_row).collect::<Result<_, _>>()?;
    Ok((tickets, total))
}

#[derive(Debug, Clone, Copy)]
pub enum TicketFilter {
    Customer,
    Event,
}
