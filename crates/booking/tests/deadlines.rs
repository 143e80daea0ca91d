//! Deadlines: a hold nobody answers is asked for again; a payment that
//! never answers fails the booking with PAYMENT_ERROR once its deadline
//! passes, the seats are released, and a payment that succeeds after all
//! is refunded. The booking service runs alone on the in-process
//! bus; the test plays the ticket and payment services.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use ticketer_auth::keys::SigningKey;
use ticketer_bus::{
    topology::{PAYMENT_COMMANDS, PAYMENT_EXCHANGE, TICKET_COMMANDS, TICKET_EXCHANGE},
    BatchHandler, Bus, Envelope, HandleError, Outgoing,
};
use ticketer_config::{Env, InfraConfig, Service};
use ticketer_db::testing::TestDatabase;
use ticketer_http::{Claims, Role, ServiceParts};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
struct Seen(Mutex<Vec<(String, Value)>>);

#[async_trait::async_trait]
impl BatchHandler for Seen {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        self.0
            .lock()
            .unwrap()
            .extend(batch.iter().map(|m| (m.kind.clone(), m.payload.clone())));
        Ok(())
    }
}

impl Seen {
    /// Waits until `kind` was seen `n` times.
    async fn wait_for_times(&self, kind: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.0.lock().unwrap().iter().filter(|(k, _)| k == kind).count();
            if seen >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{kind} seen {seen} times, not {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for(&self, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, p)) = self.0.lock().unwrap().iter().find(|(k, _)| k == kind) {
                return p.clone();
            }
            assert!(Instant::now() < deadline, "no {kind}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn an_unanswered_hold_is_asked_again_and_an_unanswered_payment_times_out() {
    let db = TestDatabase::sqlite();
    let data = tempfile::tempdir().unwrap();
    let vars = HashMap::from([
        ("BOOKING_DATABASE_URL".to_string(), db.url.clone()),
        ("BOOKING_OUTBOX_POLL_MS".to_string(), "20".to_string()),
        ("BOOKING_PAYMENT_TIMEOUT_SECONDS".to_string(), "1".to_string()),
        ("BOOKING_REPLY_TIMEOUT_SECONDS".to_string(), "1".to_string()),
        ("BOOKING_DEADLINE_SWEEP_MS".to_string(), "100".to_string()),
    ]);
    let env = Env::from_map(Service::Booking, vars);
    let infra = InfraConfig::from_env(Service::Booking, &env, data.path().to_path_buf()).unwrap();
    let bus = Bus::in_process();
    let shutdown = CancellationToken::new();
    let (tickets, payments) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    bus.subscribe(TICKET_COMMANDS.subscription(), tickets.clone(), shutdown.clone())
        .await
        .unwrap();
    bus.subscribe(
        PAYMENT_COMMANDS.subscription(),
        payments.clone(),
        shutdown.clone(),
    )
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
    let app = ticketer_booking::build(&infra, parts, listener, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    let customer = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp();
    let token = key.sign(&Claims {
        sub: customer.to_string(),
        email: "c@example.com".into(),
        roles: vec![Role::Customer],
        iat: now,
        exp: now + 300,
        iss: "ticketer-auth".into(),
        nbf: None,
    });
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/api/v1/bookings"))
        .bearer_auth(&token)
        .json(&json!({"event_id": 7, "number_of_tickets": 1, "payment_token": "tok_visa"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let booking: Uuid = created["booking_id"].as_str().unwrap().parse().unwrap();

    // The ticket service does not answer the hold in time: it is asked
    // again (a hold is keyed by booking, so that is safe), and the booking
    // stays pending meanwhile.
    tickets.wait_for_times("HoldTickets", 2).await;
    let read = || async {
        http.get(format!("{base}/api/v1/bookings/{booking}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(read().await["status"], "PENDING");

    // Then it holds a seat; the charge is asked for, and nobody answers.
    let seat = Uuid::new_v4();
    let held = json!({"booking_id": booking, "event_id": 7, "ticket_ids": [seat], "amount": "20.00",
                      "currency": "EUR", "hold_expires_at": chrono::Utc::now()});
    bus.publish(&[Outgoing::new(
        TICKET_EXCHANGE,
        &Envelope::new("TicketsHeld", &held),
    )])
    .await
    .unwrap();
    payments.wait_for("ProcessPayment").await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let b = read().await;
        if b["status"] == "FAILED" {
            break b;
        }
        assert!(Instant::now() < deadline, "the booking never timed out: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed["failure_reason"], "PAYMENT_ERROR");
    let release = tickets.wait_for("ReleaseTickets").await;
    assert_eq!(release["booking_id"], json!(booking));

    // The provider answers after all: the money goes back.
    let paid =
        json!({"booking_id": booking, "payment_id": Uuid::new_v4(), "amount": "20.00", "currency": "EUR"});
    bus.publish(&[Outgoing::new(
        PAYMENT_EXCHANGE,
        &Envelope::new("PaymentSucceeded", &paid),
    )])
    .await
    .unwrap();
    let refund = payments.wait_for("RefundPayment").await;
    assert_eq!(refund["booking_id"], json!(booking));
    shutdown.cancel();
}
