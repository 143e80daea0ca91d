//! The payment service as the booking saga sees it: commands in on the bus,
//! answers out on the bus, the record over HTTP. SQLite with the in-process
//! bus always; PostgreSQL with RabbitMQ when their URLs are set.

use serde_json::{json, Value};
use ticketer_bus::{
    topology::{BOOKING_EXCHANGE, BOOKING_PAYMENTS},
    Envelope, Outgoing,
};
use ticketer_config::Service;
use ticketer_http::Role;
use ticketer_testkit::{Backend, ServiceRig};
use uuid::Uuid;

/// The payment service alone; the test stands where the booking service
/// would, on its queue.
async fn start(backend: Backend) -> Option<ServiceRig> {
    ServiceRig::start(
        Service::Payment,
        backend,
        &[],
        &[BOOKING_PAYMENTS],
        ticketer_payment::Settings::from_env,
        ticketer_payment::build,
    )
    .await
}

/// Waits for `n` answers about `booking`.
async fn about(rig: &ServiceRig, booking: Uuid, n: usize) -> Vec<(String, Value)> {
    rig.heard(&BOOKING_PAYMENTS).about(booking, n).await
}

async fn send(rig: &ServiceRig, kind: &str, payload: Value) {
    rig.send(BOOKING_EXCHANGE, Envelope::new(kind, &payload).unwrap())
        .await;
}

/// The booking's payment record, as `as_user` asks for it.
async fn payment_record(rig: &ServiceRig, booking: Uuid, as_user: Uuid) -> (u16, Value) {
    let r = rig
        .http
        .get(format!("{}/api/v1/payments/booking/{booking}", rig.base))
        .bearer_auth(rig.token(&as_user.to_string(), vec![Role::Customer]))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn charge(booking: Uuid, customer: Uuid, token: &str) -> Value {
    json!({"booking_id": booking, "customer_id": customer, "amount": "49.90", "currency": "EUR", "payment_token": token})
}

async fn charges_once_and_refunds(backend: Backend) {
    let Some(rig) = start(backend).await else { return };
    let customer = Uuid::new_v4();

    // A good card is charged; the record is the customer's alone.
    let paid = Uuid::new_v4();
    send(&rig, "ProcessPayment", charge(paid, customer, "tok_visa")).await;
    let a = about(&rig, paid, 1).await;
    assert_eq!(a[0].0, "PaymentSucceeded");
    assert_eq!(a[0].1["amount"], "49.90");
    let (status, record) = payment_record(&rig, paid, customer).await;
    assert_eq!((status, record["status"].as_str()), (200, Some("SUCCEEDED")));
    assert_eq!(payment_record(&rig, paid, Uuid::new_v4()).await.0, 403);

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
                &Envelope::new("ProcessPayment", &charge(paid, customer, token)).unwrap(),
            )
        })
        .collect();
    rig.bus.publish(&repeats).await.unwrap();
    let a = about(&rig, paid, 51).await;
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
        send(&rig, "ProcessPayment", charge(b, customer, token)).await;
        let a = about(&rig, b, 1).await;
        assert_eq!(
            (a[0].0.as_str(), &a[0].1["reason"], &a[0].1["detail"]),
            ("PaymentFailed", &json!(reason), &json!(detail))
        );
        assert_eq!(payment_record(&rig, b, customer).await.1["status"], "FAILED");
    }

    // Refunds, twice: one refund.
    send(&rig, "RefundPayment", json!({"booking_id": paid})).await;
    send(&rig, "RefundPayment", json!({"booking_id": paid})).await;
    let a = about(&rig, paid, 53).await;
    let refunds: Vec<_> = a.iter().filter(|(k, _)| k == "PaymentRefunded").collect();
    assert_eq!(refunds.len(), 2);
    assert!(refunds.iter().all(|(_, p)| p["amount"] == "49.90"));
    assert_eq!(payment_record(&rig, paid, customer).await.1["status"], "REFUNDED");

    // Charged and refunded twice in one go (one batch, or several): the
    // charge is made once and given back once.
    let both = Uuid::new_v4();
    let together: Vec<Outgoing> = [
        Envelope::new("ProcessPayment", &charge(both, customer, "tok_visa")).unwrap(),
        Envelope::new("RefundPayment", &json!({"booking_id": both})).unwrap(),
        Envelope::new("RefundPayment", &json!({"booking_id": both})).unwrap(),
    ]
    .iter()
    .map(|e| Outgoing::new(BOOKING_EXCHANGE, e))
    .collect();
    rig.bus.publish(&together).await.unwrap();
    let a = about(&rig, both, 3).await;
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
    assert_eq!(payment_record(&rig, both, customer).await.1["status"], "REFUNDED");
}

#[tokio::test]
async fn embedded_charges_once_and_refunds() {
    charges_once_and_refunds(Backend::Embedded).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_charges_once_and_refunds() {
    charges_once_and_refunds(Backend::Servers).await;
}
