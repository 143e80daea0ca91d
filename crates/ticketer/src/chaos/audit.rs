//! After the nemesis: the services' own records read straight from their
//! databases and the broker, and checked against the promises (every
//! accepted booking final, no seat sold twice or beyond the capacity, no
//! money kept without a seat, every hold released, nothing stuck in an
//! outbox or a queue, every dead letter explained).

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::Row;
use ticketer_bus::{topology, Bus, Envelope};
use ticketer_db::Db;

/// The services' records after a run, as figures; all but the counts of
/// bookings must be zero (or empty) for a clean run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Audit {
    /// Bookings the services accepted.
    pub bookings: usize,
    pub confirmed: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// Failed bookings by the reason they were given.
    pub failed_by_reason: std::collections::BTreeMap<String, usize>,
    /// Accepted bookings whose saga has not reached CONFIRMED, FAILED or
    /// CANCELLED.
    pub unfinished: usize,
    /// Seats given beyond the capacity or to two bookings.
    pub oversold: i64,
    /// Seats on which the ticket records, the booking records and the
    /// inventory counters disagree.
    pub seats_disagreeing: i64,
    /// Seats by which the public availability figure (through the gateway)
    /// differs from the inventory counters, available, held and sold
    /// together (set by the runner).
    pub availability_off_by: i64,
    /// Payments that stand as taken for a booking without its seats
    /// (failed or cancelled and not refunded), or for no booking at all.
    pub charged_without_seat: usize,
    /// Confirmed bookings without a standing payment.
    pub confirmed_unpaid: usize,
    /// Charges still PROCESSING: the provider's answer not recorded.
    pub charges_processing: usize,
    /// Final bookings whose customer was not told of their outcome
    /// (BOOKING_CONFIRMED, BOOKING_FAILED or BOOKING_CANCELLED missing).
    pub notifications_missing: usize,
    /// Notifications stored twice for the same booking and kind.
    pub notifications_duplicated: usize,
    /// Notifications still waiting to be sent.
    pub notifications_pending: i64,
    /// Seats still held once everything settled.
    pub holds_left: i64,
    /// Seats held past their expiry plus a sweep, at worst, while the
    /// system drained (set by the runner).
    pub overdue_holds: i64,
    /// Outbox rows not yet published, over every service.
    pub outbox_pending: i64,
    /// Messages waiting in a queue that is not a dead-letter queue.
    pub queued: u32,
    /// Messages that were dead-lettered, with why.
    pub dead_letters: Vec<DeadLetterSeen>,
    /// Dead letters without a reason.
    pub dead_letters_unexplained: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterSeen {
    pub queue: String,
    pub kind: String,
    pub reason: String,
}

impl Audit {
    /// Nothing left to happen: what the drain waits for.
    pub fn settled(&self) -> bool {
        self.unfinished == 0
            && self.holds_left == 0
            && self.charges_processing == 0
            && self.notifications_pending == 0
            && self.notifications_missing == 0
            && self.outbox_pending == 0
            && self.queued == 0
    }

    /// Every promise kept.
    pub fn clean(&self) -> bool {
        self.settled()
            && self.oversold == 0
            && self.seats_disagreeing == 0
            && self.availability_off_by == 0
            && self.charged_without_seat == 0
            && self.confirmed_unpaid == 0
            && self.notifications_duplicated == 0
            && self.overdue_holds == 0
            && self.dead_letters_unexplained == 0
    }
}

/// The databases and the bus of one run.
pub struct Records {
    pub booking: Db,
    pub ticket: Db,
    pub payment: Db,
    pub notification: Db,
    /// Every service's database, for outboxes and kept dead letters.
    pub all: Vec<(String, Db)>,
    pub bus: Bus,
}

const FINAL_STAGES: [&str; 3] = ["CONFIRMED", "FAILED", "CANCELLED"];

struct Booking {
    status: String,
    stage: String,
    tickets: i64,
    ticket_ids: Vec<String>,
}

