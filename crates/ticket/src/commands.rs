//! The booking saga's commands: hold seats, turn a hold into a sale, give
//! seats back. Each runs inside the consumer's batch transaction with the
//! event's inventory row locked, so seats are counted exactly once however
//! many holds for the same event arrive together; the answer goes out
//! through the outbox in the same transaction.
//!
//! Every command is keyed by booking: a repeated hold answers with the
//! seats the booking already has, a repeated reserve or release finds
//! nothing left to change.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{
    incoming, HoldRefusal, HoldTickets, Money, ReleaseReason, ReleaseTickets, ReserveRefusal, ReserveTickets,
    TicketsHeld, TicketsHoldFailed, TicketsReleased, TicketsReserveFailed, TicketsReserved,
};
use ticketer_db::{enqueue, reply, time, AnyConnection, Dialect, Outbound};
use uuid::Uuid;

use crate::store::{self, SaleStatus};

incoming!(
    /// What the booking saga asks of the ticket service (variants are
    /// named after the message types, suffix and all).
    #[allow(clippy::enum_variant_names)]
    enum TicketCommand {
        HoldTickets,
        ReserveTickets,
        ReleaseTickets,
    }
);

pub struct TicketCommands {
    pub dialect: Dialect,
    pub hold_ttl: Duration,
}

fn uuids(ids: &[String]) -> Vec<Uuid> {
    ids.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect()
}

fn hold_failed(cmd: &HoldTickets, reason: HoldRefusal) -> TicketsHoldFailed {
    TicketsHoldFailed {
        booking_id: cmd.booking_id,
        event_id: cmd.event_id,
        reason,
    }
}

impl TicketCommands {
    async fn hold(
        &self,
        tx: &mut AnyConnection,
        msg: &Envelope,
        cmd: HoldTickets,
    ) -> Result<(), HandleError> {
        let booking = cmd.booking_id.to_string();
        let Some(inv) = store::lock(tx, self.dialect, cmd.event_id)
            .await
            .map_err(HandleError::transient)?
        else {
            return reply(tx, msg, &hold_failed(&cmd, HoldRefusal::EventNotOnSale)).await;
        };
        // Asked again (the saga retried): answer with what it already holds.
        let existing = store::tickets_of(tx, &booking)
            .await
            .map_err(HandleError::transient)?;
        let holding: Vec<&store::BookedTicket> = existing.iter().filter(|t| t.status == "HELD").collect();
        if !holding.is_empty() {
            let ids: Vec<String> = holding.iter().map(|t| t.ticket_id.clone()).collect();
            let expires = holding[0]
                .hold_expires_at
                .as_deref()
                .map(time::parse)
                .transpose()
                .map_err(HandleError::transient)?;
            let held = TicketsHeld {
                booking_id: cmd.booking_id,
                event_id: cmd.event_id,
                ticket_ids: uuids(&ids),
                amount: Money::from_minor(inv.price_minor * ids.len() as i64),
                currency: inv.currency.clone(),
                hold_expires_at: expires.unwrap_or_else(Utc::now),
            };
            return reply(tx, msg, &held).await;
        }
        if inv.status != SaleStatus::OnSale {
            return reply(tx, msg, &hold_failed(&cmd, HoldRefusal::EventNotOnSale)).await;
        }
        let Some(counters) = inv.counters.hold(cmd.quantity) else {
            return reply(tx, msg, &hold_failed(&cmd, HoldRefusal::SoldOut)).await;
        };
        let expires_at: DateTime<Utc> =
            Utc::now() + chrono::Duration::from_std(self.hold_ttl).map_err(HandleError::transient)?;
        let ids = store::hold_seats(
            tx,
            cmd.event_id,
            cmd.quantity,
            &booking,
            &cmd.customer_id.to_string(),
            &time::format(expires_at),
        )
        .await
        .map_err(HandleError::transient)?;
        let amount = inv.price_minor * cmd.quantity;
        store::update(
            tx,
            &store::Inventory {
                counters,
                ..inv.clone()
            },
        )
        .await
        .map_err(HandleError::transient)?;
        let held = TicketsHeld {
            booking_id: cmd.booking_id,
            event_id: cmd.event_id,
            ticket_ids: uuids(&ids),
            amount: Money::from_minor(amount),
            currency: inv.currency,
            hold_expires_at: expires_at,
        };
        reply(tx, msg, &held).await
    }

