//! The listener against a real (SQLite) database.

use ticketer_contract::{BookingSnapshot, BookingStatus, EventSnapshot, FailureReason};
use ticketer_db::{Db, MessageHandler};
use ticketer_testkit::TestDatabase;
use uuid::Uuid;

use super::*;
use crate::store::{Filter, Preferences};

async fn registered(db: &Db, listener: &Listener, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    let msg = Envelope::of(&UserRegistered {
        user_id: id,
        email: format!("{name}@example.com"),
        first_name: name.into(),
        last_name: "Test".into(),
        roles: vec![],
    })
    .unwrap();
    heard(db, listener, &msg).await;
    id
}

/// `user` turns email off.
async fn email_off(db: &Db, user: &str) {
    let off = Preferences {
        email: false,
        ..Preferences::default()
    };
    store::save_preferences(db, user, &off).await.unwrap();
}

async fn heard(db: &Db, listener: &Listener, msg: &Envelope) {
    let mut tx = db.begin().await.unwrap();
    listener.handle(&mut tx, msg).await.unwrap();
    tx.commit().await.unwrap();
}

fn failed(customer: Uuid) -> Envelope {
    Envelope::of(&BookingFailed(BookingSnapshot {
        booking_id: Uuid::new_v4(),
        customer_id: customer,
        event_id: 1,
        number_of_tickets: 1,
        status: BookingStatus::Failed,
        ticket_ids: vec![],
        amount: None,
        currency: None,
        failure_reason: Some(FailureReason::PaymentDeclined),
        created_at: String::new(),
        updated_at: String::new(),
        held_at: None,
    }))
    .unwrap()
}

async fn told(db: &Db, user: Uuid) -> Vec<String> {
    let filter = Filter {
        recipient_id: Some(user.to_string()),
        ..Filter::default()
    };
    let (items, _) = store::page(db, &filter, 100, 0).await.unwrap();
    items.into_iter().map(|n| n.notification_type).collect()
}

/// Someone who turned email off is not written to; someone else is,
/// once per message however often it is heard; someone unknown gets a
/// FAILED record, not a guessed address.
#[tokio::test]
async fn who_is_told_and_how_often() {
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("notification", crate::MIGRATIONS).await.unwrap();
    let listener = Listener::new(Arc::new(Notify::new()));
    let (ada, carol) = (
        registered(&db, &listener, "ada").await,
        registered(&db, &listener, "carol").await,
    );
    email_off(&db, &carol.to_string()).await;

    let ada_failed = failed(ada);
    heard(&db, &listener, &ada_failed).await;
    heard(&db, &listener, &ada_failed).await;
    heard(&db, &listener, &failed(carol)).await;
    assert_eq!(told(&db, ada).await, vec!["BOOKING_FAILED", "WELCOME"]);
    assert_eq!(told(&db, carol).await, vec!["WELCOME"], "email off: nothing more");

    let stranger = Uuid::new_v4();
    heard(&db, &listener, &failed(stranger)).await;
    let filter = Filter {
        recipient_id: Some(stranger.to_string()),
        ..Filter::default()
    };
    let (items, _) = store::page(&db, &filter, 10, 0).await.unwrap();
    assert_eq!(
        (items[0].status.as_str(), items[0].recipient.as_str()),
        ("FAILED", "")
    );
    assert!(items[0].last_error.as_deref().unwrap().contains("no address"));
    db.close().await;
}

fn booking(kind: NotificationType, customer: Uuid, booking_id: Uuid, event_id: i64) -> Envelope {
    let status = match kind {
        NotificationType::BookingConfirmed => BookingStatus::Confirmed,
        NotificationType::BookingCancelled => BookingStatus::Cancelled,
        _ => BookingStatus::Failed,
    };
    let b = BookingSnapshot {
        booking_id,
        customer_id: customer,
        event_id,
        number_of_tickets: 2,
        status,
        ticket_ids: vec![],
        amount: Some(ticketer_contract::Money::from_minor(5000)),
        currency: Some("EUR".into()),
        failure_reason: (status == BookingStatus::Failed).then_some(FailureReason::SoldOut),
        created_at: String::new(),
        updated_at: String::new(),
        held_at: None,
    };
    match kind {
        NotificationType::BookingConfirmed => Envelope::of(&BookingConfirmed(b)).unwrap(),
        NotificationType::BookingCancelled => Envelope::of(&BookingCancelled(b)).unwrap(),
        _ => Envelope::of(&BookingFailed(b)).unwrap(),
    }
}