/// The audit of `event_id`, `capacity` seats.
pub async fn audit(records: &Records, event_id: i64, capacity: i64) -> anyhow::Result<Audit> {
    let mut a = Audit::default();

    let rows = sqlx::query(
        "SELECT booking_id, status, stage, number_of_tickets, ticket_ids, failure_reason
         FROM bookings WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_all(records.booking.pool())
    .await?;
    let mut bookings: HashMap<String, Booking> = HashMap::new();
    for row in rows {
        let ids: String = row.try_get("ticket_ids")?;
        if let Some(reason) = row.try_get::<Option<String>, _>("failure_reason")? {
            *a.failed_by_reason.entry(reason).or_default() += 1;
        }
        bookings.insert(
            row.try_get("booking_id")?,
            Booking {
                status: row.try_get("status")?,
                stage: row.try_get("stage")?,
                tickets: row.try_get("number_of_tickets")?,
                ticket_ids: serde_json::from_str(&ids).unwrap_or_default(),
            },
        );
    }
    a.bookings = bookings.len();
    for b in bookings.values() {
        match b.status.as_str() {
            "CONFIRMED" => a.confirmed += 1,
            "FAILED" => a.failed += 1,
            "CANCELLED" => a.cancelled += 1,
            _ => {}
        }
        if !FINAL_STAGES.contains(&b.stage.as_str()) {
            a.unfinished += 1;
        }
    }

    seats(records, event_id, capacity, &bookings, &mut a).await?;
    payments(records, &bookings, &mut a).await?;
    notifications(records, &bookings, &mut a).await?;

    for (_, db) in &records.all {
        let pending: i64 = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
            .fetch_one(db.pool())
            .await?
            .try_get("n")?;
        a.outbox_pending += pending;
    }
    messages(records, &mut a).await?;
    Ok(a)
}

/// Seat for seat: the confirmed bookings' tickets, the ticket records and
/// the inventory counters.
async fn seats(
    records: &Records,
    event_id: i64,
    capacity: i64,
    bookings: &HashMap<String, Booking>,
    a: &mut Audit,
) -> anyhow::Result<()> {
    let (_, held, sold) = counters(&records.ticket, event_id).await?;
    let rows = sqlx::query("SELECT ticket_id, status, booking_id FROM tickets WHERE event_id = $1")
        .bind(event_id)
        .fetch_all(records.ticket.pool())
        .await?;
    let mut tickets: HashMap<String, (String, Option<String>)> = HashMap::new();
    for row in rows {
        tickets.insert(
            row.try_get("ticket_id")?,
            (row.try_get("status")?, row.try_get("booking_id")?),
        );
    }

    let mut given = 0i64;
    let mut seen = HashSet::new();
    for (id, b) in bookings.iter().filter(|(_, b)| b.status == "CONFIRMED") {
        given += b.ticket_ids.len() as i64;
        if b.ticket_ids.len() as i64 != b.tickets {
            a.seats_disagreeing += 1;
        }
        for t in &b.ticket_ids {
            if !seen.insert(t.as_str()) {
                a.oversold += 1;
            }
            match tickets.get(t) {
                Some((status, Some(owner))) if status == "SOLD" && owner == id => {}
                _ => a.seats_disagreeing += 1,
            }
        }
    }
    a.oversold += (given - capacity).max(0) + (sold - capacity).max(0);
    let sold_rows = tickets.values().filter(|(s, _)| s == "SOLD").count() as i64;
    for (t, (status, owner)) in &tickets {
        if status != "SOLD" {
            continue;
        }
        let listed = owner
            .as_ref()
            .and_then(|o| bookings.get(o))
            .is_some_and(|b| b.status == "CONFIRMED" && b.ticket_ids.contains(t));
        if !listed {
            a.seats_disagreeing += 1;
        }
    }
    a.seats_disagreeing += (sold_rows - sold).abs() + (given - sold).abs();
    let held_rows = tickets.values().filter(|(s, _)| s == "HELD").count() as i64;
    a.holds_left = held.max(held_rows);
    Ok(())
}

async fn payments(
    records: &Records,
    bookings: &HashMap<String, Booking>,
    a: &mut Audit,
) -> anyhow::Result<()> {
    let rows = sqlx::query("SELECT booking_id, status FROM payments")
        .fetch_all(records.payment.pool())
        .await?;
    let mut paid = HashSet::new();
    for row in rows {
        let (booking, status): (String, String) = (row.try_get("booking_id")?, row.try_get("status")?);
        a.charges_processing += usize::from(status == "PROCESSING");
        if status != "SUCCEEDED" {
            continue;
        }
        match bookings.get(&booking) {
            Some(b) if b.status == "CONFIRMED" => {
                paid.insert(booking);
            }
            _ => a.charged_without_seat += 1,
        }
    }
    a.confirmed_unpaid = bookings
        .iter()
        .filter(|(id, b)| b.status == "CONFIRMED" && !paid.contains(*id))
        .count();
    Ok(())
}

/// Every final booking's customer told of its outcome once: stored (SENT,
/// or FAILED when the customer has no address there, as the runner's
/// provisioned buyers do not) and never twice; nothing left to send.
async fn notifications(
    records: &Records,
    bookings: &HashMap<String, Booking>,
    a: &mut Audit,
) -> anyhow::Result<()> {
    let rows = sqlx::query(
        "SELECT booking_id, notification_type, COUNT(*) AS n FROM notifications
         WHERE booking_id IS NOT NULL GROUP BY booking_id, notification_type",
    )
    .fetch_all(records.notification.pool())
    .await?;
    let mut told = HashSet::new();
    for row in rows {
        let (booking, kind, n): (String, String, i64) = (
            row.try_get("booking_id")?,
            row.try_get("notification_type")?,
            row.try_get("n")?,
        );
        a.notifications_duplicated += (n - 1).max(0) as usize;
        told.insert((booking, kind));
    }
    for (id, b) in bookings {
        let Some(kind) = (match b.status.as_str() {
            "CONFIRMED" => Some("BOOKING_CONFIRMED"),
            "FAILED" => Some("BOOKING_FAILED"),
            "CANCELLED" => Some("BOOKING_CANCELLED"),
            _ => None,
        }) else {
            continue;
        };
        if !told.contains(&(id.clone(), kind.to_string())) {
            a.notifications_missing += 1;
        }
    }
    a.notifications_pending = sqlx::query("SELECT COUNT(*) AS n FROM notifications WHERE status = 'PENDING'")
        .fetch_one(records.notification.pool())
        .await?
        .try_get("n")?;
    Ok(())
}

/// Queues, dead-letter queues, and dead letters kept in the databases.
async fn messages(records: &Records, a: &mut Audit) -> anyhow::Result<()> {
    for q in topology::QUEUES {
        a.queued += records.bus.queue_depth(q.name).await?;
        for letter in records.bus.peek_dead_letters(q.name).await? {
            let kind = Envelope::from_bytes(&letter.body)
                .map(|e| e.kind)
                .unwrap_or_else(|_| "undecodable".into());
            a.dead_letters.push(DeadLetterSeen {
                queue: q.name.into(),
                kind,
                reason: letter.reason,
            });
        }
    }
    for (service, db) in &records.all {
        let kept =
            sqlx::query("SELECT consumer, routing_key, reason FROM dead_letters WHERE replayed_at IS NULL")
                .fetch_all(db.pool())
                .await?;
        for row in kept {
            let consumer: String = row.try_get("consumer")?;
            a.dead_letters.push(DeadLetterSeen {
                queue: format!("{service} database, {consumer}"),
                kind: row.try_get("routing_key")?,
                reason: row.try_get("reason")?,
            });
        }
    }
    a.dead_letters_unexplained = a
        .dead_letters
        .iter()
        .filter(|l| l.reason.trim().is_empty())
        .count();
    Ok(())
}

/// The inventory counters: available, held, sold.
pub async fn counters(ticket: &Db, event_id: i64) -> anyhow::Result<(i64, i64, i64)> {
    let row = sqlx::query("SELECT available, held, sold FROM inventory WHERE event_id = $1")
        .bind(event_id)
        .fetch_one(ticket.pool())
        .await?;
    Ok((
        row.try_get("available")?,
        row.try_get("held")?,
        row.try_get("sold")?,
    ))
}

/// Seats held past their expiry by more than `grace`: a hold the sweep
/// should have released by now.
pub async fn overdue_holds(ticket: &Db, event_id: i64, grace: std::time::Duration) -> anyhow::Result<i64> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM tickets WHERE event_id = $1 AND status = 'HELD' AND hold_expires_at < $2",
    )
    .bind(event_id)
    .bind(ticketer_db::time::ago(grace))
    .fetch_one(ticket.pool())
    .await?
    .try_get("n")?;
    Ok(n)
}
