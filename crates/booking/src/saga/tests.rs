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
        amount: price(),
    }
}

/// Paid a second before the hold runs out.
fn paid_late() -> Input {
    I::PaymentSucceeded {
        at: until() - chrono::Duration::seconds(1),
        amount: price(),
    }
}

/// The hold's news, learnt of at once, carrying the booking's charge (the
/// payment service charges on it).
fn tickets_held() -> Input {
    I::TicketsHeld {
        ticket_ids: ids(),
        amount: price(),
        until: until(),
        at: held_at(),
        charged: true,
    }
}

/// The hold's news, learnt of a second before the hold runs out.
fn tickets_held_late() -> Input {
    I::TicketsHeld {
        ticket_ids: ids(),
        amount: price(),
        until: until(),
        at: until() - chrono::Duration::seconds(1),
        charged: true,
    }
}

/// A hold asked by an earlier version, without the charge: the saga asks
/// for the payment.
fn tickets_held_uncharged() -> Input {
    I::TicketsHeld {
        ticket_ids: ids(),
        amount: price(),
        until: until(),
        at: held_at(),
        charged: false,
    }
}

fn reserved() -> Input {
    I::TicketsReserved { ticket_ids: ids() }
}

fn inputs() -> Vec<Input> {
    vec![
        tickets_held(),
        tickets_held_late(),
        tickets_held_uncharged(),
        I::TicketsHoldFailed(HoldFailure::SoldOut),
        I::TicketsHoldFailed(HoldFailure::NotOnSale),
        paid_early(),
        paid_late(),
        I::PaymentFailed { declined: true },
        I::PaymentFailed { declined: false },
        reserved(),
        I::TicketsReserveFailed,
        I::HoldExpired,
        I::Timeout,
        I::CancelRequested,
        I::EventCancelled,
        I::PaymentRefunded,
    ]
}

/// A saga at `stage`, with tickets once they would have been held (paid
/// first, it knows only the amount).
fn at(stage: Stage) -> Saga {
    let held = !matches!(stage, S::Holding | S::Paid);
    Saga {
        stage,
        failure: (stage == S::Failed).then_some(FailureReason::PaymentError),
        ticket_ids: if held { ids() } else { vec![] },
        amount: (stage != S::Holding).then(price),
        hold_until: held.then(until),
    }
}

fn release() -> C {
    C::ReleaseTickets { ticket_ids: ids() }
}

