use ticketer_bus::BatchHandler;
use ticketer_contract::{Money, PaymentSettlement};
use ticketer_db::{Db, Inbox};
use ticketer_testkit::TestDatabase;

use super::*;
use crate::store::PaymentSource;

async fn database(postgres: bool) -> Option<TestDatabase> {
    let tdb = if postgres {
        TestDatabase::postgres(&ticketer_testkit::postgres_url()?, "saga_batch")
            .await
            .unwrap()
    } else {
        TestDatabase::sqlite()
    };
    let db = tdb.connect().await.unwrap();
    db.migrate("booking", store::MIGRATIONS).await.unwrap();
    Some(tdb)
}

fn booking(n: u128) -> Booking {
    let b = Booking::new(
        Uuid::from_u128(100 + n),
        7,
        2,
        PaymentSource::Token("tok_visa".into()),
        saga::start().0,
    );
    Booking {
        booking_id: Uuid::from_u128(n),
        ..b
    }
}

/// The hold's news; `charged`: it carries the booking's charge (the
/// payment service charges on it), as every hold asked now does.
fn held(n: u128, charged: bool) -> Envelope {
    Envelope::of(&TicketsHeld {
        booking_id: Uuid::from_u128(n),
        event_id: 7,
        ticket_ids: vec![Uuid::from_u128(1000 + 2 * n), Uuid::from_u128(1001 + 2 * n)],
        amount: Money::from_minor(2500),
        currency: "EUR".into(),
        hold_expires_at: chrono::Utc::now() + chrono::Duration::minutes(10),
        charge: charged.then(|| Charge {
            customer_id: Uuid::from_u128(100 + n),
            payment_token: "tok_visa".into(),
            payment_method_id: None,
        }),
    })
    .unwrap()
}

fn paid(n: u128) -> Envelope {
    Envelope::of(&PaymentSucceeded(PaymentSettlement {
        booking_id: Uuid::from_u128(n),
        payment_id: Uuid::from_u128(900 + n),
        customer_id: Some(Uuid::from_u128(100 + n)),
        amount: Money::from_minor(2500),
        currency: "EUR".into(),
        provider_reference: None,
    }))
    .unwrap()
}

/// Answers for five bookings, one of them answered twice in a row, one
/// paid before the saga heard of its hold.
fn answers() -> Vec<Envelope> {
    vec![
        held(1, true),
        held(2, false),
        paid(5),
        Envelope::of(&TicketsHoldFailed {
            booking_id: Uuid::from_u128(3),
            event_id: 7,
            reason: HoldRefusal::SoldOut,
        })
        .unwrap(),
        paid(1),
        Envelope::of(&PaymentFailed {
            booking_id: Uuid::from_u128(2),
            reason: PaymentFailure::PaymentDeclined,
            detail: "card_declined".into(),
        })
        .unwrap(),
        // The saga's own release acknowledged: no step.
        Envelope::of(&TicketsReleased {
            booking_id: Uuid::from_u128(4),
            event_id: 7,
            ticket_ids: vec![],
            reason: ReleaseReason::Released,
        })
        .unwrap(),
        held(5, true),
    ]
}

/// Every booking's stage and ticket count, and the kinds of the
/// messages it sent, in order. (Versions differ: a batch writes a
/// booking once however often it stepped.)
async fn outcome(db: &Db) -> Vec<(Uuid, Stage, usize, Vec<String>)> {
    let mut out = Vec::new();
    for n in 1..=5 {
        let b = store::get(db, Uuid::from_u128(n)).await.unwrap().unwrap();
        let rows: Vec<(String,)> = sqlx::query_as("SELECT body FROM outbox ORDER BY id")
            .fetch_all(db.reader())
            .await
            .unwrap();
        let kinds = rows
            .iter()
            .map(|(body,)| Envelope::from_bytes(body.as_bytes()).unwrap())
            .filter(|e| e.payload["booking_id"] == b.booking_id.to_string())
            .map(|e| e.kind)
            .collect();
        out.push((b.booking_id, b.saga.stage, b.saga.ticket_ids.len(), kinds));
    }
    out
}

