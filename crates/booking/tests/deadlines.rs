//! Deadlines: a hold nobody answers is asked for again; a payment that
//! never answers fails the booking with PAYMENT_ERROR once its deadline
//! passes, the seats are released, and a payment that succeeds after all
//! is refunded; a payment made with the hold secure confirms the booking at
//! once (the ticket service sells on the payment's news), one made late in
//! the hold waits for the sale to be recorded. The
//! booking service runs alone on the in-process bus; the tests play the
//! ticket and payment services.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ticketer_bus::{
    topology::{PAYMENT_COMMANDS, PAYMENT_EXCHANGE, TICKET_COMMANDS, TICKET_EXCHANGE},
    Envelope,
};
use ticketer_config::Service;
use ticketer_http::Role;
use ticketer_testkit::{Backend, Heard, ServiceRig};
use uuid::Uuid;

/// The booking service alone on the in-process bus, with one-second
/// payment and reply deadlines; the test plays the ticket and payment
/// services, hearing their commands and sending their answers.
struct Rig {
    service: ServiceRig,
    /// A customer's.
    token: String,
}

impl Rig {
    async fn start() -> Rig {
        let vars = [
            ("BOOKING_PAYMENT_TIMEOUT_SECONDS", "1"),
            ("BOOKING_REPLY_TIMEOUT_SECONDS", "1"),
            ("BOOKING_DEADLINE_SWEEP_MS", "100"),
        ];
        let service = ServiceRig::start(
            Service::Booking,
            Backend::Embedded,
            &vars,
            &[TICKET_COMMANDS, PAYMENT_COMMANDS],
            ticketer_booking::Settings::from_env,
            ticketer_booking::build,
        )
        .await
        .expect("the embedded backend needs no server");
        let token = service.token(&Uuid::new_v4().to_string(), vec![Role::Customer]);
        Rig { service, token }
    }

    fn tickets(&self) -> &Heard {
        self.service.heard(&TICKET_COMMANDS)
    }

    fn payments(&self) -> &Heard {
        self.service.heard(&PAYMENT_COMMANDS)
    }

    async fn book(&self) -> Uuid {
        let created: Value = self
            .service
            .http
            .post(format!("{}/api/v1/bookings", self.service.base))
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
        self.service
            .http
            .get(format!("{}/api/v1/bookings/{booking}", self.service.base))
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
        self.service
            .send(exchange, Envelope::new(kind, &payload).unwrap())
            .await;
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
    let (tickets, payments) = (rig.tickets(), rig.payments());
    let booking = rig.book().await;

    // The ticket service does not answer the hold in time: it is asked
    // again (a hold is keyed by booking, so that is safe), and the booking
    // stays pending meanwhile.
    tickets.times("HoldTickets", 2).await;
    assert_eq!(rig.read(booking).await["status"], "PENDING");

    // Then it holds a seat; the charge is asked for, and nobody answers.
    rig.hold(booking, chrono::Utc::now() + chrono::Duration::minutes(10))
        .await;
    payments.first("ProcessPayment").await;
    let failed = rig.settles(booking, "FAILED").await;
    assert_eq!(failed["failure_reason"], "PAYMENT_ERROR");
    let release = tickets.first("ReleaseTickets").await;
    assert_eq!(release["booking_id"], json!(booking));

    // The provider answers after all: the money goes back.
    rig.pay(booking).await;
    let refund = payments.first("RefundPayment").await;
    assert_eq!(refund["booking_id"], json!(booking));
    rig.service.shutdown.cancel();
}

/// Paid with most of the hold left, a booking is confirmed at once; the
/// ticket service sells on the payment's own news, so the saga asks it
/// nothing more, however long it waits. Should the ticket service not
/// manage (it was away for longer than the hold), the customer gets the
/// money back and the booking fails, so no seat is ever sold twice.
#[tokio::test]
async fn paid_with_the_hold_secure_is_confirmed_at_once_and_refunded_if_the_sale_cannot_be_recorded() {
    let rig = Rig::start().await;
    let booking = rig.book().await;
    rig.tickets().first("HoldTickets").await;
    rig.hold(booking, chrono::Utc::now() + chrono::Duration::minutes(10))
        .await;
    rig.payments().first("ProcessPayment").await;
    rig.pay(booking).await;
    let confirmed = rig.settles(booking, "CONFIRMED").await;
    assert_eq!(confirmed["ticket_ids"].as_array().map(Vec::len), Some(1));
    let news = rig.tickets().first("PaymentSucceeded").await;
    assert_eq!(news["booking_id"], json!(booking));
    // Past the one-second reply deadline: still confirmed, nothing asked.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(rig.read(booking).await["status"], "CONFIRMED");
    let asked: Vec<String> = rig.tickets().all().into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(asked, ["HoldTickets", "PaymentSucceeded"]);

    let refused = json!({"booking_id": booking, "event_id": 7, "reason": "HOLD_EXPIRED"});
    rig.answer(TICKET_EXCHANGE, "TicketsReserveFailed", refused).await;
    let failed = rig.settles(booking, "FAILED").await;
    assert_eq!(failed["failure_reason"], "HOLD_EXPIRED");
    let refund = rig.payments().first("RefundPayment").await;
    assert_eq!(refund["booking_id"], json!(booking));
    rig.service.shutdown.cancel();
}

/// Paid with the hold nearly over, a booking stays pending until the
/// ticket service has recorded the sale.
#[tokio::test]
async fn paid_late_in_the_hold_is_confirmed_only_once_the_sale_is_recorded() {
    let rig = Rig::start().await;
    let booking = rig.book().await;
    rig.tickets().first("HoldTickets").await;
    rig.hold(booking, chrono::Utc::now() + chrono::Duration::seconds(20))
        .await;
    rig.payments().first("ProcessPayment").await;
    rig.pay(booking).await;
    rig.tickets().first("ReserveTickets").await;
    assert_eq!(rig.read(booking).await["status"], "PENDING");
    let sold = json!({"booking_id": booking, "event_id": 7, "ticket_ids": [Uuid::new_v4()]});
    rig.answer(TICKET_EXCHANGE, "TicketsReserved", sold).await;
    rig.settles(booking, "CONFIRMED").await;
    rig.service.shutdown.cancel();
}
