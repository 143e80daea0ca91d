use std::{str::FromStr, sync::atomic::AtomicUsize, sync::atomic::Ordering};

use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection};
use ticketer_testkit::TestDatabase;

use super::*;

/// A provider that, whenever it is asked, looks for a transaction open
/// on the payment database: one that another writer would wait for.
struct Probe {
    url: String,
    calls: AtomicUsize,
    inside_a_transaction: AtomicUsize,
}

impl Probe {
    async fn look(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let busy = if self.url.starts_with("sqlite:") {
            // A write lock held elsewhere makes this fail at once.
            let mut conn = SqliteConnectOptions::from_str(&self.url)
                .unwrap()
                .busy_timeout(std::time::Duration::ZERO)
                .connect()
                .await
                .unwrap();
            let taken = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.is_err();
            if !taken {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            conn.close().await.unwrap();
            taken
        } else {
            let db = Db::connect(&self.url, 1).await.unwrap();
            let (open,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND state LIKE 'idle in transaction%'
                   AND pid <> pg_backend_pid()",
            )
            .fetch_one(db.pool())
            .await
            .unwrap();
            db.close().await;
            open > 0
        };
        if busy {
            self.inside_a_transaction.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait::async_trait]
impl PaymentProvider for Probe {
    async fn charge(&self, key: Uuid, _amount: Money, _currency: &str, token: &str) -> ChargeOutcome {
        self.look().await;
        crate::provider::sandbox_decision(key, token)
    }

    async fn refund(&self, key: Uuid, _charge: &str, _amount: Money) -> Result<String, String> {
        self.look().await;
        Ok(format!("probe_re_{}", key.simple()))
    }
}

async fn the_provider_is_asked_with_no_transaction_open(postgres: bool) {
    let tdb = if postgres {
        let Some(url) = ticketer_testkit::postgres_url() else {
            ticketer_testkit::skip_test("PostgreSQL payment test", "TICKETER_TEST_POSTGRES_URL");
            return;
        };
        TestDatabase::postgres(&url, "provider_outside").await.unwrap()
    } else {
        TestDatabase::sqlite()
    };
    let db = tdb.connect().await.unwrap();
    db.migrate("payment", store::MIGRATIONS).await.unwrap();
    let probe = Arc::new(Probe {
        url: tdb.url.clone(),
        calls: AtomicUsize::new(0),
        inside_a_transaction: AtomicUsize::new(0),
    });
    // The probe sees a transaction that has written, as a consumer's has
    // by the time its handler runs (the inbox rows go first).
    let mut tx = db.begin().await.unwrap();
    sqlx::query("INSERT INTO inbox (consumer, message_id, processed_at) VALUES ('probe', 'x', 'now')")
        .execute(&mut *tx)
        .await
        .unwrap();
    probe.look().await;
    tx.rollback().await.unwrap();
    assert_eq!(
        probe.inside_a_transaction.swap(0, Ordering::SeqCst),
        1,
        "the probe is blind"
    );
    probe.calls.store(0, Ordering::SeqCst);

    let consumer = PaymentConsumer::new(db.clone(), "payment.commands", probe.clone());
    let booking = Uuid::new_v4();
    let charge = Envelope::of(&ProcessPayment {
        booking_id: booking,
        customer_id: Uuid::new_v4(),
        amount: Money::from_minor(4000),
        currency: "EUR".into(),
        payment_token: "tok_visa".into(),
    });
    let refund = Envelope::of(&RefundPayment { booking_id: booking });
    consumer
        .handle_batch(std::slice::from_ref(&charge))
        .await
        .unwrap();
    // Redelivered: answered from the record, the provider not asked.
    consumer
        .handle_batch(std::slice::from_ref(&charge))
        .await
        .unwrap();
    consumer
        .handle_batch(std::slice::from_ref(&refund))
        .await
        .unwrap();
    assert_eq!(probe.calls.load(Ordering::SeqCst), 2, "one charge, one refund");
    assert_eq!(
        probe.inside_a_transaction.load(Ordering::SeqCst),
        0,
        "the provider was asked while a transaction was open"
    );
    let paid = store::find(&db, &booking.to_string()).await.unwrap().unwrap();
    assert_eq!(paid.status, "REFUNDED");
    assert_eq!(ticketer_db::pending_count(&db).await.unwrap(), 2, "two answers");
    db.close().await;
}

#[tokio::test]
async fn sqlite_the_provider_is_asked_with_no_transaction_open() {
    the_provider_is_asked_with_no_transaction_open(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_the_provider_is_asked_with_no_transaction_open() {
    the_provider_is_asked_with_no_transaction_open(true).await;
}

/// A provider that keeps every call waiting until another is in flight
/// too (or a few seconds pass), and notes the calls in the order they
/// were made.
#[derive(Default)]
struct Overlapping {
    in_flight: AtomicUsize,
    most_at_once: AtomicUsize,
    calls: Mutex<Vec<(String, Uuid)>>,
    company: tokio::sync::Notify,
}

impl Overlapping {
    async fn call(&self, what: &str, key: Uuid) {
        self.calls.lock().unwrap().push((what.to_string(), key));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        self.company.notify_waiters();
        if now < 2 {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), self.company.notified()).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl PaymentProvider for Overlapping {
    async fn charge(&self, key: Uuid, _amount: Money, _currency: &str, token: &str) -> ChargeOutcome {
        self.call("charge", key).await;
        crate::provider::sandbox_decision(key, token)
    }

    async fn refund(&self, key: Uuid, _charge: &str, _amount: Money) -> Result<String, String> {
        self.call("refund", key).await;
        Ok(format!("re_{}", key.simple()))
    }
}

/// A slow provider must not make a batch take as long as all its calls
/// one after another: different bookings are asked at once. One booking's
/// commands keep their order: its refund follows the charge it undoes.
#[tokio::test]
async fn different_bookings_are_charged_at_once_one_bookings_steps_in_order() {
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("payment", store::MIGRATIONS).await.unwrap();
    let provider = Arc::new(Overlapping::default());
    let consumer = PaymentConsumer::new(db.clone(), "payment.commands", provider.clone());
    let charge = |booking| {
        Envelope::of(&ProcessPayment {
            booking_id: booking,
            customer_id: Uuid::new_v4(),
            amount: Money::from_minor(2500),
            currency: "EUR".into(),
            payment_token: "tok_visa".into(),
        })
    };
    let bookings: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    let undone = bookings[3];
    let mut batch: Vec<Envelope> = bookings.iter().map(|b| charge(*b)).collect();
    batch.insert(5, Envelope::of(&RefundPayment { booking_id: undone }));
    consumer.handle_batch(&batch).await.unwrap();

    let most = provider.most_at_once.load(Ordering::SeqCst);
    assert!(
        (2..=PROVIDER_CALLS_AT_ONCE).contains(&most),
        "{most} calls at once"
    );
    let calls = provider.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 11, "ten charges and one refund: {calls:?}");
    let at = |what: &str, key: Uuid| calls.iter().position(|c| c == &(what.to_string(), key)).unwrap();
    assert!(
        at("charge", charge_key(undone)) < at("refund", refund_key(undone)),
        "{calls:?}"
    );
    for b in &bookings {
        let paid = store::find(&db, &b.to_string()).await.unwrap().unwrap();
        let want = if *b == undone { "REFUNDED" } else { "SUCCEEDED" };
        assert_eq!(paid.status, want, "booking {b}");
    }
    db.close().await;
}

/// Answers at once, except for `tok_delayed`, which waits until released.
struct OneSlowCard {
    calls: AtomicUsize,
    release: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl PaymentProvider for OneSlowCard {
    async fn charge(&self, key: Uuid, _amount: Money, _currency: &str, token: &str) -> ChargeOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if token == "tok_delayed" {
            self.release.acquire().await.unwrap().forget();
        }
        crate::provider::sandbox_decision(key, token)
    }

    async fn refund(&self, key: Uuid, _charge: &str, _amount: Money) -> Result<String, String> {
        Ok(format!("re_{}", key.simple()))
    }
}

fn charge_of(booking: Uuid, token: &str) -> Envelope {
    Envelope::of(&ProcessPayment {
        booking_id: booking,
        customer_id: Uuid::new_v4(),
        amount: Money::from_minor(1500),
        currency: "EUR".into(),
        payment_token: token.into(),
    })
}

async fn payment_db() -> (TestDatabase, Db) {
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("payment", store::MIGRATIONS).await.unwrap();
    (tdb, db)
}

async fn status_of(db: &Db, booking: Uuid) -> Option<String> {
    store::find(db, &booking.to_string())
        .await
        .unwrap()
        .map(|p| p.status)
}

/// Waits until `check` holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The bookings whose cards answered are recorded and answered while a
/// slow card is still being charged, and once the patience is spent the
/// batch is done: the slow charge stands PROCESSING, unanswered, until the
/// provider answers, then it is settled and answered once. Redeliveries,
/// before and after, charge nobody again and answer nothing twice.
#[tokio::test]
async fn a_slow_card_holds_up_nothing() {
    let (_tdb, db) = payment_db().await;
    let provider = Arc::new(OneSlowCard {
        calls: AtomicUsize::new(0),
        release: tokio::sync::Semaphore::new(0),
    });
    let consumer = PaymentConsumer::new(db.clone(), "payment.commands", provider.clone())
        .with_patience(std::time::Duration::from_millis(200));
    let fast: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let slow = Uuid::new_v4();
    let mut batch: Vec<Envelope> = fast.iter().map(|b| charge_of(*b, "tok_visa")).collect();
    batch.insert(2, charge_of(slow, "tok_delayed"));

    // Returns with the slow card still out: nothing waits for it.
    tokio::time::timeout(std::time::Duration::from_secs(5), consumer.handle_batch(&batch))
        .await
        .expect("the batch waited for the slow card")
        .unwrap();
    for b in &fast {
        assert_eq!(status_of(&db, *b).await.as_deref(), Some("SUCCEEDED"));
    }
    assert_eq!(status_of(&db, slow).await.as_deref(), Some("PROCESSING"));
    assert_eq!(
        ticketer_db::pending_count(&db).await.unwrap(),
        5,
        "five answers out"
    );

    // Asked again (a new message) while the provider works on it: no
    // second call, no answer yet; a refund waits for the charge's outcome.
    consumer
        .handle_batch(&[charge_of(slow, "tok_delayed")])
        .await
        .unwrap();
    let refund = Envelope::of(&RefundPayment { booking_id: slow });
    assert!(matches!(
        consumer.handle_batch(std::slice::from_ref(&refund)).await,
        Err(HandleError::Transient(_))
    ));
    assert_eq!(provider.calls.load(Ordering::SeqCst), 6);
    assert_eq!(ticketer_db::pending_count(&db).await.unwrap(), 5);

    provider.release.add_permits(1);
    eventually("the slow charge is settled", async || {
        status_of(&db, slow).await.as_deref() == Some("SUCCEEDED")
    })
    .await;
    assert_eq!(
        ticketer_db::pending_count(&db).await.unwrap(),
        6,
        "its answer out"
    );
    let paid = store::find(&db, &slow.to_string()).await.unwrap().unwrap();
    assert_eq!(paid.pending_command, None, "the token is not kept");
    assert!(paid.provider_reference.is_some());

    consumer.handle_batch(&batch).await.unwrap();
    assert_eq!(
        ticketer_db::pending_count(&db).await.unwrap(),
        6,
        "a redelivery is skipped"
    );
    let again: Vec<Envelope> = fast
        .iter()
        .chain([&slow])
        .map(|b| charge_of(*b, "tok_delayed"))
        .collect();
    consumer.handle_batch(&again).await.unwrap();
    assert_eq!(provider.calls.load(Ordering::SeqCst), 6, "nobody charged twice");
    assert_eq!(
        ticketer_db::pending_count(&db).await.unwrap(),
        12,
        "the same six answers again, from the record"
    );
    consumer.handle_batch(&[refund]).await.unwrap();
    assert_eq!(status_of(&db, slow).await.as_deref(), Some("REFUNDED"));
    db.close().await;
}

/// A charge left PROCESSING by a process that died is finished by the
/// sweep of another, with the same idempotency key, and answered once; the
/// dead process's call answering late changes nothing.
#[tokio::test]
async fn a_charge_left_processing_by_a_crash_is_finished_by_the_sweep() {
    let (_tdb, db) = payment_db().await;
    let hung = Arc::new(OneSlowCard {
        calls: AtomicUsize::new(0),
        release: tokio::sync::Semaphore::new(0),
    });
    let first = PaymentConsumer::new(db.clone(), "payment.commands", hung.clone())
        .with_patience(std::time::Duration::from_millis(50));
    let booking = Uuid::new_v4();
    first
        .handle_batch(&[charge_of(booking, "tok_delayed")])
        .await
        .unwrap();
    assert_eq!(status_of(&db, booking).await.as_deref(), Some("PROCESSING"));

    // The first process is taken for dead; another one's sweep finds the
    // charge once it is older than the given age, not before.
    let answering = Arc::new(OneSlowCard {
        calls: AtomicUsize::new(0),
        release: tokio::sync::Semaphore::new(10),
    });
    let second = PaymentConsumer::new(db.clone(), "payment.commands", answering.clone());
    let sweeper = second.processing();
    assert_eq!(
        sweeper.sweep(std::time::Duration::from_secs(3600)).await.unwrap(),
        0
    );
    assert_eq!(sweeper.sweep(std::time::Duration::ZERO).await.unwrap(), 1);
    eventually("the sweep settles the charge", async || {
        status_of(&db, booking).await.as_deref() == Some("SUCCEEDED")
    })
    .await;
    assert_eq!(answering.calls.load(Ordering::SeqCst), 1);
    let paid = store::find(&db, &booking.to_string()).await.unwrap().unwrap();
    assert_eq!(
        paid.provider_reference,
        Some(format!("sandbox_ch_{}", charge_key(booking).simple())),
        "asked again with the charge's own key"
    );
    assert_eq!(ticketer_db::pending_count(&db).await.unwrap(), 1, "one answer");
    assert_eq!(
        sweeper.sweep(std::time::Duration::ZERO).await.unwrap(),
        0,
        "nothing left"
    );

    // The dead process's call answers after all: already settled.
    hung.release.add_permits(1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(hung.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        ticketer_db::pending_count(&db).await.unwrap(),
        1,
        "still one answer"
    );
    assert_eq!(status_of(&db, booking).await.as_deref(), Some("SUCCEEDED"));
    db.close().await;
}