/// Applied as one batch or one message at a time, the same answers
/// leave every booking in the same state with the same messages sent.
async fn a_batch_steps_like_one_message_at_a_time(postgres: bool) {
    let mut results = Vec::new();
    for batched in [true, false] {
        let Some(tdb) = database(postgres).await else {
            return;
        };
        let db = tdb.connect().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        for n in 1..=5 {
            store::insert(&mut tx, &booking(n), None).await.unwrap();
        }
        tx.commit().await.unwrap();
        let timeouts = Timeouts::for_tests();
        let driver = SagaDriver::new(timeouts, Waiters::default());
        let inbox = Inbox::new(db.clone(), "booking.replies", driver);
        let answers = answers();
        if batched {
            inbox.handle_batch(&answers).await.unwrap();
        } else {
            for a in &answers {
                inbox.handle_batch(std::slice::from_ref(a)).await.unwrap();
            }
        }
        results.push(outcome(&db).await);
    }
    assert_eq!(results[0], results[1]);
    let stages: Vec<Stage> = results[0].iter().map(|r| r.1).collect();
    assert_eq!(
        stages,
        [
            Stage::Confirmed,
            Stage::Failed,
            Stage::Failed,
            Stage::Holding,
            Stage::Confirmed
        ]
    );
    let kinds = |n: usize| results[0][n].3.clone();
    // Paid with most of the hold left: confirmed at once; the payment
    // service charged on the hold's news and the ticket service sells on
    // the payment's, so nothing asks either.
    assert_eq!(kinds(0), ["BookingConfirmed"]);
    // A hold without its charge (asked by an earlier version): paid on
    // the saga's request.
    assert_eq!(kinds(1), ["ProcessPayment", "ReleaseTickets", "BookingFailed"]);
    assert_eq!(kinds(2), ["BookingFailed"]);
    assert!(kinds(3).is_empty(), "an acknowledgement moves nothing");
    // Paid before its hold was heard of: confirmed on the hold's news,
    // with its tickets.
    assert_eq!(kinds(4), ["BookingConfirmed"]);
    assert_eq!(results[0][4].2, 2);
}

#[tokio::test]
async fn sqlite_a_batch_steps_like_one_message_at_a_time() {
    a_batch_steps_like_one_message_at_a_time(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_a_batch_steps_like_one_message_at_a_time() {
    a_batch_steps_like_one_message_at_a_time(true).await;
}

/// A booking's seats are held when the ticket service says it held them,
/// not when the news arrives: the hold's time runs from then. Never before
/// the booking was made, nor later than now, whatever the clocks say.
#[test]
fn seats_are_held_when_the_ticket_service_held_them() {
    let mut b = booking(1);
    // As stored (to the microsecond).
    b.created_at = time::format(chrono::Utc::now() - chrono::Duration::seconds(10));
    let created = time::parse(&b.created_at).unwrap();
    let at = |offset_ms: i64| {
        let mut news = held(1, true);
        news.occurred_at = created + chrono::Duration::milliseconds(offset_ms);
        news
    };
    let parsed = |s: String| time::parse(&s).unwrap();
    // Held 40 ms after the booking, heard of (now) 10 s after it.
    assert_eq!(
        parsed(held_at(&b, Some(&at(40)))),
        created + chrono::Duration::milliseconds(40)
    );
    // A ticket service whose clock runs behind: not before the booking.
    assert_eq!(parsed(held_at(&b, Some(&at(-300)))), created);
    // Or ahead: not in the future.
    let ahead = parsed(held_at(&b, Some(&at(60_000))));
    assert!(ahead <= chrono::Utc::now() && ahead > created, "{ahead}");
    // Without the news (a step taken here), now.
    let none = parsed(held_at(&b, None));
    assert!(none >= created + chrono::Duration::seconds(9), "{none}");
}
