//! The booking saga's commands: hold seats, turn a hold into a sale, give
//! seats back; and the payment service's PaymentSucceeded, which sells the
//! booking's hold like a ReserveTickets but is answered only when the sale
//! cannot be made (the saga confirmed the booking on the same news). A batch runs inside the consumer's transaction with each
//! event's inventory row locked once, so seats are counted exactly once
//! however many holds for the same event arrive together; the seats are
//! worked out in memory ([`crate::sale`]) and written back set-wise, and
//! the answers go out through the outbox in the same transaction.
//!
//! Every command is keyed by booking: a repeated hold answers with the
//! seats the booking already has, a repeated reserve or release finds
//! nothing left to change. A payment's news names no event: its event is
//! the one the booking's tickets belong to, and a booking with no tickets
//! here (its hold expired and was swept, which the saga heard then, or was
//! released) has nothing to sell.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{
    incoming, HoldRefusal, HoldTickets, Message, Money, PaymentSucceeded, ReleaseReason, ReleaseTickets,
    ReserveRefusal, ReserveTickets, TicketsHeld, TicketsHoldFailed, TicketsReleased, TicketsReserveFailed,
    TicketsReserved,
};
use ticketer_db::{enqueue, time, uuid_of, AnyConnection, Db, DbError, Outbound};
use uuid::Uuid;

use crate::{
    lifecycle::InvalidTransition,
    sale::{EventSale, Hold, Reserve},
    store::{self, SaleStatus},
};

incoming!(
    /// What the booking saga asks of the ticket service, and the payment
    /// news that sells a hold (variants are named after the message types).
    enum TicketCommand {
        HoldTickets,
        ReserveTickets,
        ReleaseTickets,
        PaymentSucceeded,
    }
);

/// What the direct holds' spans name as their consumer.
pub(crate) const HOLDS_CONSUMER: &str = "ticket.holds";

/// A hold refused for want of seats.
fn is_sold_out(answer: &Envelope) -> bool {
    answer.kind == TicketsHoldFailed::KIND
        && serde_json::from_value::<TicketsHoldFailed>(answer.payload.clone())
            .is_ok_and(|f| f.reason == HoldRefusal::SoldOut)
}

#[derive(Clone)]
pub struct TicketCommands {
    /// How long a hold lasts (TICKET_HOLD_TTL_SECONDS).
    pub hold_ttl: chrono::Duration,
}

fn uuids(ids: &[String]) -> Result<Vec<Uuid>, DbError> {
    ids.iter().map(|id| uuid_of(id)).collect()
}

fn hold_failed(cmd: &HoldTickets, reason: HoldRefusal) -> TicketsHoldFailed {
    TicketsHoldFailed {
        booking_id: cmd.booking_id,
        event_id: cmd.event_id,
        reason,
    }
}

fn broken(e: InvalidTransition) -> HandleError {
    HandleError::Permanent(e.to_string())
}

impl TicketCommand {
    /// None for a payment's news, which names no event.
    fn event_id(&self) -> Option<i64> {
        match self {
            TicketCommand::HoldTickets(c) => Some(c.event_id),
            TicketCommand::ReserveTickets(c) => Some(c.event_id),
            TicketCommand::ReleaseTickets(c) => Some(c.event_id),
            TicketCommand::PaymentSucceeded(_) => None,
        }
    }

    fn booking_id(&self) -> Uuid {
        match self {
            TicketCommand::HoldTickets(c) => c.booking_id,
            TicketCommand::ReserveTickets(c) => c.booking_id,
            TicketCommand::ReleaseTickets(c) => c.booking_id,
            TicketCommand::PaymentSucceeded(c) => c.0.booking_id,
        }
    }
}

