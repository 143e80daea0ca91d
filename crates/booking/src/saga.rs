//! The booking saga as a pure state machine: [`start`] and [`handle`] take
//! the saga's state and one input and return the next state and the
//! commands to send. The service loads the saga row, calls these, and stores
//! the new state with the commands as outbox rows in one transaction.
//!
//! The flow (see the architecture's sequence diagram): hold tickets, charge
//! the customer, confirm. The hold is asked with the booking's charge, and
//! the payment service charges on the ticket service's TicketsHeld itself,
//! so the saga hears of the hold and of the payment without asking for the
//! payment in between. The ticket service hears PaymentSucceeded too and
//! turns the hold into a sale by itself, answering only when it cannot, so
//! a booking paid in good time costs no ReserveTickets and no answer to it.
//! The saga hears the hold and the payment on two queues, so the payment
//! may come first ([`Stage::Paid`]).
//! What the rules guarantee, whatever order or number of times messages
//! arrive:
//! - a booking is CONFIRMED only after its payment succeeded, while its
//!   hold had at least [`RECORD_MARGIN`] left (the ticket service then still
//!   has the seats when the payment's news reaches it), or after its
//!   tickets were reserved;
//! - a confirmed booking whose seats could not be recorded as sold after
//!   all (the ticket service was away for longer than the margin, and says
//!   TicketsReserveFailed or that the hold expired) is refunded and FAILED
//!   with HOLD_EXPIRED: never a seat sold twice;
//! - money taken for a booking that ends FAILED is refunded;
//! - tickets held for a booking that ends FAILED are released.
//!
//! Ticket commands carry the booking id, and the ticket service only touches
//! tickets held or sold to that booking, so a repeated release can never
//! free somebody else's seat.

use chrono::{DateTime, Utc};
use ticketer_contract::Money;
use uuid::Uuid;

pub use ticketer_contract::{BookingStatus, FailureReason};

ticketer_contract::listed! {
    /// Where the saga is waiting.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Stage {
        /// HoldTickets sent.
        Holding,
        /// Tickets held; the payment service charges on the hold's news (or,
        /// for a hold asked without a charge, ProcessPayment sent).
        Paying,
        /// Paid on the hold's news before the saga heard of the hold itself
        /// (its TicketsHeld is on its way on the other queue).
        Paid,
        /// Paid late in the hold; ReserveTickets sent, and the booking
        /// stays pending until the ticket service answers.
        Reserving,
        /// Paid with the hold secure, confirmed, ReserveTickets sent and
        /// its answer awaited. No longer entered (a booking paid in good
        /// time is Confirmed at once and the ticket service sells on the
        /// payment's news); kept so that bookings stored in it by an
        /// earlier version still finish.
        Recording,
        Confirmed,
        /// Confirmed, then cancelled: RefundPayment sent.
        Refunding,
        Cancelled,
        Failed,
    }
}

impl Stage {
    pub fn status(self) -> BookingStatus {
        match self {
            Stage::Holding | Stage::Paying | Stage::Paid | Stage::Reserving => BookingStatus::Pending,
            // Still confirmed until the refund went through.
            Stage::Recording | Stage::Confirmed | Stage::Refunding => BookingStatus::Confirmed,
            Stage::Cancelled => BookingStatus::Cancelled,
            Stage::Failed => BookingStatus::Failed,
        }
    }
}

/// How long each waiting stage waits for its answer before its deadline
/// passes and [`Input::Timeout`] comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the payment provider's answer (BOOKING_PAYMENT_TIMEOUT_SECONDS).
    pub payment: std::time::Duration,
    /// For the ticket or payment service's answer to a command that can
    /// safely be sent again (BOOKING_REPLY_TIMEOUT_SECONDS).
    pub reply: std::time::Duration,
}

impl Timeouts {
    /// Long enough that no deadline passes during a test that does not
    /// wait for one.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Timeouts {
            payment: std::time::Duration::from_secs(60),
            reply: std::time::Duration::from_secs(30),
        }
    }

    /// How long `stage` waits; None for a stage that waits for nothing.
    pub fn of(self, stage: Stage) -> Option<std::time::Duration> {
        match stage {
            Stage::Holding | Stage::Paid | Stage::Reserving | Stage::Recording | Stage::Refunding => {
                Some(self.reply)
            }
            Stage::Paying => Some(self.payment),
            Stage::Confirmed | Stage::Cancelled | Stage::Failed => None,
        }
    }
}

