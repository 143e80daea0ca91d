//! Deadlines: a hold nobody answers is asked for again; a payment that
//! never answers fails the booking with PAYMENT_ERROR once its deadline
//! passes, the seats are released, and a payment that succeeds after all
//! is refunded; a payment made with the hold secure confirms the booking at
//! once, one made late in the hold waits for the sale to be recorded. The
//! booking service runs alone on the in-process bus; the tests play the
//! ticket and payment services.

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

/// The booking service alone on the in-process bus, with one-second
/// payment and reply deadlines; the test plays the ticket and payment
/// services through `tickets` and `payments`.
struct Rig {
    bus: Bus,
    base: String,
    token: String,
    http: reqwest::Client,
    tickets: Arc<Seen>,
    payments: Arc<Seen>,
    shutdown: CancellationToken,
    _db: TestDatabase,
    _data: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
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
        let now = chrono::Utc::now().timestamp();
        let token = key.sign(&Claims {
            sub: Uuid::new_v4().to_string(),
            email: "c@example.com".into(),
            roles: vec![Role::Customer],
            iat: now,
            exp: now + 300,
            iss: "ticketer-auth".into(),
            nbf: None,
        });
        Rig {
            bus,
            base,
            token,
            http: reqwest::Client::new(),
            tickets,
            payments,
            shutdown,
            _db: db,
            _data: data,
        }
    }

    async fn book(&self) -> Uuid {
        let created: Value = self
            .http
            .post(format!("{}/api/v1/bookings", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"event_id": 7, "number_of_tickets": 1, "payment_token": "tok_visa"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["booking_id"].as_str().unwrap().parse().unwrap()
    }

    async fn read(&self, booking: Uuid) -> Value {
        self.http
            .get(format!("{}/api/v1/bookings/{booking}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    }

    /// Waits for the booking to reach `status`.
    async fn settles(&self, booking: Uuid, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let b = self.read(booking).await;
            if b["status"] == status {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "the booking never became {status}: {b}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends what the ticket or payment service would have answered.
    async fn answer(&self, exchange: &str, kind: &str, payload: Value) {
        self.bus
            .publish(&[Outgoing::new(exchange, &Envelope::new(kind, &payload))])
            .await
            .unwrap();
    }

    /// The ticket service holds one seat until `until`.
    async fn hold(&self, booking: Uuid, until: chrono::DateTime<chrono::Utc>) {
        let held = json!({"booking_id": booking, "event_id": 7, "ticket_ids": [Uuid::new_v4()],
                          "amount": "20.00", "currency": "EUR", "hold_expires_at": until});
        self.answer(TICKET_EXCHANGE, "TicketsHeld", held).await;
    }

    async fn pay(&self, booking: Uuid) {
        let paid = json!({"booking_id": booking, "payment_id": Uuid::new_v4(), "amount": "20.00",
                          "currency": "EUR"});
        self.answer(PAYMENT_EXCHANGE, "PaymentSucceeded", paid).await;
    }
}

#[tokio::test]
async fn an_unanswered_hold_is_asked_again_and_an_unanswered_payment_times_out() {
    let rig = Rig::start().await;
    let (tickets, payments) = (&rig.tickets, &rig.payments);
    let booking = rig.book().await;

    // The ticket service does not answer the hold in time: it is asked
    // again (a hold is keyed by booking, so that is safe), and the booking
    // stays pending meanwhile.
    tickets.wait_for_times("HoldTickets", 2).await;
    assert_eq!(rig.read(booking).await["status"], "PENDING");

    // Then it holds a seat; the charge is asked for, and nobody answers.
    rig.hold(booking, chrono::Utc::now() + chrono::Duration::minutes(10))
        .await;
    payments.wait_for("ProcessPayment").await;
    let failed = rig.settles(booking, "FAILED").await;
    assert_eq!(failed["failure_reason"], "PAYMENT_ERROR");
    let release = tickets.wait_for("ReleaseTickets").await;
    assert_eq!(release["booking_id"], json!(booking));

    // The provider answers after all: the money goes back.
    rig.pay(booking).await;
    let refund = payments.wait_for("RefundPayment").await;
    assert_eq!(refund["booking_id"], json!(booking));
    rig.shutdown.cancel();
}

/// Paid with most of the hold left, a booking is confirmed at once and the
/// ticket service is asked to record the sale; should it not manage (it was
/// away for longer than the hold), the customer gets the money back and the
/// booking fails, so no seat is ever sold twice.
#[tokio::test]
async fn paid_with_the_hold_secure_is_confirmed_at_once_and_refunded_if_the_sale_cannot_be_recorded() {
    let rig = Rig::start().await;
    let booking = rig.book().await;
    rig.tickets.wait_for("HoldTickets").await;
    rig.hold(booking, chrono::Utc::now() + chrono::Duration::minutes(10))
        .await;
    rig.payments.wait_for("ProcessPayment").await;
    rig.pay(booking).await;
    let confirmed = rig.settles(booking, "CONFIRMED").await;
    assert_eq!(confirmed["ticket_ids"].as_array().map(Vec::len), Some(1));
    let reserve = rig.tickets.wait_for("ReserveTickets").await;
    assert_eq!(reserve["booking_id"], json!(booking));
    // Nobody answers the ReserveTickets: asked again after the reply
    // deadline, and the booking stays confirmed meanwhile.
    rig.tickets.wait_for_times("ReserveTickets", 2).await;
    assert_eq!(rig.read(booking).await["status"], "CONFIRMED");

    let refused = json!({"booking_id": booking, "event_id": 7, "reason": "HOLD_EXPIRED"});
    rig.answer(TICKET_EXCHANGE, "TicketsReserveFailed", refused).await;
    let failed = rig.settles(booking, "FAILED").await;
    assert_eq!(failed["failure_reason"], "HOLD_EXPIRED");
    let refund = rig.payments.wait_for("RefundPayment").await;
    assert_eq!(refund["booking_id"], json!(booking));
    rig.shutdown.cancel();
}

/// Paid with the hold nearly over, a booking stays pending until the
/// ticket service has recorded the sale.
#[tokio::test]
async fn paid_late_in_the_hold_is_confirmed_only_once_the_sale_is_recorded() {
    let rig = Rig::start().await;
    let booking = rig.book().await;
    rig.tickets.wait_for("HoldTickets").await;
    rig.hold(booking, chrono::Utc::now() + chrono::Duration::seconds(20))
        .await;
    rig.payments.wait_for("ProcessPayment").await;
    rig.pay(booking).await;
    rig.tickets.wait_for("ReserveTickets").await;
    assert_eq!(rig.read(booking).await["status"], "PENDING");
    let sold = json!({"booking_id": booking, "event_id": 7, "ticket_ids": [Uuid::new_v4()]});
    rig.answer(TICKET_EXCHANGE, "TicketsReserved", sold).await;
    rig.settles(booking, "CONFIRMED").await;
    rig.shutdown.cancel();
}
