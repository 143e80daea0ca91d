use super::*;

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
        payment_method_id: None,
    })
    .unwrap()
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
    let refund = Envelope::of(&RefundPayment { booking_id: slow }).unwrap();
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
