//! The saga's moving parts: one step of a booking (pure, in memory), how
//! steps are stored with their messages, and the consumers that take the
//! steps: every answer from the ticket and payment services
//! ([`SagaDriver`]) and the events' news ([`EventMirror`]). A batch of
//! answers is applied set-wise: its bookings locked and read in one
//! statement, stepped in delivery order, and written back with every
//! message in one statement each.

use std::{collections::HashMap, sync::Mutex};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{
    incoming, BookingCancelled, BookingConfirmed, BookingCreated, BookingFailed, Charge, HoldRefusal,
    HoldTickets, PaymentFailed, PaymentFailure, PaymentRefunded, PaymentSucceeded, ProcessPayment,
    RefundPayment, ReleaseReason, ReleaseTickets, ReserveTickets, SaleNews, TicketsHeld, TicketsHoldFailed,
    TicketsReleased, TicketsReserveFailed, TicketsReserved,
};
use ticketer_db::{enqueue, time, AnyConnection, Outbound};
use uuid::Uuid;

use crate::{
    saga::{self, BookingStatus, Command, HoldFailure, Input, Stage, Timeouts},
    service::BookingView,
    store::{self, Booking},
    waiters::Waiters,
};

/// The saga's commands as outbox messages.
pub(crate) fn messages(b: &Booking, commands: Vec<Command>, cause: Option<&Envelope>) -> Vec<Outbound> {
    let (booking_id, event_id) = (b.booking_id, b.event_id);
    commands
        .into_iter()
        .map(|command| {
            let message = match command {
                Command::HoldTickets => Outbound::new(&HoldTickets {
                    booking_id,
                    event_id,
                    customer_id: b.customer_id,
                    quantity: b.number_of_tickets,
                    charge: Some(Charge {
                        customer_id: b.customer_id,
                        payment_token: b.payment.token(),
                        payment_method_id: b.payment.method(),
                    }),
                }),
                Command::ProcessPayment { amount } => Outbound::new(&ProcessPayment {
                    booking_id,
                    customer_id: b.customer_id,
                    amount,
                    currency: b.currency.clone().unwrap_or_else(|| "EUR".into()),
                    payment_token: b.payment.token(),
                    payment_method_id: b.payment.method(),
                }),
                Command::ReserveTickets { .. } => Outbound::new(&ReserveTickets { booking_id, event_id }),
                Command::ReleaseTickets { .. } => Outbound::new(&ReleaseTickets { booking_id, event_id }),
                Command::RefundPayment => Outbound::new(&RefundPayment { booking_id }),
                Command::Announce(status) => {
                    let view = BookingView::from(b);
                    match status {
                        BookingStatus::Pending => Outbound::new(&BookingCreated(view)),
                        BookingStatus::Confirmed => Outbound::new(&BookingConfirmed(view)),
                        BookingStatus::Failed => Outbound::new(&BookingFailed(view)),
                        BookingStatus::Cancelled => Outbound::new(&BookingCancelled(view)),
                    }
                }
            };
            let message = message.correlated(booking_id);
            match cause {
                Some(cause) => message.caused_by(cause),
                None => message,
            }
        })
        .collect()
}

/// One saga step on a booking in memory: its new state, and the messages
/// that go with it; None when the step changes nothing.
fn step(b: &mut Booking, input: Input, cause: Option<&Envelope>) -> Option<Vec<Outbound>> {
    let (next, commands) = saga::handle(&b.saga, input);
    if next == b.saga && commands.is_empty() {
        return None;
    }
    if b.held_at.is_none() && !next.ticket_ids.is_empty() {
        b.held_at = Some(held_at(b, cause));
    }
    b.saga = next;
    Some(messages(b, commands, cause))
}

/// When `b`'s seats were held: when the ticket service answered that it
/// held them (its answer's time), which is also when the hold's time
/// starts running, however long the news took to get here. Never before
/// the booking was made (the two services' clocks may differ a little).
fn held_at(b: &Booking, answer: Option<&Envelope>) -> String {
    let now = chrono::Utc::now();
    let held = answer.map_or(now, |a| a.occurred_at.min(now));
    match time::parse(&b.created_at) {
        Ok(created) => time::format(held.max(created)),
        Err(_) => time::format(held),
    }
}

/// When a booking in `stage` stops waiting, from now; None for a stage
/// that waits for nothing.
pub(crate) fn deadline(stage: Stage, timeouts: Timeouts) -> Option<String> {
    let wait = timeouts.of(stage)?;
    Some(time::from_now(wait))
}