fn event(event_id: i64, status: ticketer_contract::EventStatus) -> EventSnapshot {
    EventSnapshot {
        event_id,
        event_name: "Big show".into(),
        category: "Music".into(),
        location: "Stadium".into(),
        event_date: "2030-06-01".into(),
        start_time: "19:00".into(),
        end_time: "23:00".into(),
        ticket_capacity: 60_000,
        ticket_price: ticketer_contract::Money::from_minor(2500),
        currency: "EUR".into(),
        organizer: Uuid::nil(),
        status,
        version: 1,
    }
}

/// Everything each person was told, in a comparable form.
async fn everything(db: &Db) -> Vec<(String, String, String, String)> {
    let (items, _) = store::page(db, &Filter::default(), 1000, 0).await.unwrap();
    let mut all: Vec<_> = items
        .into_iter()
        .map(|n| {
            (
                n.recipient_id.unwrap_or_default(),
                n.notification_type,
                n.status,
                n.subject,
            )
        })
        .collect();
    all.sort();
    all
}

/// A batch as a sale delivers it (outcomes by the run, with other
/// messages between them) tells everyone exactly what hearing the same
/// messages one at a time would: the event's cancellation reaches the
/// holders confirmed before it and not those confirmed after it.
#[tokio::test]
async fn a_batch_tells_what_its_messages_one_by_one_would() {
    use ticketer_contract::EventStatus;
    let (ada, bob, carol, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let registration = |id: Uuid, name: &str| {
        Envelope::of(&UserRegistered {
            user_id: id,
            email: format!("{name}@example.com"),
            first_name: name.into(),
            last_name: "Test".into(),
            roles: vec![],
        })
        .unwrap()
    };
    let (ada_first, ada_second) = (Uuid::new_v4(), Uuid::new_v4());
    use NotificationType as N;
    let msgs = vec![
        registration(ada, "ada"),
        registration(bob, "bob"),
        registration(carol, "carol"),
        Envelope::of(&EventPublished(event(9, EventStatus::Published))).unwrap(),
        booking(N::BookingConfirmed, ada, ada_first, 9),
        booking(N::BookingConfirmed, ada, ada_second, 9),
        booking(N::BookingFailed, carol, Uuid::new_v4(), 9),
        booking(N::BookingFailed, stranger, Uuid::new_v4(), 9),
        booking(N::BookingCancelled, ada, ada_second, 9),
        Envelope::of(&EventCancelled(event(9, EventStatus::Cancelled))).unwrap(),
        booking(N::BookingConfirmed, bob, Uuid::new_v4(), 9),
        booking(N::BookingFailed, bob, Uuid::new_v4(), 404),
    ];
    let listener = Listener::new(Arc::new(Notify::new()));
    let prepared = || async {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("notification", crate::MIGRATIONS).await.unwrap();
        email_off(&db, &carol.to_string()).await;
        (tdb, db)
    };

    let (_together, db) = prepared().await;
    let mut tx = db.begin().await.unwrap();
    let refs: Vec<&Envelope> = msgs.iter().collect();
    listener.handle_all(&mut tx, &refs).await.unwrap();
    tx.commit().await.unwrap();
    let batch = everything(&db).await;
    db.close().await;

    let (_apart, db) = prepared().await;
    for msg in &msgs {
        heard(&db, &listener, msg).await;
    }
    assert_eq!(batch, everything(&db).await, "together as one by one");
    db.close().await;

    let of = |who: Uuid| -> Vec<&str> {
        let who = who.to_string();
        batch
            .iter()
            .filter(|n| n.0 == who)
            .map(|n| n.1.as_str())
            .collect()
    };
    assert_eq!(
        of(ada),
        [
            "BOOKING_CANCELLED",
            "BOOKING_CONFIRMED",
            "BOOKING_CONFIRMED",
            "EVENT_CANCELLED",
            "WELCOME"
        ],
        "the holder of a booking still standing when the event was cancelled"
    );
    assert_eq!(of(bob), ["BOOKING_CONFIRMED", "BOOKING_FAILED", "WELCOME"]);
    assert!(
        of(carol).is_empty(),
        "email off before she registered: told nothing"
    );
    assert_eq!(of(stranger), ["BOOKING_FAILED"]);
    assert!(batch
        .iter()
        .any(|n| n.0 == stranger.to_string() && n.2 == "FAILED"));
    assert!(
        batch
            .iter()
            .any(|n| n.1 == "BOOKING_FAILED" && n.3.contains("event #404")),
        "an event never heard of is named by its id: {batch:?}"
    );
    assert_eq!(of(Uuid::nil()), ["EVENT_PUBLISHED"], "the organizer");
}

/// An event with 10,000 ticket holders is cancelled: each is told once
/// in the message's one transaction (a holder of two bookings once, one
/// who turned email off not at all, one without an address as FAILED).
/// (Hearing a message twice adds nothing: `who_is_told_and_how_often`.)
#[tokio::test]
async fn ten_thousand_holders_are_told_once_each() {
    // 50,000 passes too (25 s in a debug build); 10,000 keeps the
    // suite's other tests from starving on this box's two cores.
    const HOLDERS: usize = 10_000;
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("notification", crate::MIGRATIONS).await.unwrap();
    let users: Vec<String> = (0..HOLDERS).map(|_| Uuid::new_v4().to_string()).collect();
    let mut tx = db.begin().await.unwrap();
    for chunk in users.chunks(1000) {
        // The last holder has no contact here.
        let known: Vec<&String> = chunk.iter().filter(|u| *u != &users[HOLDERS - 1]).collect();
        let sql = format!(
            "INSERT INTO contacts (user_id, email, first_name, last_name, updated_at) VALUES {}",
            ticketer_db::value_rows(known.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for u in known {
            q = q
                .bind(u)
                .bind(format!("{u}@example.com"))
                .bind("Holder")
                .bind("Test")
                .bind("");
        }
        q.execute(&mut *tx).await.unwrap();
        let sql = format!(
            "INSERT INTO holdings (booking_id, event_id, customer_id) VALUES {}",
            ticketer_db::value_rows(chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for u in chunk {
            q = q.bind(Uuid::new_v4().to_string()).bind(9i64).bind(u);
        }
        q.execute(&mut *tx).await.unwrap();
    }
    let second = Holding {
        booking_id: Uuid::new_v4().to_string(),
        event_id: 9,
        customer_id: users[0].clone(),
    };
    store::hold_all(&mut tx, &[second]).await.unwrap();
    tx.commit().await.unwrap();
    email_off(&db, &users[1]).await;

    let listener = Listener::new(Arc::new(Notify::new()));
    let cancelled = Envelope::of(&EventCancelled(event(
        9,
        ticketer_contract::EventStatus::Cancelled,
    )))
    .unwrap();
    heard(&db, &listener, &cancelled).await;

    let count = |status: &'static str| {
        let db = db.clone();
        async move {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n, COUNT(DISTINCT recipient_id) AS people FROM notifications
                 WHERE notification_type = 'EVENT_CANCELLED' AND status = $1",
            )
            .bind(status)
            .fetch_one(db.pool())
            .await
            .unwrap();
            use ticketer_db::Row;
            (
                row.try_get::<i64, _>("n").unwrap(),
                row.try_get::<i64, _>("people").unwrap(),
            )
        }
    };
    let pending = (HOLDERS - 2) as i64;
    assert_eq!(count("PENDING").await, (pending, pending), "everyone once");
    assert_eq!(count("FAILED").await, (1, 1), "the holder without an address");
    let filter = Filter {
        recipient_id: Some(users[7].clone()),
        ..Filter::default()
    };
    let (items, _) = store::page(&db, &filter, 10, 0).await.unwrap();
    assert!(items[0].subject.contains("Big show") && items[0].body_text.contains("Hello Holder"));
    db.close().await;
}

fn refunded(customer: Option<Uuid>, minor: i64) -> Envelope {
    Envelope::of(&PaymentRefunded(ticketer_contract::PaymentSettlement {
        booking_id: Uuid::new_v4(),
        payment_id: Uuid::new_v4(),
        customer_id: customer,
        amount: Money::from_minor(minor),
        currency: "EUR".into(),
        provider_reference: Some("re_1".into()),
    }))
    .unwrap()
}

/// A refund is told to the customer who paid, once however often it is
/// heard or answered; a refund of nothing, or one that does not say who paid, tells
/// nobody.
#[tokio::test]
async fn refunds_are_told_to_whoever_paid_when_money_went_back() {
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("notification", crate::MIGRATIONS).await.unwrap();
    let listener = Listener::new(Arc::new(Notify::new()));
    let ada = registered(&db, &listener, "ada").await;
    let back = refunded(Some(ada), 2500);
    heard(&db, &listener, &back).await;
    heard(&db, &listener, &back).await;
    // The same refund answered again (its command sent twice): a new
    // message, the same booking, told once.
    let mut again: PaymentRefunded = serde_json::from_value(back.payload.clone()).unwrap();
    again.0.payment_id = Uuid::new_v4();
    heard(&db, &listener, &Envelope::of(&again).unwrap()).await;
    heard(&db, &listener, &refunded(Some(ada), 0)).await;
    heard(&db, &listener, &refunded(None, 2500)).await;
    assert_eq!(told(&db, ada).await, vec!["PAYMENT_REFUNDED", "WELCOME"]);
    let filter = Filter {
        recipient_id: Some(ada.to_string()),
        ..Filter::default()
    };
    let (items, _) = store::page(&db, &filter, 100, 0).await.unwrap();
    let refund = items
        .iter()
        .find(|n| n.notification_type == "PAYMENT_REFUNDED")
        .unwrap();
    assert_eq!(refund.subject, "Your refund of 25.00 EUR");
    assert_eq!(refund.recipient, "ada@example.com");
    let (all, _) = store::page(&db, &Filter::default(), 100, 0).await.unwrap();
    assert_eq!(all.len(), 2, "nobody else was told: {all:?}");
    db.close().await;
}

/// The delivery workers are woken only by a batch that stored something
/// to send: a sale's outcomes for buyers this service has no address of
/// are recorded FAILED and wake nobody (each wake costs every channel's
/// worker a claim).
#[tokio::test]
async fn only_notifications_to_send_wake_the_workers() {
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("notification", crate::MIGRATIONS).await.unwrap();
    let wake = Arc::new(Notify::new());
    let listener = Listener::new(wake.clone());
    let woken = || async {
        tokio::time::timeout(std::time::Duration::from_millis(50), wake.notified())
            .await
            .is_ok()
    };
    let committed = |msg: &Envelope| listener.committed(&[msg]);

    let unknown = failed(Uuid::new_v4());
    heard(&db, &listener, &unknown).await;
    committed(&unknown);
    assert!(!woken().await, "a FAILED record woke the workers");

    let ada = registered(&db, &listener, "ada").await;
    listener.committed(&[]);
    assert!(woken().await, "a welcome to send did not wake the workers");
    assert!(!woken().await, "woken twice for one batch");

    let declined = failed(ada);
    heard(&db, &listener, &declined).await;
    committed(&declined);
    assert!(woken().await, "ada's news did not wake the workers");
}
