//! The booking saga as a pure state machine: [`start`] and [`handle`] take
//! the saga's state and one input and return the next state and the
//! commands to send. The service loads the saga row, calls these, and stores
//! the new state with the commands as outbox rows in one transaction.
//!
//! The flow (see the architecture's sequence diagram): hold tickets, charge
//! the customer, confirm, and have the ticket service turn the hold into a
//! sale. What the rules guarantee, whatever order or number of times
//! messages arrive:
//! - a booking is CONFIRMED only after its payment succeeded, while its
//!   hold had at least [`RECORD_MARGIN`] left (the ticket service then still
//!   has the seats when ReserveTickets reaches it), or after its tickets
//!   were reserved;
//! - a confirmed booking whose seats could not be recorded as sold after
//!   all (the ticket service was away for longer than the margin) is
//!   refunded and FAILED with HOLD_EXPIRED: never a seat sold twice;
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
        /// Tickets held; ProcessPayment sent.
        Paying,
        /// Paid late in the hold; ReserveTickets sent, and the booking
        /// stays pending until the ticket service answers.
        Reserving,
        /// Paid with the hold secure: confirmed to the customer at once;
        /// ReserveTickets sent, waiting for the ticket service to record
        /// the sale. Confirming here instead of after the ticket service's
        /// answer takes two message hops off every booking.
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
            Stage::Holding | Stage::Paying | Stage::Reserving => BookingStatus::Pending,
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
    /// How long `stage` waits; None for a stage that waits for nothing.
    pub fn of(self, stage: Stage) -> Option<std::time::Duration> {
        match stage {
            Stage::Holding | Stage::Reserving | Stage::Recording | Stage::Refunding => Some(self.reply),
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
    },
    TicketsHoldFailed(HoldFailure),
    /// `at`: when the saga learns of it (now).
    PaymentSucceeded {
        at: DateTime<Utc>,
    },
    /// `declined`: the card was refused; otherwise the provider failed.
    PaymentFailed {
        declined: bool,
    },
    TicketsReserved,
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
            } => {
                let held = Saga {
                    stage: Paying,
                    ticket_ids,
                    amount: Some(amount),
                    hold_until: Some(until),
                    ..saga.clone()
                };
                (held, vec![Command::ProcessPayment { amount }])
            }
            TicketsHoldFailed(HoldFailure::SoldOut) => fail(saga, FailureReason::SoldOut, vec![]),
            TicketsHoldFailed(HoldFailure::NotOnSale) => fail(saga, FailureReason::EventNotOnSale, vec![]),
            EventCancelled => fail(saga, FailureReason::EventCancelled, vec![]),
            // No answer in time (the ticket service was down, or the
            // command was dead-lettered): ask again; a hold is keyed by
            // booking, so a second ask never holds twice.
            Timeout => (saga.clone(), vec![Command::HoldTickets]),
            PaymentSucceeded { .. }
            | PaymentFailed { .. }
            | TicketsReserved
            | TicketsReserveFailed
            | HoldExpired
            | CancelRequested
            | PaymentRefunded => unchanged(saga),
        },
        Paying => match input {
            PaymentSucceeded { at } => {
                let reserve = Command::ReserveTickets {
                    ticket_ids: saga.ticket_ids.clone(),
                };
                if saga.hold_until.is_some_and(|until| until - at >= RECORD_MARGIN) {
                    to(
                        saga,
                        Recording,
                        vec![reserve, Command::Announce(BookingStatus::Confirmed)],
                    )
                } else {
                    to(saga, Reserving, vec![reserve])
                }
            }
            PaymentFailed { declined: true } => fail(saga, FailureReason::PaymentDeclined, vec![release()]),
            PaymentFailed { declined: false } => fail(saga, FailureReason::PaymentError, vec![release()]),
            // A payment that still succeeds later is refunded from Failed.
            HoldExpired => fail(saga, FailureReason::HoldExpired, vec![]),
            Timeout => fail(saga, FailureReason::PaymentError, vec![release()]),
            EventCancelled => fail(saga, FailureReason::EventCancelled, vec![release()]),
            TicketsHeld { .. }
            | TicketsHoldFailed(_)
            | TicketsReserved
            | TicketsReserveFailed
            | CancelRequested
            | PaymentRefunded => unchanged(saga),
        },
        Reserving => match input {
            TicketsReserved => to(saga, Confirmed, vec![Command::Announce(BookingStatus::Confirmed)]),
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
            TicketsReserved => to(saga, Confirmed, vec![]),
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
            TicketsHeld { .. }
            | TicketsHoldFailed(_)
            | PaymentSucceeded { .. }
            | PaymentFailed { .. }
            | TicketsReserved
            | TicketsReserveFailed
            | HoldExpired
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
            | TicketsReserved
            | TicketsReserveFailed
            | HoldExpired
            | CancelRequested
            | EventCancelled => unchanged(saga),
        },
        Failed => match input {
            // Money taken for a booking that will not get its seats goes back.
            PaymentSucceeded { .. } => (saga.clone(), vec![Command::RefundPayment]),
            // Seats that arrive for a failed booking go back.
            TicketsHeld { ticket_ids, .. } => (saga.clone(), vec![Command::ReleaseTickets { ticket_ids }]),
            TicketsReserved => (saga.clone(), vec![release()]),
            TicketsHoldFailed(_)
            | PaymentFailed { .. }
            | TicketsReserveFailed
            | HoldExpired
            | Timeout
            | CancelRequested
            | EventCancelled
            | PaymentRefunded => unchanged(saga),
        },
        Cancelled => match input {
            TicketsHeld { .. }
            | TicketsHoldFailed(_)
            | PaymentSucceeded { .. }
            | PaymentFailed { .. }
            | TicketsReserved
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
mod tests {
    use super::{Command as C, Input as I, Stage as S, *};

    fn ids() -> Vec<Uuid> {
        vec![Uuid::from_u128(1), Uuid::from_u128(2)]
    }

    fn price() -> Money {
        Money::from_minor(5000)
    }

    fn held_at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// When the test's holds run out: ten minutes after they were made.
    fn until() -> DateTime<Utc> {
        held_at() + chrono::Duration::minutes(10)
    }

    /// Paid a second after the hold, with nearly all of it left.
    fn paid_early() -> Input {
        I::PaymentSucceeded {
            at: held_at() + chrono::Duration::seconds(1),
        }
    }

    /// Paid a second before the hold runs out.
    fn paid_late() -> Input {
        I::PaymentSucceeded {
            at: until() - chrono::Duration::seconds(1),
        }
    }

    fn tickets_held() -> Input {
        I::TicketsHeld {
            ticket_ids: ids(),
            amount: price(),
            until: until(),
        }
    }

    fn inputs() -> Vec<Input> {
        vec![
            tickets_held(),
            I::TicketsHoldFailed(HoldFailure::SoldOut),
            I::TicketsHoldFailed(HoldFailure::NotOnSale),
            paid_early(),
            paid_late(),
            I::PaymentFailed { declined: true },
            I::PaymentFailed { declined: false },
            I::TicketsReserved,
            I::TicketsReserveFailed,
            I::HoldExpired,
            I::Timeout,
            I::CancelRequested,
            I::EventCancelled,
            I::PaymentRefunded,
        ]
    }

    /// A saga at `stage`, with tickets once they would have been held.
    fn at(stage: Stage) -> Saga {
        let held = !matches!(stage, S::Holding);
        Saga {
            stage,
            failure: (stage == S::Failed).then_some(FailureReason::PaymentError),
            ticket_ids: if held { ids() } else { vec![] },
            amount: held.then(price),
            hold_until: held.then(until),
        }
    }

    fn release() -> C {
        C::ReleaseTickets { ticket_ids: ids() }
    }

    fn failed(
        reason: FailureReason,
        mut compensations: Vec<C>,
    ) -> Option<(Stage, Option<FailureReason>, Vec<C>)> {
        compensations.push(C::Announce(BookingStatus::Failed));
        Some((S::Failed, Some(reason), compensations))
    }

    /// The whole table: every stage against every input. `None` means the
    /// input changes nothing and asks for nothing.
    fn expected(stage: Stage, input: &Input) -> Option<(Stage, Option<FailureReason>, Vec<C>)> {
        use FailureReason as F;
        let keep = |commands: Vec<C>| Some((stage, at(stage).failure, commands));
        match (stage, input) {
            (S::Holding, I::TicketsHeld { .. }) => {
                Some((S::Paying, None, vec![C::ProcessPayment { amount: price() }]))
            }
            (S::Holding, I::TicketsHoldFailed(HoldFailure::SoldOut)) => failed(F::SoldOut, vec![]),
            (S::Holding, I::TicketsHoldFailed(HoldFailure::NotOnSale)) => failed(F::EventNotOnSale, vec![]),
            (S::Holding, I::EventCancelled) => failed(F::EventCancelled, vec![]),
            (S::Holding, I::Timeout) => keep(vec![C::HoldTickets]),
            (S::Paying, I::PaymentSucceeded { at }) if *at + RECORD_MARGIN <= until() => Some((
                S::Recording,
                None,
                vec![
                    C::ReserveTickets { ticket_ids: ids() },
                    C::Announce(BookingStatus::Confirmed),
                ],
            )),
            (S::Paying, I::PaymentSucceeded { .. }) => {
                Some((S::Reserving, None, vec![C::ReserveTickets { ticket_ids: ids() }]))
            }
            (S::Paying, I::PaymentFailed { declined: true }) => failed(F::PaymentDeclined, vec![release()]),
            (S::Paying, I::PaymentFailed { declined: false }) => failed(F::PaymentError, vec![release()]),
            (S::Paying, I::HoldExpired) => failed(F::HoldExpired, vec![]),
            (S::Paying, I::Timeout) => failed(F::PaymentError, vec![release()]),
            (S::Paying, I::EventCancelled) => failed(F::EventCancelled, vec![release()]),
            (S::Reserving, I::TicketsReserved) => {
                Some((S::Confirmed, None, vec![C::Announce(BookingStatus::Confirmed)]))
            }
            (S::Reserving, I::TicketsReserveFailed) => failed(F::HoldExpired, vec![C::RefundPayment]),
            (S::Reserving, I::EventCancelled) => failed(F::EventCancelled, vec![C::RefundPayment, release()]),
            (S::Reserving, I::Timeout) => keep(vec![C::ReserveTickets { ticket_ids: ids() }]),
            (S::Recording, I::TicketsReserved) => Some((S::Confirmed, None, vec![])),
            (S::Recording, I::TicketsReserveFailed) => failed(F::HoldExpired, vec![C::RefundPayment]),
            (S::Recording, I::Timeout) => keep(vec![C::ReserveTickets { ticket_ids: ids() }]),
            (S::Recording, I::CancelRequested | I::EventCancelled) => {
                Some((S::Refunding, None, vec![C::RefundPayment]))
            }
            (S::Refunding, I::Timeout) => keep(vec![C::RefundPayment]),
            (S::Confirmed, I::CancelRequested | I::EventCancelled) => {
                Some((S::Refunding, None, vec![C::RefundPayment]))
            }
            (S::Refunding, I::PaymentRefunded) => Some((
                S::Cancelled,
                None,
                vec![release(), C::Announce(BookingStatus::Cancelled)],
            )),
            (S::Failed, I::PaymentSucceeded { .. }) => keep(vec![C::RefundPayment]),
            (S::Failed, I::TicketsHeld { .. }) => keep(vec![release()]),
            (S::Failed, I::TicketsReserved) => keep(vec![release()]),
            _ => None,
        }
    }

    /// Nothing waits forever: every stage that waits for an answer has a
    /// deadline, and its timeout moves the saga or asks again.
    #[test]
    fn every_waiting_stage_has_a_deadline_that_does_something() {
        let timeouts = Timeouts {
            payment: std::time::Duration::from_secs(120),
            reply: std::time::Duration::from_secs(30),
        };
        for stage in Stage::ALL {
            let waits =
                stage.status() == BookingStatus::Pending || matches!(stage, S::Refunding | S::Recording);
            assert_eq!(timeouts.of(stage).is_some(), waits, "{stage:?}");
            if waits {
                let before = at(stage);
                let (after, commands) = handle(&before, I::Timeout);
                assert!(
                    after != before || !commands.is_empty(),
                    "{stage:?} ignores its timeout"
                );
            }
        }
    }

    #[test]
    fn every_stage_against_every_input() {
        for stage in Stage::ALL {
            for input in inputs() {
                let before = at(stage);
                let (after, commands) = handle(&before, input.clone());
                match expected(stage, &input) {
                    Some((stage_after, failure, want)) => {
                        assert_eq!(
                            (after.stage, after.failure, &commands),
                            (stage_after, failure, &want),
                            "{stage:?} + {input:?}"
                        );
                    }
                    None => {
                        assert_eq!(after, before, "{stage:?} + {input:?} changed the saga");
                        assert!(
                            commands.is_empty(),
                            "{stage:?} + {input:?} asked for {commands:?}"
                        );
                    }
                }
            }
        }
    }

    /// Paid with most of the hold left: confirmed as soon as the payment
    /// succeeds, and the sale recorded after.
    #[test]
    fn the_happy_path() {
        let (s, c) = start();
        assert_eq!((s.stage, c), (S::Holding, vec![C::HoldTickets]));
        let (s, _) = handle(&s, tickets_held());
        let (s, c) = handle(&s, paid_early());
        assert_eq!(s.stage.status(), BookingStatus::Confirmed);
        assert_eq!(
            c,
            vec![
                C::ReserveTickets { ticket_ids: ids() },
                C::Announce(BookingStatus::Confirmed)
            ]
        );
        let (s, c) = handle(&s, I::TicketsReserved);
        assert_eq!((s.stage, c), (S::Confirmed, vec![]));
        assert_eq!((s.ticket_ids, s.amount), (ids(), Some(price())));
    }

    /// Paid with the hold about to run out: confirmed only once the ticket
    /// service has recorded the sale.
    #[test]
    fn paid_late_in_the_hold_waits_for_the_sale() {
        let (s, _) = start();
        let (s, _) = handle(&s, tickets_held());
        let (s, c) = handle(&s, paid_late());
        assert_eq!(s.stage.status(), BookingStatus::Pending);
        assert_eq!(c, vec![C::ReserveTickets { ticket_ids: ids() }]);
        let (s, c) = handle(&s, I::TicketsReserved);
        assert_eq!(
            (s.stage, c),
            (S::Confirmed, vec![C::Announce(BookingStatus::Confirmed)])
        );
    }

    /// Plays `inputs` from the start, collecting every command; None when
    /// the sequence could not happen (a reply to a request never sent, or
    /// two different replies to one request). Duplicates, reordering and
    /// late arrivals all stay in.
    fn play(inputs: &[Input]) -> Option<(Saga, Vec<C>)> {
        let (mut saga, mut all) = start();
        let mut seen: Vec<&Input> = Vec::new();
        for input in inputs {
            let sent = |f: fn(&C) -> bool| all.iter().any(f);
            let only_this = |f: fn(&Input) -> bool| seen.iter().all(|i| !f(i) || *i == input);
            let possible = match input {
                I::TicketsHeld { .. } | I::TicketsHoldFailed(_) => {
                    only_this(|i| matches!(i, I::TicketsHeld { .. } | I::TicketsHoldFailed(_)))
                }
                // A payment's success may be learnt twice (redelivered), at
                // different times; never alongside its failure.
                I::PaymentSucceeded { .. } => {
                    sent(|c| matches!(c, C::ProcessPayment { .. }))
                        && only_this(|i| matches!(i, I::PaymentFailed { .. }))
                }
                I::PaymentFailed { .. } => {
                    sent(|c| matches!(c, C::ProcessPayment { .. }))
                        && only_this(|i| matches!(i, I::PaymentSucceeded { .. } | I::PaymentFailed { .. }))
                }
                I::TicketsReserved | I::TicketsReserveFailed => {
                    sent(|c| matches!(c, C::ReserveTickets { .. }))
                        && only_this(|i| matches!(i, I::TicketsReserved | I::TicketsReserveFailed))
                }
                I::HoldExpired => seen.iter().any(|i| matches!(i, I::TicketsHeld { .. })),
                I::PaymentRefunded => sent(|c| *c == C::RefundPayment),
                I::Timeout | I::CancelRequested | I::EventCancelled => true,
            };
            if !possible {
                return None;
            }
            seen.push(input);
            let (next, commands) = handle(&saga, input.clone());
            saga = next;
            all.extend(commands);
        }
        Some((saga, all))
    }

    /// Every sequence of up to four inputs (14^4 of them), checked against
    /// the guarantees in the module documentation.
    #[test]
    fn no_sequence_confirms_without_payment_or_keeps_what_it_should_return() {
        let all = inputs();
        let mut sequences: Vec<Vec<Input>> = vec![vec![]];
        for _ in 0..4 {
            let mut longer = Vec::new();
            for seq in &sequences {
                for input in &all {
                    let mut s = seq.clone();
                    s.push(input.clone());
                    longer.push(s);
                }
            }
            sequences.extend(longer.iter().cloned());
            sequences = longer
                .into_iter()
                .chain(sequences.into_iter().filter(|s| s.len() < 4))
                .collect();
        }
        let mut checked = 0;
        for seq in sequences {
            let Some((saga, commands)) = play(&seq) else {
                continue;
            };
            checked += 1;
            let count = |c: &C| commands.iter().filter(|x| *x == c).count();
            let paid = seq.iter().any(|i| matches!(i, I::PaymentSucceeded { .. }));
            let reserved = seq.contains(&I::TicketsReserved);
            if saga.stage.status() == BookingStatus::Confirmed {
                assert!(
                    paid && (reserved || seq.contains(&paid_early())),
                    "confirmed without paying or seats: {seq:?}"
                );
                assert!(
                    reserved || commands.iter().any(|c| matches!(c, C::ReserveTickets { .. })),
                    "confirmed and the sale never asked for: {seq:?}"
                );
            }
            if saga.stage == S::Failed && paid {
                assert!(
                    count(&C::RefundPayment) >= 1,
                    "kept the money: {seq:?} -> {commands:?}"
                );
            }
            let held = commands.iter().any(|c| matches!(c, C::ProcessPayment { .. }));
            let reserved = commands.iter().any(|c| matches!(c, C::ReserveTickets { .. }));
            if saga.stage == S::Failed && held && !reserved {
                // Held, never sold: released, or the hold expired by itself.
                let released = commands.iter().any(|c| matches!(c, C::ReleaseTickets { .. }));
                assert!(
                    released || seq.contains(&I::HoldExpired),
                    "kept the seats: {seq:?} -> {commands:?}"
                );
            }
            assert!(
                commands.iter().filter(|c| matches!(c, C::Announce(_))).count() <= 2,
                "announced too often: {seq:?}"
            );
        }
        assert!(checked > 1000, "only {checked} sequences were possible");
    }
}