/// Stores locked bookings that stepped (each still at its `version`) and
/// the messages of their steps, in one statement each; bumps the versions.
async fn store_steps(
    conn: &mut AnyConnection,
    stepped: &mut [&mut Booking],
    outbox: &[Outbound],
    timeouts: Timeouts,
) -> Result<(), HandleError> {
    // Kept in memory too: a booking settled here is answered from memory.
    let now = time::now();
    for b in stepped.iter_mut() {
        b.updated_at = now.clone();
    }
    let rows: Vec<(&Booking, Option<String>)> = stepped
        .iter()
        .map(|b| (&**b, deadline(b.saga.stage, timeouts)))
        .collect();
    if !store::advance_all(conn, &rows, &now).await? {
        return Err(HandleError::Transient("booking changed concurrently".into()));
    }
    for b in stepped.iter_mut() {
        b.version += 1;
    }
    Ok(enqueue(conn, outbox).await?)
}

/// One saga step on a locked booking: new state and commands, stored together.
pub(crate) async fn advance(
    conn: &mut AnyConnection,
    mut b: Booking,
    input: Input,
    cause: Option<&Envelope>,
    timeouts: Timeouts,
) -> Result<Booking, HandleError> {
    let Some(outbox) = step(&mut b, input, cause) else {
        return Ok(b);
    };
    store_steps(conn, &mut [&mut b], &outbox, timeouts).await?;
    Ok(b)
}

/// Consumes `booking.events`: mirrors events, and when one is cancelled,
/// fails its bookings in flight and refunds the confirmed ones.
pub struct EventMirror {
    pub timeouts: Timeouts,
}

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for EventMirror {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        let Some(news) = msg.decode::<SaleNews>()? else {
            return Ok(());
        };
        let e = news.snapshot();
        let info = store::EventInfo {
            event_id: e.event_id,
            organizer: e.organizer.to_string(),
            event_date: e.event_date,
            start_time: e.start_time,
            status: e.status.as_str().to_string(),
            version: e.version,
        };
        let newer = store::upsert_event(tx, &info).await?;
        if newer && info.status == "CANCELLED" {
            let bookings = store::open_bookings(tx, info.event_id).await?;
            for id in &bookings {
                if let Some(b) = store::lock(tx, *id).await? {
                    advance(tx, b, Input::EventCancelled, Some(msg), self.timeouts).await?;
                }
            }
            tracing::info!(
                event_id = info.event_id,
                bookings = bookings.len(),
                "event cancelled; bookings unwound"
            );
        }
        Ok(())
    }
}

incoming!(
    /// The ticket and payment services' answers, each a step of its
    /// booking's saga.
    pub enum SagaReply {
        TicketsHeld,
        TicketsHoldFailed,
        TicketsReserved,
        TicketsReserveFailed,
        TicketsReleased,
        PaymentSucceeded,
        PaymentFailed,
        PaymentRefunded,
    }
);

impl SagaReply {
    /// The booking it answers for, and the saga's input (none for the
    /// acknowledgement of a release the saga asked for itself).
    fn input(self) -> (Uuid, Option<Input>, Option<String>) {
        match self {
            SagaReply::TicketsHeld(m) => (
                m.booking_id,
                Some(Input::TicketsHeld {
                    charged: m.charge.is_some(),
                    ticket_ids: m.ticket_ids,
                    amount: m.amount,
                    until: m.hold_expires_at,
                    at: chrono::Utc::now(),
                }),
                Some(m.currency),
            ),
            SagaReply::TicketsHoldFailed(m) => {
                let failure = match m.reason {
                    HoldRefusal::SoldOut => HoldFailure::SoldOut,
                    HoldRefusal::EventNotOnSale => HoldFailure::NotOnSale,
                };
                (m.booking_id, Some(Input::TicketsHoldFailed(failure)), None)
            }
            SagaReply::TicketsReserved(m) => (
                m.booking_id,
                Some(Input::TicketsReserved {
                    ticket_ids: m.ticket_ids,
                }),
                None,
            ),
            SagaReply::TicketsReserveFailed(m) => (m.booking_id, Some(Input::TicketsReserveFailed), None),
            SagaReply::TicketsReleased(m) => match m.reason {
                ReleaseReason::HoldExpired => (m.booking_id, Some(Input::HoldExpired), None),
                ReleaseReason::Released => (m.booking_id, None, None),
            },
            SagaReply::PaymentSucceeded(m) => (
                m.0.booking_id,
                Some(Input::PaymentSucceeded {
                    at: chrono::Utc::now(),
                    amount: m.0.amount,
                }),
                Some(m.0.currency),
            ),
            SagaReply::PaymentFailed(m) => {
                let declined = m.reason == PaymentFailure::PaymentDeclined;
                (m.booking_id, Some(Input::PaymentFailed { declined }), None)
            }
            SagaReply::PaymentRefunded(m) => (m.0.booking_id, Some(Input::PaymentRefunded), None),
        }
    }
}

/// Consumes `booking.replies`: every answer moves its booking's saga.
pub struct SagaDriver {
    pub timeouts: Timeouts,
    pub waiters: Waiters,
    /// What the messages of batches not yet committed did, by message:
    /// seen to once their batch commits.
    taken: Mutex<HashMap<Uuid, Taken>>,
    counted: Family<AnswerKind, Counter>,
}