/// The release of a booking whose seats the saga has not heard of (the
/// command names the booking; the ticket service frees what it holds).
fn release_unknown() -> C {
    C::ReleaseTickets { ticket_ids: vec![] }
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
        (S::Holding, I::TicketsHeld { charged: true, .. }) => Some((S::Paying, None, vec![])),
        (S::Holding, I::TicketsHeld { charged: false, .. }) => {
            Some((S::Paying, None, vec![C::ProcessPayment { amount: price() }]))
        }
        (S::Holding, I::PaymentSucceeded { .. }) => Some((S::Paid, None, vec![])),
        (S::Holding, I::PaymentFailed { declined: true }) => {
            failed(F::PaymentDeclined, vec![release_unknown()])
        }
        (S::Holding, I::PaymentFailed { declined: false }) => {
            failed(F::PaymentError, vec![release_unknown()])
        }
        (S::Paid, I::TicketsHeld { at, .. }) if *at + RECORD_MARGIN <= until() => {
            Some((S::Confirmed, None, vec![C::Announce(BookingStatus::Confirmed)]))
        }
        (S::Paid, I::TicketsHeld { .. }) => {
            Some((S::Reserving, None, vec![C::ReserveTickets { ticket_ids: ids() }]))
        }
        (S::Paid, I::Timeout) => keep(vec![C::ReserveTickets { ticket_ids: vec![] }]),
        (S::Paid, I::TicketsReserved { .. }) => {
            Some((S::Confirmed, None, vec![C::Announce(BookingStatus::Confirmed)]))
        }
        (S::Paid, I::TicketsReserveFailed | I::HoldExpired) => failed(F::HoldExpired, vec![C::RefundPayment]),
        (S::Paid, I::TicketsHoldFailed(_)) => failed(F::SoldOut, vec![C::RefundPayment, release_unknown()]),
        (S::Paid, I::EventCancelled) => failed(F::EventCancelled, vec![C::RefundPayment, release_unknown()]),
        (S::Holding, I::TicketsHoldFailed(HoldFailure::SoldOut)) => failed(F::SoldOut, vec![]),
        (S::Holding, I::TicketsHoldFailed(HoldFailure::NotOnSale)) => failed(F::EventNotOnSale, vec![]),
        (S::Holding, I::EventCancelled) => failed(F::EventCancelled, vec![]),
        (S::Holding, I::Timeout) => keep(vec![C::HoldTickets]),
        (S::Paying, I::PaymentSucceeded { at, .. }) if *at + RECORD_MARGIN <= until() => {
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
        (S::Reserving, I::TicketsReserved { .. }) => {
            Some((S::Confirmed, None, vec![C::Announce(BookingStatus::Confirmed)]))
        }
        (S::Reserving, I::TicketsReserveFailed) => failed(F::HoldExpired, vec![C::RefundPayment]),
        (S::Reserving, I::EventCancelled) => failed(F::EventCancelled, vec![C::RefundPayment, release()]),
        (S::Reserving, I::Timeout) => keep(vec![C::ReserveTickets { ticket_ids: ids() }]),
        (S::Recording, I::TicketsReserved { .. }) => Some((S::Confirmed, None, vec![])),
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
        (S::Failed, I::PaymentSucceeded { .. }) => keep(vec![C::RefundPayment, release()]),
        (S::Failed, I::PaymentFailed { .. }) => keep(vec![release()]),
        (S::Failed, I::TicketsHeld { .. }) => keep(vec![release()]),
        (S::Failed, I::TicketsReserved { .. }) => keep(vec![release()]),
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
/// succeeds, with nothing sent between the hold and the confirmation (the
/// payment service charges on the hold's news, the ticket service sells
/// on the payment's and says nothing when it does).
#[test]
fn the_happy_path() {
    let (s, c) = start();
    assert_eq!((s.stage, c), (S::Holding, vec![C::HoldTickets]));
    let (s, c) = handle(&s, tickets_held());
    assert_eq!((s.stage, c), (S::Paying, vec![]));
    let (s, c) = handle(&s, paid_early());
    assert_eq!(
        (s.stage, c),
        (S::Confirmed, vec![C::Announce(BookingStatus::Confirmed)])
    );
    assert_eq!((s.ticket_ids, s.amount), (ids(), Some(price())));
}

/// The hold and the payment reach the saga on two queues: paid first, it
/// waits for the hold's news and then confirms (or, late in the hold,
/// waits for the sale), as if they had come in order.
#[test]
fn paid_before_the_hold_was_heard_of() {
    let (s, _) = start();
    let (s, c) = handle(&s, paid_early());
    assert_eq!(
        (s.stage, s.stage.status(), c),
        (S::Paid, BookingStatus::Pending, vec![])
    );
    let (confirmed, c) = handle(&s, tickets_held());
    assert_eq!(
        (confirmed.stage, c),
        (S::Confirmed, vec![C::Announce(BookingStatus::Confirmed)])
    );
    assert_eq!(
        (confirmed.ticket_ids, confirmed.amount, confirmed.hold_until),
        (ids(), Some(price()), Some(until()))
    );
    let (late, c) = handle(&s, tickets_held_late());
    assert_eq!(
        (late.stage, c),
        (S::Reserving, vec![C::ReserveTickets { ticket_ids: ids() }])
    );
    // The hold's news never comes (dead-lettered): the sale is asked for,
    // and its answer names the tickets.
    let (s, c) = handle(&s, I::Timeout);
    assert_eq!(
        (s.stage, c),
        (S::Paid, vec![C::ReserveTickets { ticket_ids: vec![] }])
    );
    let (s, _) = handle(&s, reserved());
    assert_eq!((s.stage, s.ticket_ids), (S::Confirmed, ids()));
}

/// A hold asked by an earlier version carries no charge: the saga asks for
/// the payment, as it used to.
#[test]
fn a_hold_without_its_charge_is_paid_on_the_sagas_request() {
    let (s, _) = start();
    let (s, c) = handle(&s, tickets_held_uncharged());
    assert_eq!(
        (s.stage, c),
        (S::Paying, vec![C::ProcessPayment { amount: price() }])
    );
    let (s, _) = handle(&s, paid_early());
    assert_eq!(s.stage, S::Confirmed);
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
    let (s, c) = handle(&s, reserved());
    assert_eq!(
        (s.stage, c),
        (S::Confirmed, vec![C::Announce(BookingStatus::Confirmed)])
    );
}

/// The kinds of answer to a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldAnswer {
    Charged,
    Uncharged,
    SoldOut,
    NotOnSale,
}

fn hold_answer(i: &Input) -> Option<HoldAnswer> {
    match i {
        I::TicketsHeld { charged: true, .. } => Some(HoldAnswer::Charged),
        I::TicketsHeld { charged: false, .. } => Some(HoldAnswer::Uncharged),
        I::TicketsHoldFailed(HoldFailure::SoldOut) => Some(HoldAnswer::SoldOut),
        I::TicketsHoldFailed(HoldFailure::NotOnSale) => Some(HoldAnswer::NotOnSale),
        _ => None,
    }
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
        let asked_payment = sent(|c| matches!(c, C::ProcessPayment { .. }));
        let paid_or_not = |i: &Input| matches!(i, I::PaymentSucceeded { .. } | I::PaymentFailed { .. });
        let possible = match input {
            // One answer to the hold (learnt once or more, at any time);
            // a charge on the hold's news means the hold carried the charge.
            I::TicketsHeld { .. } | I::TicketsHoldFailed(_) => {
                seen.iter()
                    .all(|i| hold_answer(i).is_none_or(|k| Some(k) == hold_answer(input)))
                    && (hold_answer(input) == Some(HoldAnswer::Charged)
                        || asked_payment
                        || !seen.iter().any(|i| paid_or_not(i)))
            }
            // Charged on the hold's news, or asked for; a success may be
            // learnt twice (redelivered), at different times; never
            // alongside its failure.
            I::PaymentSucceeded { .. } | I::PaymentFailed { .. } => {
                let charged_on_hold = seen
                    .iter()
                    .all(|i| hold_answer(i).is_none_or(|k| k == HoldAnswer::Charged));
                (asked_payment || charged_on_hold)
                    && if matches!(input, I::PaymentSucceeded { .. }) {
                        only_this(|i| matches!(i, I::PaymentFailed { .. }))
                    } else {
                        only_this(|i| matches!(i, I::PaymentSucceeded { .. } | I::PaymentFailed { .. }))
                    }
            }
            I::TicketsReserved { .. } => {
                sent(|c| matches!(c, C::ReserveTickets { .. }))
                    && only_this(|i| matches!(i, I::TicketsReserved { .. } | I::TicketsReserveFailed))
            }
            // Also the ticket service's word on the payment's news.
            I::TicketsReserveFailed => {
                (sent(|c| matches!(c, C::ReserveTickets { .. }))
                    || seen.iter().any(|i| matches!(i, I::PaymentSucceeded { .. })))
                    && only_this(|i| matches!(i, I::TicketsReserved { .. } | I::TicketsReserveFailed))
            }
            // A hold there was: heard of, or paid on.
            I::HoldExpired => seen
                .iter()
                .any(|i| matches!(i, I::TicketsHeld { .. }) || paid_or_not(i)),
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

/// Every sequence of up to four inputs (17^4 of them), checked against
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
        let reserved = seq.contains(&reserved());
        if saga.stage.status() == BookingStatus::Confirmed {
            // Paid, or heard of the hold, early in it: the payment's news
            // is the ticket service's request to sell.
            let early = seq.contains(&paid_early()) || seq.contains(&tickets_held());
            assert!(
                paid && (reserved || early),
                "confirmed without paying or seats: {seq:?}"
            );
        }
        if saga.stage == S::Failed && paid {
            assert!(
                count(&C::RefundPayment) >= 1,
                "kept the money: {seq:?} -> {commands:?}"
            );
        }
        // Seats were held: heard of, or paid on (a payment is made only
        // on a hold).
        let held = seq.iter().any(|i| {
            matches!(
                i,
                I::TicketsHeld { .. } | I::PaymentSucceeded { .. } | I::PaymentFailed { .. }
            )
        });
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
