//! The payment service as the booking saga sees it: commands in on the bus,
//! answers out on the bus, the record over HTTP. SQLite with the in-process
//! bus always; PostgreSQL with RabbitMQ when their URLs are set.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use ticketer_auth::keys::SigningKey;
use ticketer_bus::{
    testing::TestVhost,
    topology::{BOOKING_EXCHANGE, BOOKING_PAYMENTS},
    BatchHandler, Bus, Envelope, HandleError, Outgoing,
};
use ticketer_config::{Env, InfraConfig, Service};
use ticketer_db::testing::TestDatabase;
use ticketer_http::{Claims, Role, ServiceParts};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
struct Answers(Mutex<Vec<(String, Value)>>);

#[async_trait::async_trait]
impl BatchHandler for Answers {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        let mut all = self.0.lock().unwrap();
        all.extend(batch.iter().map(|m| (m.kind.clone(), m.payload.clone())));
        Ok(())
    }
}

impl Answers {
    /// Waits for `n` answers about `booking`.
    async fn about(&self, booking: Uuid, n: usize) -> Vec<(String, Value)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<_> = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, p)| p["booking_id"] == json!(booking))
                .cloned()
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} answers for {booking}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Rig {
    bus: Bus,
    base: String,
    key: SigningKey,
    answers: Arc<Answers>,
    shutdown: CancellationToken,
    _db: TestDatabase,
    _vhost: Option<TestVhost>,
    _data: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Rig {
    async fn start(real: bool) -> Option<Rig> {
        let (db, bus, vhost) = if real {
            let (Some(pg), Some(amqp)) = (
                ticketer_db::testing::postgres_url(),
                ticketer_bus::testing::amqp_url(),
            ) else {
                ticketer_config::skip_test(
                    "payments on PostgreSQL/RabbitMQ",
                    "TICKETER_TEST_POSTGRES_URL and TICKETER_TEST_AMQP_URL",
                );
                return None;
            };
            let vhost = TestVhost::create(&amqp).unwrap();
            let bus = Bus::connect(Some(&vhost.url)).await.unwrap();
            (
                TestDatabase::postgres(&pg, "payment").await.unwrap(),
                bus,
                Some(vhost),
            )
        } else {
            (TestDatabase::sqlite(), Bus::in_process(), None)
        };
        let data = tempfile::tempdir().unwrap();
        let vars = HashMap::from([
            ("PAYMENT_DATABASE_URL".to_string(), db.url.clone()),
            ("PAYMENT_OUTBOX_POLL_MS".to_string(), "20".to_string()),
        ]);
        let env = Env::from_map(Service::Payment, vars);
        let infra = InfraConfig::from_env(Service::Payment, &env, data.path().to_path_buf()).unwrap();
        let shutdown = CancellationToken::new();
        let answers = Arc::new(Answers::default());
        // The test stands where the booking service would: on its queue.
        let sub = BOOKING_PAYMENTS.subscription();
        bus.subscribe(sub, answers.clone(), shutdown.clone())
            .await
            .unwrap();
        let key = SigningKey::from_pem(&SigningKey::generate_pem()).unwrap();
        let parts = ServiceParts {
            db: db.connect().await.unwrap(),
            bus: bus.clone(),
            cache: Some(ticketer_cache::Cache::memory()),
            verifier: key.verifier("ticketer-auth"),
        };
        let listener = ticketer_http::bind("127.0.0.1", 0).await.unwrap();
        let app = ticketer_payment::build(&infra, parts, listener, shutdown.clone())
            .await
            .unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        Some(Rig {
            bus,
            base,
            key,
            answers,
            shutdown,
            _db: db,
            _vhost: vhost,
            _data: data,
        })
    }

    async fn send(&self, kind: &str, payload: Value) {
        let msg = Outgoing::new(BOOKING_EXCHANGE, &Envelope::new(kind, &payload));
        self.bus.publish(&[msg]).await.unwrap();
    }

    async fn record(&self, booking: Uuid, as_user: Uuid) -> (u16, Value) {
        let now = chrono::Utc::now().timestamp();
        let token = self.key.sign(&Claims {
            sub: as_user.to_string(),
            email: "c@example.com".into(),
            roles: vec![Role::Customer],
            iat: now,
            exp: now + 300,
            iss: "ticketer-auth".into(),
            nbf: None,
        });
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/payments/booking/{booking}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn charge(booking: Uuid, customer: Uuid, token: &str) -> Value {
    json!({"booking_id": booking, "customer_id": customer, "amount": "49.90", "currency": "EUR", "payment_token": token})
}

async fn charges_once_and_refunds(real: bool) {
    let Some(rig) = Rig::start(real).await else { return };
    let customer = Uuid::new_v4();

    // A good card is charged; the record is the customer's alone.
    let paid = Uuid::new_v4();
    rig.send("ProcessPayment", charge(paid, customer, "tok_visa"))
        .await;
    let a = rig.answers.about(paid, 1).await;
    assert_eq!(a[0].0, "PaymentSucceeded");
    assert_eq!(a[0].1["amount"], "49.90");
    let (status, record) = rig.record(paid, customer).await;
    assert_eq!((status, record["status"].as_str()), (200, Some("SUCCEEDED")));
    assert_eq!(rig.record(paid, Uuid::new_v4()).await.0, 403);

    // Asked again, fifty times at once and even with another card: one charge.
    let repeats: Vec<Outgoing> = (0..50)
        .map(|i| {
            let token = if i % 2 == 0 {
                "tok_visa"
            } else {
                "tok_chargeDeclined"
            };
            Outgoing::new(
                BOOKING_EXCHANGE,
                &Envelope::new("ProcessPayment", &charge(paid, customer, token)),
            )
        })
        .collect();
    rig.bus.publish(&repeats).await.unwrap();
    let a = rig.answers.about(paid, 51).await;
    assert!(a
        .iter()
        .all(|(k, p)| k == "PaymentSucceeded" && p["payment_id"] == a[0].1["payment_id"]));

    // Declines and provider errors, as the booking will report them.
    for (token, reason, detail) in [
        ("tok_chargeDeclined", "PAYMENT_DECLINED", "card_declined"),
        ("tok_insufficientFunds", "PAYMENT_DECLINED", "insufficient_funds"),
        ("tok_processingError", "PAYMENT_ERROR", "processing_error"),
    ] {
        let b = Uuid::new_v4();
        rig.send("ProcessPayment", charge(b, customer, token)).await;
        let a = rig.answers.about(b, 1).await;
        assert_eq!(
            (a[0].0.as_str(), &a[0].1["reason"], &a[0].1["detail"]),
            ("PaymentFailed", &json!(reason), &json!(detail))
        );
        assert_eq!(rig.record(b, customer).await.1["status"], "FAILED");
    }

    // Refunds, twice: one refund.
    rig.send("RefundPayment", json!({"booking_id": paid})).await;
    rig.send("RefundPayment", json!({"booking_id": paid})).await;
    let a = rig.answers.about(paid, 53).await;
    let refunds: Vec<_> = a.iter().filter(|(k, _)| k == "PaymentRefunded").collect();
    assert_eq!(refunds.len(), 2);
    assert!(refunds.iter().all(|(_, p)| p["amount"] == "49.90"));
    assert_eq!(rig.record(paid, customer).await.1["status"], "REFUNDED");

    // Charged and refunded twice in one go (one batch, or several): the
    // charge is made once and given back once.
    let both = Uuid::new_v4();
    let together: Vec<Outgoing> = [
        Envelope::new("ProcessPayment", &charge(both, customer, "tok_visa")),
        Envelope::new("RefundPayment", &json!({"booking_id": both})),
        Envelope::new("RefundPayment", &json!({"booking_id": both})),
    ]
    .iter()
    .map(|e| Outgoing::new(BOOKING_EXCHANGE, e))
    .collect();
    rig.bus.publish(&together).await.unwrap();
    let a = rig.answers.about(both, 3).await;
    // The answers may arrive in any order; what they say may not vary.
    let mut kinds: Vec<&str> = a.iter().map(|(k, _)| k.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["PaymentRefunded", "PaymentRefunded", "PaymentSucceeded"],
        "{a:?}"
    );
    assert!(a
        .iter()
        .all(|(_, p)| p["payment_id"] == a[0].1["payment_id"] && p["amount"] == "49.90"));
    assert_eq!(rig.record(both, customer).await.1["status"], "REFUNDED");
}

#[tokio::test]
async fn embedded_charges_once_and_refunds() {
    charges_once_and_refunds(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_charges_once_and_refunds() {
    charges_once_and_refunds(true).await;
}