/// An answer applied in a batch not yet committed.
struct Taken {
    /// Its type, counted once the batch commits.
    kind: String,
    /// The booking it settled, if someone waits for it: handed to its
    /// waiters once the batch commits.
    settled: Option<Booking>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerKind {
    kind: String,
}

/// The answers the sagas took, by type, whichever way each came (its
/// queue, or asked for directly): the queues' own figures miss what the
/// direct calls carry. One family for every driver of the process.
pub fn answers_counted(metrics: &ticketer_http::Metrics) -> Family<AnswerKind, Counter> {
    let counted = Family::default();
    metrics.register(
        "ticketer_saga_answers",
        "The ticket and payment services' answers the booking sagas took, by type, whether they came on their queues or were asked for directly",
        counted.clone(),
    );
    counted
}

/// Answers kept for batches that never committed (the batch failed and its
/// messages went elsewhere) are dropped past this many: their types go
/// uncounted, and their bookings' waiters read the booking themselves.
const TAKEN_CAP: usize = 10_000;

impl SagaDriver {
    pub fn new(timeouts: Timeouts, waiters: Waiters) -> Self {
        SagaDriver {
            timeouts,
            waiters,
            taken: Mutex::default(),
            counted: Family::default(),
        }
    }

    /// Counts the answers taken in `counted` (see [`answers_counted`]).
    pub fn counting(mut self, counted: Family<AnswerKind, Counter>) -> Self {
        self.counted = counted;
        self
    }
}

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for SagaDriver {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        self.handle_all(tx, &[msg]).await
    }

    /// A batch of answers in one go: every booking they concern locked
    /// and read in one statement, the steps taken in delivery order in
    /// memory (a booking answered twice in one batch steps twice), then
    /// the new states and every message stored in one statement each.
    async fn handle_all(&self, tx: &mut AnyConnection, msgs: &[&Envelope]) -> Result<(), HandleError> {
        let mut steps = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let Some(reply) = msg.decode::<SagaReply>()? else {
                return Err(HandleError::Permanent(format!(
                    "the saga does not take {}",
                    msg.kind
                )));
            };
            // Acknowledgements of our own releases need no step.
            if let (booking_id, Some(input), currency) = reply.input() {
                steps.push((*msg, booking_id, input, currency));
            }
        }
        let mut ids: Vec<Uuid> = steps.iter().map(|s| s.1).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut bookings: HashMap<Uuid, (Booking, bool)> = store::lock_all(tx, &ids)
            .await?
            .into_iter()
            .map(|b| (b.booking_id, (b, false)))
            .collect();
        let mut outbox = Vec::new();
        let mut settled = Vec::new();
        for (msg, booking_id, input, currency) in steps {
            let Some((b, stepped)) = bookings.get_mut(&booking_id) else {
                // Seats held for a booking never made (its hold was asked
                // for beside a commit that left it out) ran out.
                if matches!(input, Input::HoldExpired) {
                    tracing::info!(%booking_id, "a hold for a booking never made ran out");
                    continue;
                }
                return Err(HandleError::Permanent(format!("no booking {booking_id}")));
            };
            if b.currency.is_none() {
                b.currency = currency;
            }
            let was_pending = b.saga.stage.status() == BookingStatus::Pending;
            if let Some(out) = step(b, input, Some(msg)) {
                *stepped = true;
                outbox.extend(out);
            }
            if was_pending && b.saga.stage.status() != BookingStatus::Pending {
                settled.push((msg.message_id, booking_id));
            }
        }
        let mut stepped: Vec<&mut Booking> = bookings
            .values_mut()
            .filter(|(_, stepped)| *stepped)
            .map(|(b, _)| b)
            .collect();
        store_steps(tx, &mut stepped, &outbox, self.timeouts).await?;
        let mut waited: HashMap<Uuid, Booking> = settled
            .into_iter()
            .filter(|(_, id)| self.waiters.has(*id))
            .map(|(message_id, id)| (message_id, bookings[&id].0.clone()))
            .collect();
        let mut taken = self.taken.lock().expect("taken lock");
        if taken.len() + msgs.len() > TAKEN_CAP {
            taken.clear();
        }
        taken.extend(msgs.iter().map(|m| {
            let settled = waited.remove(&m.message_id);
            let kind = m.kind.clone();
            (m.message_id, Taken { kind, settled })
        }));
        Ok(())
    }

    fn committed(&self, batch: &[&Envelope]) {
        let done: Vec<Taken> = {
            let mut taken = self.taken.lock().expect("taken lock");
            batch
                .iter()
                .filter_map(|msg| taken.remove(&msg.message_id))
                .collect()
        };
        for Taken { kind, settled } in done {
            self.counted.get_or_create(&AnswerKind { kind }).inc();
            // Only settling matters to a waiter; steps in between wake nobody.
            if let Some(b) = settled {
                self.waiters.settle(&b);
            }
        }
    }
}

#[cfg(test)]
mod tests;