impl TicketCommands {
    /// One event's commands of a batch: the inventory locked once, the
    /// seats they concern read once, every command worked out in memory
    /// ([`EventSale`]), then the rows and counters written back.
    #[tracing::instrument(skip_all, fields(event_id = event_id, commands = cmds.len()))]
    async fn for_event(
        &self,
        tx: &mut AnyConnection,
        event_id: i64,
        cmds: Vec<(&Envelope, TicketCommand)>,
        replies: &mut Vec<Outbound>,
    ) -> Result<(), HandleError> {
        let Some(inv) = store::lock(tx, event_id).await? else {
            // Nothing of this event is on sale here.
            for (msg, cmd) in cmds {
                let answer = match cmd {
                    TicketCommand::HoldTickets(c) => {
                        Outbound::new(&hold_failed(&c, HoldRefusal::EventNotOnSale))
                    }
                    TicketCommand::ReserveTickets(c) => Outbound::new(&TicketsReserveFailed {
                        booking_id: c.booking_id,
                        event_id,
                        reason: ReserveRefusal::HoldExpired,
                    }),
                    TicketCommand::ReleaseTickets(_) | TicketCommand::PaymentSucceeded(_) => continue,
                };
                replies.push(answer.caused_by(msg));
            }
            return Ok(());
        };
        let mut bookings: Vec<String> = cmds.iter().map(|(_, c)| c.booking_id().to_string()).collect();
        bookings.sort_unstable();
        bookings.dedup();
        let wanted: i64 = cmds
            .iter()
            .map(|(_, c)| match c {
                TicketCommand::HoldTickets(h) => h.quantity,
                _ => 0,
            })
            .sum();
        let seats = store::seats(tx, event_id, &bookings, wanted).await?;
        let mut sale = EventSale::new(inv.counters, seats);
        let on_sale = inv.status == SaleStatus::OnSale;
        let now_at = Utc::now();
        let now = time::format(now_at);
        let expires_at: DateTime<Utc> = now_at + self.hold_ttl;
        let expires = time::format(expires_at);
        let price = |n: usize| Money::from_minor(inv.price_minor * n as i64);
        for (msg, cmd) in cmds {
            let answer = match cmd {
                TicketCommand::HoldTickets(c) => {
                    let booking = c.booking_id.to_string();
                    let held = |ids: Vec<String>, until: DateTime<Utc>| {
                        Ok::<_, DbError>(TicketsHeld {
                            booking_id: c.booking_id,
                            event_id,
                            amount: price(ids.len()),
                            ticket_ids: uuids(&ids)?,
                            currency: inv.currency.clone(),
                            hold_expires_at: until,
                            charge: c.charge.clone(),
                        })
                    };
                    // Asked again (the saga retried): answer with what it
                    // already holds, or bought (no time left in that hold:
                    // the saga then asks for the sale, which is made).
                    if let Some((ids, until)) = sale.holding(&booking) {
                        let until = until
                            .as_deref()
                            .map(time::parse)
                            .transpose()
                            .map_err(DbError::from)?;
                        Outbound::new(&held(ids, until.unwrap_or(now_at))?)
                    } else if !on_sale {
                        Outbound::new(&hold_failed(&c, HoldRefusal::EventNotOnSale))
                    } else {
                        let customer = c.customer_id.to_string();
                        let new_id = || Uuid::now_v7().to_string();
                        match sale
                            .hold(&booking, &customer, c.quantity, &expires, new_id)
                            .map_err(broken)?
                        {
                            Hold::Held { ticket_ids, .. } => Outbound::new(&held(ticket_ids, expires_at)?),
                            Hold::SoldOut => Outbound::new(&hold_failed(&c, HoldRefusal::SoldOut)),
                        }
                    }
                }
                TicketCommand::ReserveTickets(_) | TicketCommand::PaymentSucceeded(_) => {
                    let booking_id = cmd.booking_id();
                    let asked = matches!(cmd, TicketCommand::ReserveTickets(_));
                    match sale
                        .reserve(&booking_id.to_string(), &now, inv.status != SaleStatus::Cancelled)
                        .map_err(broken)?
                    {
                        Reserve::Sold(ids) if asked => Outbound::new(&TicketsReserved {
                            booking_id,
                            event_id,
                            ticket_ids: uuids(&ids)?,
                        }),
                        // The saga confirmed on the same news: silence is its answer.
                        Reserve::Sold(_) => continue,
                        Reserve::HoldExpired => Outbound::new(&TicketsReserveFailed {
                            booking_id,
                            event_id,
                            reason: ReserveRefusal::HoldExpired,
                        }),
                    }
                }
                TicketCommand::ReleaseTickets(c) => {
                    let ids = sale.release(&c.booking_id.to_string()).map_err(broken)?;
                    if ids.is_empty() {
                        continue;
                    }
                    Outbound::new(&TicketsReleased {
                        booking_id: c.booking_id,
                        event_id,
                        ticket_ids: uuids(&ids)?,
                        reason: ReleaseReason::Released,
                    })
                }
            };
            replies.push(answer.caused_by(msg));
        }
        let (created, changed, counters) = sale.into_writes();
        store::insert_seats(tx, event_id, &created).await?;
        store::update_seats(tx, &changed).await?;
        if let Some(counters) = counters {
            store::update(tx, &store::Inventory { counters, ..inv }).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for TicketCommands {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        self.handle_all(tx, &[msg]).await
    }

    /// Every answer goes to the outbox in one statement.
    async fn handle_all(&self, tx: &mut AnyConnection, msgs: &[&Envelope]) -> Result<(), HandleError> {
        let replies = self.answer_all(tx, msgs).await?;
        Ok(enqueue(tx, &replies).await?)
    }
}

impl TicketCommands {
    /// Holds asked for directly by the booking service ([`crate::holds`]):
    /// applied as if they had come from the queue, in one transaction of
    /// their own, and their answers returned; also sent through the outbox
    /// when `publish` (otherwise the caller passes them on). A hold asked
    /// again (the caller lost the answer, or its saga timed out waiting) is
    /// answered with the seats it already has, and sent on then.
    ///
    /// Except SOLD_OUT, unless `answer_sold_out`: that one is left
    /// unanswered, and the booking service then sends the hold through the
    /// queue. Seats given back travel that way (a failed booking's
    /// ReleaseTickets), so a hold asked directly could overtake the release
    /// of the very seat it wants; in the queue it comes after it, as
    /// before. The booking service asks for the answer when it knows no
    /// release of the event's seats can be on its way.
    pub(crate) async fn hold_now(
        &self,
        db: &Db,
        holds: &[Envelope],
        answer_sold_out: bool,
        publish: bool,
    ) -> Result<Vec<Envelope>, HandleError> {
        let msgs: Vec<&Envelope> = holds.iter().collect();
        let (spans, traced) = ticketer_db::traced(HOLDS_CONSUMER, &msgs);
        let msgs: Vec<&Envelope> = traced.iter().collect();
        let mut tx = db.begin().await?;
        let replies: Vec<Outbound> = self
            .answer_all(&mut tx, &msgs)
            .await?
            .into_iter()
            .filter(|r| answer_sold_out || !r.envelope().is_some_and(is_sold_out))
            .collect();
        if publish {
            enqueue(&mut tx, &replies).await?;
        }
        tx.commit().await.map_err(DbError::from)?;
        drop(spans);
        if publish {
            db.outbox_written();
        }
        Ok(replies.iter().filter_map(|r| r.envelope().cloned()).collect())
    }

    /// A batch's commands grouped by event (events in id order, so two
    /// batches lock inventories in the same order), each event's in
    /// delivery order, and their answers in that order. The payments'
    /// events are looked up in one statement first.
    async fn answer_all(
        &self,
        tx: &mut AnyConnection,
        msgs: &[&Envelope],
    ) -> Result<Vec<Outbound>, HandleError> {
        let mut cmds = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let Some(cmd) = msg.decode::<TicketCommand>()? else {
                return Err(HandleError::Permanent(format!(
                    "the ticket service does not handle {}",
                    msg.kind
                )));
            };
            if let TicketCommand::HoldTickets(c) = &cmd {
                if !(1..=100).contains(&c.quantity) {
                    return Err(HandleError::Permanent(format!(
                        "cannot hold {} tickets",
                        c.quantity
                    )));
                }
            }
            cmds.push((*msg, cmd));
        }
        let paid: Vec<String> = cmds
            .iter()
            .filter(|(_, c)| c.event_id().is_none())
            .map(|(_, c)| c.booking_id().to_string())
            .collect();
        let events_of_paid = if paid.is_empty() {
            Default::default()
        } else {
            store::events_of(tx, &paid).await?
        };
        let mut by_event: BTreeMap<i64, Vec<(&Envelope, TicketCommand)>> = BTreeMap::new();
        for (msg, cmd) in cmds {
            let event = cmd
                .event_id()
                .or_else(|| events_of_paid.get(&cmd.booking_id().to_string()).copied());
            if let Some(event_id) = event {
                by_event.entry(event_id).or_default().push((msg, cmd));
            }
        }
        let mut replies = Vec::with_capacity(msgs.len());
        for (event_id, cmds) in by_event {
            self.for_event(tx, event_id, cmds, &mut replies).await?;
        }
        Ok(replies)
    }
}

/// Gives back seats whose hold ran out, a booking at a time, and tells the
/// saga (TicketsReleased with reason HOLD_EXPIRED). Safe to run on several
/// replicas: each booking is handled under its event's inventory lock and
/// only tickets still held move.
#[tracing::instrument(skip(db))]
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
        let Some(inv) = store::lock(&mut tx, event_id).await? else {
            continue;
        };
        // Through the sale's own rules: only seats still held, and expired
        // by now, go back (a sale or release in between leaves nothing).
        let seats = store::seats(&mut tx, event_id, std::slice::from_ref(&booking), 0).await?;
        let mut sale = EventSale::new(inv.counters, seats);
        let released = match sale.expire(&booking, &time::now()) {
            Ok(ids) if !ids.is_empty() => ids,
            Ok(_) => continue,
            Err(e) => {
                tracing::error!(%booking, error = %e, "an expired hold breaks the ticket lifecycle; left as it is");
                continue;
            }
        };
        let (_, changed, counters) = sale.into_writes();
        store::update_seats(&mut tx, &changed).await?;
        if let Some(counters) = counters {
            store::update(&mut tx, &store::Inventory { counters, ..inv }).await?;
        }
        let booking_id = uuid_of(&booking)?;
        let done = TicketsReleased {
            booking_id,
            event_id,
            ticket_ids: uuids(&released)?,
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
            // A full batch means more may be due: go again at once,
            // unless asked to stop.
            Ok(500) if !shutdown.is_cancelled() => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "releasing expired holds failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
