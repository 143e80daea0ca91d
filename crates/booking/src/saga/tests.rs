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
        (S::Paying, I::PaymentSucceeded { at }) if *at + RECORD_MARGIN <= until() => {
            Some((S::Confirmed, None, vec![C::Announce(BookingStatus::Confirmed)]))
        }
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
        (S::Confirmed, I::TicketsReserveFailed | I::HoldExpired) => {
            failed(F::HoldExpired, vec![C::RefundPayment])
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
        let waits = stage.status() == BookingStatus::Pending || matches!(stage, S::Refunding | S::Recording);
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
/// succeeds, with nothing more to send (the ticket service sells on the
/// payment's news and says nothing when it does).
#[test]
fn the_happy_path() {
    let (s, c) = start();
    assert_eq!((s.stage, c), (S::Holding, vec![C::HoldTickets]));
    let (s, _) = handle(&s, tickets_held());
    let (s, c) = handle(&s, paid_early());
    assert_eq!(
        (s.stage, c),
        (S::Confirmed, vec![C::Announce(BookingStatus::Confirmed)])
    );
    assert_eq!((s.ticket_ids, s.amount), (ids(), Some(price())));
}

/// Confirmed, then the ticket service says it could not record the sale
/// (it was away for longer than the margin): the money goes back.
#[test]
fn a_confirmed_booking_whose_sale_failed_is_refunded() {
    for news in [I::TicketsReserveFailed, I::HoldExpired] {
        let (s, _) = start();
        let (s, _) = handle(&s, tickets_held());
        let (s, _) = handle(&s, paid_early());
        let (s, c) = handle(&s, news.clone());
        assert_eq!(
            (s.stage, s.failure, c),
            (
                S::Failed,
                Some(FailureReason::HoldExpired),
                vec![C::RefundPayment, C::Announce(BookingStatus::Failed)]
            ),
            "{news:?}"
        );
    }
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
            I::TicketsReserved => {
                sent(|c| matches!(c, C::ReserveTickets { .. }))
                    && only_this(|i| matches!(i, I::TicketsReserved | I::TicketsReserveFailed))
            }
            // Also the ticket service's word on the payment's news.
            I::TicketsReserveFailed => {
                (sent(|c| matches!(c, C::ReserveTickets { .. }))
                    || seen.iter().any(|i| matches!(i, I::PaymentSucceeded { .. })))
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
            // Paid early, the payment's news is the ticket service's
            // request to sell.
            assert!(
                paid && (reserved || seq.contains(&paid_early())),
                "confirmed without paying or seats: {seq:?}"
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
            // Held, never sold: released, or the hold expired by itself
            // (a failed sale gives the expired seats back too).
            let released = commands.iter().any(|c| matches!(c, C::ReleaseTickets { .. }));
            assert!(
                released || seq.contains(&I::HoldExpired) || seq.contains(&I::TicketsReserveFailed),
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