/// The saga's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub stage: Stage,
    pub failure: Option<FailureReason>,
    /// The held (then sold) tickets, once known.
    pub ticket_ids: Vec<Uuid>,
    /// What the held tickets cost, once known.
    pub amount: Option<Money>,
    /// Until when the ticket service keeps the seats for this booking, once
    /// held (its own expiry; only a sale or a release ends a hold earlier).
    pub hold_until: Option<DateTime<Utc>>,
}

/// How much of the hold must be left when the payment succeeds for the
/// booking to be confirmed at once. ReserveTickets normally reaches the
/// ticket service within milliseconds; the margin covers a ticket service
/// that is restarting or catching up. Paid later than this, the saga waits
/// for the ticket service's answer before confirming.
pub const RECORD_MARGIN: chrono::Duration = chrono::Duration::seconds(30);

/// Why the ticket service could not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldFailure {
    SoldOut,
    NotOnSale,
}

/// What can happen to a booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    TicketsHeld {
        ticket_ids: Vec<Uuid>,
        amount: Money,
        /// When the hold runs out.
        until: DateTime<Utc>,
        /// When the saga learns of it (now).
        at: DateTime<Utc>,
        /// The hold carried the booking's charge: the payment service
        /// charges on this news, unasked.
        charged: bool,
    },
    TicketsHoldFailed(HoldFailure),
    /// `at`: when the saga learns of it (now); `amount`: what was taken.
    PaymentSucceeded {
        at: DateTime<Utc>,
        amount: Money,
    },
    /// `declined`: the card was refused; otherwise the provider failed.
    PaymentFailed {
        declined: bool,
    },
    /// The sold tickets.
    TicketsReserved {
        ticket_ids: Vec<Uuid>,
    },
    /// The hold had run out before the sale could be recorded.
    TicketsReserveFailed,
    /// The ticket service released the hold because it expired.
    HoldExpired,
    /// The waiting stage's deadline passed.
    Timeout,
    CancelRequested,
    EventCancelled,
    PaymentRefunded,
}

/// What the saga asks for; the service turns these into outbox messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    HoldTickets,
    ProcessPayment {
        amount: Money,
    },
    ReserveTickets {
        ticket_ids: Vec<Uuid>,
    },
    ReleaseTickets {
        ticket_ids: Vec<Uuid>,
    },
    RefundPayment,
    /// Tell everyone (customer notification, organizer sales figures).
    Announce(BookingStatus),
}

/// A new booking: ask for the tickets.
pub fn start() -> (Saga, Vec<Command>) {
    let saga = Saga {
        stage: Stage::Holding,
        failure: None,
        ticket_ids: Vec::new(),
        amount: None,
        hold_until: None,
    };
    (saga, vec![Command::HoldTickets])
}

fn fail(saga: &Saga, reason: FailureReason, mut compensations: Vec<Command>) -> (Saga, Vec<Command>) {
    compensations.push(Command::Announce(BookingStatus::Failed));
    let next = Saga {
        stage: Stage::Failed,
        failure: Some(reason),
        ..saga.clone()
    };
    (next, compensations)
}

fn to(saga: &Saga, stage: Stage, commands: Vec<Command>) -> (Saga, Vec<Command>) {
    (
        Saga {
            stage,
            ..saga.clone()
        },
        commands,
    )
}

fn unchanged(saga: &Saga) -> (Saga, Vec<Command>) {
    (saga.clone(), Vec::new())
}

/// Paid: confirmed at once when at least [`RECORD_MARGIN`] of the hold is
/// left at `at` (the ticket service sells on the same news), else the
/// customer waits for the ticket service's word on the sale.
fn paid(saga: &Saga, at: DateTime<Utc>) -> (Saga, Vec<Command>) {
    if saga.hold_until.is_some_and(|until| until - at >= RECORD_MARGIN) {
        to(
            saga,
            Stage::Confirmed,
            vec![Command::Announce(BookingStatus::Confirmed)],
        )
    } else {
        let reserve = Command::ReserveTickets {
            ticket_ids: saga.ticket_ids.clone(),
        };
        to(saga, Stage::Reserving, vec![reserve])
    }
}

