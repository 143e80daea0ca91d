use std::{str::FromStr, sync::atomic::AtomicUsize, sync::atomic::Ordering};

use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Connection};
use ticketer_testkit::TestDatabase;

use super::*;
use crate::provider::charge_key;

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
        payment_method_id: None,
    })
    .unwrap();
    let refund = Envelope::of(&RefundPayment { booking_id: booking }).unwrap();
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
            payment_method_id: None,
        })
        .unwrap()
    };
    let bookings: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    let undone = bookings[3];
    let mut batch: Vec<Envelope> = bookings.iter().map(|b| charge(*b)).collect();
    batch.insert(5, Envelope::of(&RefundPayment { booking_id: undone }).unwrap());
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

/// Charges the provider is slow to answer: PROCESSING, then settled.
mod processing;

/// Charges that name saved cards.
mod cards {
    use super::*;
    use crate::{
        commands::cards::{charge_with, with_saved_cards, NO_SUCH_CARD},
        provider::Sandbox,
        store::methods::{self, Method},
    };

    async fn saved(db: &Db, owner: Uuid, token: &str) -> Uuid {
        let m = Method {
            id: Uuid::now_v7().to_string(),
            customer_id: owner.to_string(),
            provider_token: token.into(),
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2034,
            is_default: false,
            created_at: String::new(),
        };
        let saved = methods::save(db, &m, 20).await.unwrap().unwrap();
        saved.id.parse().unwrap()
    }

    fn charge(customer: Uuid, card: Uuid) -> ProcessPayment {
        ProcessPayment {
            booking_id: Uuid::new_v4(),
            customer_id: customer,
            amount: Money::from_minor(1000),
            currency: "EUR".into(),
            payment_token: String::new(),
            payment_method_id: Some(card),
        }
    }

    /// A card pays only for its owner; a deleted card pays for nothing new,
    /// but a charge made with it before can still be asked about.
    #[tokio::test]
    async fn a_saved_card_pays_for_its_owner_only() {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("payment", store::MIGRATIONS).await.unwrap();
        let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let (visa, old) = (
            saved(&db, ada, "tok_visa").await,
            saved(&db, ada, "tok_mastercard").await,
        );
        assert!(methods::delete(&db, &ada.to_string(), &old.to_string())
            .await
            .unwrap());

        let mut charges = [
            charge(ada, visa),
            charge(bob, visa),
            charge(ada, old),
            charge(ada, Uuid::new_v4()),
        ];
        with_saved_cards(&db, charges.iter_mut().collect(), false)
            .await
            .unwrap();
        let tokens: Vec<&str> = charges.iter().map(|c| c.payment_token.as_str()).collect();
        assert_eq!(tokens, ["tok_visa", "", "", ""]);
        let sandbox = Sandbox {
            delay: Duration::ZERO,
        };
        assert!(matches!(
            charge_with(&sandbox, &charges[0]).await,
            ChargeOutcome::Succeeded { .. }
        ));
        assert_eq!(
            charge_with(&sandbox, &charges[1]).await,
            ChargeOutcome::Declined {
                reason: NO_SUCH_CARD.into()
            }
        );

        let mut asked_again = charge(ada, old);
        with_saved_cards(&db, vec![&mut asked_again], true).await.unwrap();
        assert_eq!(asked_again.payment_token, "tok_mastercard");
        db.close().await;
    }
}