    async fn reserve(
        &self,
        tx: &mut AnyConnection,
        msg: &Envelope,
        cmd: ReserveTickets,
    ) -> Result<(), HandleError> {
        let booking = cmd.booking_id.to_string();
        let Some(inv) = store::lock(tx, self.dialect, cmd.event_id)
            .await
            .map_err(HandleError::transient)?
        else {
            let r = TicketsReserveFailed {
                booking_id: cmd.booking_id,
                event_id: cmd.event_id,
                reason: ReserveRefusal::HoldExpired,
            };
            return reply(tx, msg, &r).await;
        };
        let tickets = store::tickets_of(tx, &booking)
            .await
            .map_err(HandleError::transient)?;
        let now = time::now();
        let live_hold = tickets
            .iter()
            .any(|t| t.status == "HELD" && t.hold_expires_at.as_deref().is_some_and(|e| e > now.as_str()));
        let already_sold: Vec<String> = tickets
            .iter()
            .filter(|t| t.status == "SOLD")
            .map(|t| t.ticket_id.clone())
            .collect();
        if !already_sold.is_empty() && !live_hold {
            let done = TicketsReserved {
                booking_id: cmd.booking_id,
                event_id: cmd.event_id,
                ticket_ids: uuids(&already_sold),
            };
            return reply(tx, msg, &done).await;
        }
        if !live_hold || inv.status == SaleStatus::Cancelled {
            // Expired (perhaps not swept yet): give the seats back now.
            let released = store::move_tickets(tx, &booking, "HELD", "AVAILABLE")
                .await
                .map_err(HandleError::transient)?;
            if !released.is_empty() {
                let counters = inv.counters.release(released.len() as i64, 0);
                store::update(
                    tx,
                    &store::Inventory {
                        counters,
                        ..inv.clone()
                    },
                )
                .await
                .map_err(HandleError::transient)?;
            }
            let r = TicketsReserveFailed {
                booking_id: cmd.booking_id,
                event_id: cmd.event_id,
                reason: ReserveRefusal::HoldExpired,
            };
            return reply(tx, msg, &r).await;
        }
        let sold = store::move_tickets(tx, &booking, "HELD", "SOLD")
            .await
            .map_err(HandleError::transient)?;
        let counters = inv.counters.sell(sold.len() as i64);
        store::update(tx, &store::Inventory { counters, ..inv })
            .await
            .map_err(HandleError::transient)?;
        let done = TicketsReserved {
            booking_id: cmd.booking_id,
            event_id: cmd.event_id,
            ticket_ids: uuids(&sold),
        };
        reply(tx, msg, &done).await
    }

    async fn release(
        &self,
        tx: &mut AnyConnection,
        msg: &Envelope,
        cmd: ReleaseTickets,
    ) -> Result<(), HandleError> {
        let booking = cmd.booking_id.to_string();
        let Some(inv) = store::lock(tx, self.dialect, cmd.event_id)
            .await
            .map_err(HandleError::transient)?
        else {
            return Ok(());
        };
        let was_held = store::move_tickets(tx, &booking, "HELD", "AVAILABLE")
            .await
            .map_err(HandleError::transient)?;
        let was_sold = store::move_tickets(tx, &booking, "SOLD", "AVAILABLE")
            .await
            .map_err(HandleError::transient)?;
        if was_held.is_empty() && was_sold.is_empty() {
            return Ok(());
        }
        let counters = inv.counters.release(was_held.len() as i64, was_sold.len() as i64);
        store::update(tx, &store::Inventory { counters, ..inv })
            .await
            .map_err(HandleError::transient)?;
        let ids: Vec<String> = was_held.into_iter().chain(was_sold).collect();
        let done = TicketsReleased {
            booking_id: cmd.booking_id,
            event_id: cmd.event_id,
            ticket_ids: uuids(&ids),
            reason: ReleaseReason::Released,
        };
        reply(tx, msg, &done).await
    }
}

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for TicketCommands {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        match msg.decode::<TicketCommand>()? {
            Some(TicketCommand::HoldTickets(cmd)) => {
                if !(1..=100).contains(&cmd.quantity) {
                    return Err(HandleError::Permanent(format!(
                        "cannot hold {} tickets",
                        cmd.quantity
                    )));
                }
                self.hold(tx, msg, cmd).await
            }
            Some(TicketCommand::ReserveTickets(cmd)) => self.reserve(tx, msg, cmd).await,
            Some(TicketCommand::ReleaseTickets(cmd)) => self.release(tx, msg, cmd).await,
            None => Err(HandleError::Permanent(format!(
                "the ticket service does not handle {}",
                msg.kind
            ))),
        }
    }
}

/// Gives back seats whose hold ran out, a booking at a time, and tells the
/// saga (TicketsReleased with reason HOLD_EXPIRED). Safe to run on several
/// replicas: each booking is handled under its event's inventory lock and
/// only tickets still held move.
pub async fn expire_holds(db: &ticketer_db::Db, limit: i64) -> Result<usize, ticketer_db::DbError> {
    let due: Vec<(i64, String)> = sqlx::query_as(
        "SELECT DISTINCT event_id, booking_id FROM tickets
         WHERE status = 'HELD' AND hold_expires_at <= $1 AND booking_id IS NOT NULL
         LIMIT $2",
    )
    .bind(time::now())
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    let mut expired = 0;
    for (event_id, booking) in due {
        let mut tx = db.begin().await?;
        let Some(inv) = store::lock(&mut tx, db.dialect(), event_id).await? else {
            continue;
        };
        let tickets = store::tickets_of(&mut tx, &booking).await?;
        let now = time::now();
        let still_due = tickets
            .iter()
            .any(|t| t.status == "HELD" && t.hold_expires_at.as_deref().is_some_and(|e| e <= now.as_str()));
        if !still_due {
            continue;
        }
        let released = store::move_tickets(&mut tx, &booking, "HELD", "AVAILABLE").await?;
        let counters = inv.counters.release(released.len() as i64, 0);
        store::update(&mut tx, &store::Inventory { counters, ..inv }).await?;
        let Ok(booking_id) = Uuid::parse_str(&booking) else {
            continue;
        };
        let done = TicketsReleased {
            booking_id,
            event_id,
            ticket_ids: uuids(&released),
            reason: ReleaseReason::HoldExpired,
        };
        enqueue(&mut tx, &[Outbound::new(&done).correlated(booking_id)]).await?;
        tx.commit().await?;
        expired += 1;
    }
    if expired > 0 {
        db.outbox_written();
        tracing::info!(bookings = expired, "expired holds released");
    }
    Ok(expired)
}

/// Runs [`expire_holds`] every `every` until `shutdown`.
pub async fn run_expiry(db: ticketer_db::Db, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        match expire_holds(&db, 500).await {
            // A full batch means more may be due: go again at once.
            Ok(500) => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "releasing expired holds failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