/// The next state and commands for `input`. Inputs that mean nothing in the
/// current stage (duplicates, late arrivals) change nothing, except where
/// they leave money or seats behind that must be given back.
pub fn handle(saga: &Saga, input: Input) -> (Saga, Vec<Command>) {
    use Input::*;
    use Stage::*;
    let release = || Command::ReleaseTickets {
        ticket_ids: saga.ticket_ids.clone(),
    };
    // Every stage lists every input, with no catch-all: a new stage or
    // input does not compile until each pair has been decided.
    match saga.stage {
        Holding => match input {
            TicketsHeld {
                ticket_ids,
                amount,
                until,
                charged,
                ..
            } => {
                let held = Saga {
                    stage: Paying,
                    ticket_ids,
                    amount: Some(amount),
                    hold_until: Some(until),
                    ..saga.clone()
                };
                let ask = (!charged).then_some(Command::ProcessPayment { amount });
                (held, ask.into_iter().collect())
            }
            // Charged on the hold's news, which is still on its way here.
            PaymentSucceeded { amount, .. } => (
                Saga {
                    stage: Paid,
                    amount: Some(amount),
                    ..saga.clone()
                },
                vec![],
            ),
            // Declined on the hold's news: the hold (of the booking,
            // whichever seats) goes back.
            PaymentFailed { declined: true } => fail(saga, FailureReason::PaymentDeclined, vec![release()]),
            PaymentFailed { declined: false } => fail(saga, FailureReason::PaymentError, vec![release()]),
            TicketsHoldFailed(HoldFailure::SoldOut) => fail(saga, FailureReason::SoldOut, vec![]),
            TicketsHoldFailed(HoldFailure::NotOnSale) => fail(saga, FailureReason::EventNotOnSale, vec![]),
            EventCancelled => fail(saga, FailureReason::EventCancelled, vec![]),
            // No answer in time (the ticket service was down, or the
            // command was dead-lettered): ask again; a hold is keyed by
            // booking, so a second ask never holds twice.
            Timeout => (saga.clone(), vec![Command::HoldTickets]),
            TicketsReserved { .. }
            | TicketsReserveFailed
            | HoldExpired
            | CancelRequested
            | PaymentRefunded => unchanged(saga),
        },
        Paying => match input {
            PaymentSucceeded { at, .. } => paid(saga, at),
            PaymentFailed { declined: true } => fail(saga, FailureReason::PaymentDeclined, vec![release()]),
            PaymentFailed { declined: false } => fail(saga, FailureReason::PaymentError, vec![release()]),
            // A payment that still succeeds later is refunded from Failed.
            HoldExpired => fail(saga, FailureReason::HoldExpired, vec![]),
            Timeout => fail(saga, FailureReason::PaymentError, vec![release()]),
            EventCancelled => fail(saga, FailureReason::EventCancelled, vec![release()]),
            TicketsHeld { .. }
            | TicketsHoldFailed(_)
            | TicketsReserved { .. }
            | TicketsReserveFailed
            | CancelRequested
            | PaymentRefunded => unchanged(saga),
        },
        Paid => match input {
            TicketsHeld {
                ticket_ids,
                until,
                at,
                ..
            } => {
                let held = Saga {
                    ticket_ids,
                    hold_until: Some(until),
                    ..saga.clone()
                };
                // Learnt of later than the payment: `at` errs on the safe side.
                paid(&held, at)
            }
            // The hold's news is slow (or was dead-lettered): asked of the
            // ticket service directly, which sells or says it cannot.
            Timeout => (
                saga.clone(),
                vec![Command::ReserveTickets {
                    ticket_ids: saga.ticket_ids.clone(),
                }],
            ),
            TicketsReserved { ticket_ids } => {
                let sold = Saga {
                    ticket_ids,
                    ..saga.clone()
                };
                to(
                    &sold,
                    Confirmed,
                    vec![Command::Announce(BookingStatus::Confirmed)],
                )
            }
            // The seats are not the booking's after all: the money goes back.
            TicketsReserveFailed | HoldExpired => {
                fail(saga, FailureReason::HoldExpired, vec![Command::RefundPayment])
            }
            // A repeated ask found the hold gone: money and seats go back.
            TicketsHoldFailed(_) => fail(
                saga,
                FailureReason::SoldOut,
                vec![Command::RefundPayment, release()],
            ),
            EventCancelled => fail(
                saga,
                FailureReason::EventCancelled,
                vec![Command::RefundPayment, release()],
            ),
            PaymentSucceeded { .. } | PaymentFailed { .. } | CancelRequested | PaymentRefunded => {
                unchanged(saga)
            }
        },
        Reserving => match input {
            TicketsReserved { ticket_ids } => {
                // Known already, unless the saga learnt of the hold only
                // through this answer (it was paid first).
                let sold = Saga {
                    ticket_ids: if saga.ticket_ids.is_empty() {
                        ticket_ids
                    } else {
                        saga.ticket_ids.clone()
                    },
                    ..saga.clone()
                };
                to(
                    &sold,
                    Confirmed,
                    vec![Command::Announce(BookingStatus::Confirmed)],
                )
            }
            TicketsReserveFailed => fail(saga, FailureReason::HoldExpired, vec![Command::RefundPayment]),
            // Paid: never given up on; asked again until the ticket service
            // answers (sold, or the hold expired and the money goes back).
            Timeout => (
                saga.clone(),
                vec![Command::ReserveTickets {
                    ticket_ids: saga.ticket_ids.clone(),
                }],
            ),
            EventCancelled => fail(
                saga,
                FailureReason::EventCancelled,
                vec![Command::RefundPayment, release()],
            ),
            TicketsHeld { .. }
            | TicketsHoldFailed(_)
            | PaymentSucceeded { .. }
            | PaymentFailed { .. }
            | HoldExpired
            | CancelRequested
            | PaymentRefunded => unchanged(saga),
        },
        Recording => match input {
            TicketsReserved { .. } => to(saga, Confirmed, vec![]),
            // Only if the ticket service was away for longer than the
            // margin: the seats may be someone else's by now.
            TicketsReserveFailed => fail(saga, FailureReason::HoldExpired, vec![Command::RefundPayment]),
            Timeout => (
                saga.clone(),
                vec![Command::ReserveTickets {
                    ticket_ids: saga.ticket_ids.clone(),
                }],
            ),
            // Confirmed already: undone like a confirmed booking (the
            // release follows the refund and frees seats held or sold).
            CancelRequested | EventCancelled => to(saga, Refunding, vec![Command::RefundPayment]),
            TicketsHeld { .. }
            | TicketsHoldFailed(_)
            | PaymentSucceeded { .. }
            | PaymentFailed { .. }
            | HoldExpired
            | PaymentRefunded => unchanged(saga),
        },
        Confirmed => match input {
            CancelRequested | EventCancelled => to(saga, Refunding, vec![Command::RefundPayment]),
            // The ticket service could not record the sale (it was away
            // for longer than the margin): the seats may be someone
            // else's by now. A sold booking never hears either.
            TicketsReserveFailed | HoldExpired => {
                fail(saga, FailureReason::HoldExpired, vec![Command::RefundPayment])
            }
            TicketsHeld { .. }
            | TicketsHoldFailed(_)
            | PaymentSucceeded { .. }
            | PaymentFailed { .. }
            | TicketsReserved { .. }
            | Timeout
            | PaymentRefunded => unchanged(saga),
        },
        Refunding => match input {
            PaymentRefunded => to(
                saga,
                Cancelled,
                vec![release(), Command::Announce(BookingStatus::Cancelled)],
            ),
            // A refund is keyed by booking: asking again never refunds twice.
            Timeout => (saga.clone(), vec![Command::RefundPayment]),
            TicketsHeld { .. }
            | TicketsHoldFailed(_)
            | PaymentSucceeded { .. }
            | PaymentFailed { .. }
            | TicketsReserved { .. }
            | TicketsReserveFailed
            | HoldExpired
            | CancelRequested
            | EventCancelled => unchanged(saga),
        },
        Failed => match input {
            // Money taken for a booking that will not get its seats goes
            // back, and the seats it was taken on (the ticket service may
            // have sold them on the same news).
            PaymentSucceeded { .. } => (saga.clone(), vec![Command::RefundPayment, release()]),
            // A charge is made only on a hold: whatever the booking still
            // holds goes back (nothing, if it was released already).
            PaymentFailed { .. } => (saga.clone(), vec![release()]),
            // Seats that arrive for a failed booking go back.
            TicketsHeld { ticket_ids, .. } => (saga.clone(), vec![Command::ReleaseTickets { ticket_ids }]),
            TicketsReserved { .. } => (saga.clone(), vec![release()]),
            TicketsHoldFailed(_) | TicketsReserveFailed | HoldExpired | Timeout | CancelRequested
            | EventCancelled | PaymentRefunded => unchanged(saga),
        },
        Cancelled => match input {
            TicketsHeld { .. }
            | TicketsHoldFailed(_)
            | PaymentSucceeded { .. }
            | PaymentFailed { .. }
            | TicketsReserved { .. }
            | TicketsReserveFailed
            | HoldExpired
            | Timeout
            | CancelRequested
            | EventCancelled
            | PaymentRefunded => unchanged(saga),
        },
    }
}

#[cfg(test)]
mod tests;
