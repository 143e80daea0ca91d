//! The Stripe-speaking provider against a stub of Stripe's API that this
//! test starts: charges, a decline, a provider failure, a refund and a
//! saved card, each as the booking saga and a customer see them, and each
//! request as Stripe would receive it (form fields, secret key, and an
//! idempotency key per operation, the refund's apart from the charge's).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use ticketer_bus::{
    topology::{BOOKING_EXCHANGE, BOOKING_PAYMENTS},
    Envelope,
};
use ticketer_config::Service;
use ticketer_http::Role;
use ticketer_payment::provider::{charge_key, refund_key};
use ticketer_testkit::{Backend, ServiceRig};
use uuid::Uuid;

const SECRET: &str = "sk_test_stub";

/// What the stub was asked: (path, Idempotency-Key, form).
type Calls = Arc<Mutex<Vec<(String, String, HashMap<String, String>)>>>;

/// A form-encoded body's fields (`%XX` and `+` decoded).
fn form_of(body: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {SECRET}"))
}

fn key_of(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn intents(State(calls): State<Calls>, headers: HeaderMap, body: String) -> impl IntoResponse {
    let form = form_of(&body);
    if !authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"type": "invalid_request_error"}})),
        );
    }
    let key = key_of(&headers);
    calls
        .lock()
        .unwrap()
        .push(("/v1/payment_intents".into(), key.clone(), form.clone()));
    match form.get("payment_method").map(String::as_str) {
        Some("pm_card_visa") => (
            StatusCode::OK,
            Json(json!({"id": format!("pi_{key}"), "status": "succeeded"})),
        ),
        Some("pm_card_chargeDeclined") => (
            StatusCode::PAYMENT_REQUIRED,
            Json(json!({"error": {"type": "card_error", "code": "card_declined",
                                   "decline_code": "insufficient_funds"}})),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"type": "api_error", "code": "processing_error"}})),
        ),
    }
}

async fn refunds(State(calls): State<Calls>, headers: HeaderMap, body: String) -> impl IntoResponse {
    let form = form_of(&body);
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, Json(json!({})));
    }
    let key = key_of(&headers);
    calls
        .lock()
        .unwrap()
        .push(("/v1/refunds".into(), key.clone(), form));
    (StatusCode::OK, Json(json!({"id": format!("re_{key}")})))
}

async fn methods(headers: HeaderMap, Path(id): Path<String>) -> impl IntoResponse {
    if authorized(&headers) && id == "pm_card_visa" {
        let card = json!({"card": {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2031}});
        (StatusCode::OK, Json(card))
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"type": "invalid_request_error"}})),
        )
    }
}

/// The stub's address, and what it was asked.
async fn stub() -> (String, Calls) {
    let calls = Calls::default();
    let app = Router::new()
        .route("/v1/payment_intents", post(intents))
        .route("/v1/refunds", post(refunds))
        .route("/v1/payment_methods/{id}", get(methods))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

async fn charge(rig: &ServiceRig, booking: Uuid, token: &str) -> (String, Value) {
    let cmd = json!({"booking_id": booking, "customer_id": Uuid::new_v4(), "amount": "49.90",
                     "currency": "EUR", "payment_token": token});
    rig.send(BOOKING_EXCHANGE, Envelope::new("ProcessPayment", &cmd).unwrap())
        .await;
    rig.heard(&BOOKING_PAYMENTS).about(booking, 1).await.remove(0)
}

#[tokio::test]
async fn charges_declines_and_refunds_as_stripe_is_asked() {
    let (url, calls) = stub().await;
    let vars = [
        ("PAYMENT_PROVIDER", "stripe"),
        ("PAYMENT_STRIPE_URL", url.as_str()),
        ("PAYMENT_STRIPE_SECRET_KEY", SECRET),
    ];
    let rig = ServiceRig::start(
        Service::Payment,
        Backend::Embedded,
        &vars,
        &[BOOKING_PAYMENTS],
        ticketer_payment::Settings::from_env,
        ticketer_payment::build,
    )
    .await
    .unwrap();

    // A good card: charged once, keyed by the booking.
    let paid = Uuid::new_v4();
    let (kind, answer) = charge(&rig, paid, "pm_card_visa").await;
    assert_eq!(kind, "PaymentSucceeded", "{answer}");
    let intent = format!("pi_{}", charge_key(paid));
    assert_eq!(answer["provider_reference"], intent.as_str());
    {
        let calls = calls.lock().unwrap();
        let (path, key, form) = &calls[0];
        assert_eq!(
            (path.as_str(), key.as_str()),
            ("/v1/payment_intents", paid.to_string().as_str())
        );
        assert_eq!(
            (
                form["amount"].as_str(),
                form["currency"].as_str(),
                form["confirm"].as_str()
            ),
            ("4990", "eur", "true")
        );
    }

    // Declined by the card, and failed at the provider: told apart.
    let (kind, answer) = charge(&rig, Uuid::new_v4(), "pm_card_chargeDeclined").await;
    assert_eq!(
        (kind.as_str(), &answer["reason"], &answer["detail"]),
        (
            "PaymentFailed",
            &json!("PAYMENT_DECLINED"),
            &json!("insufficient_funds")
        ),
        "{answer}"
    );
    let (kind, answer) = charge(&rig, Uuid::new_v4(), "pm_card_broken").await;
    assert_eq!(
        (kind.as_str(), &answer["reason"]),
        ("PaymentFailed", &json!("PAYMENT_ERROR")),
        "{answer}"
    );

    // The refund: of that intent, for the amount, under its own key.
    rig.send(
        BOOKING_EXCHANGE,
        Envelope::new("RefundPayment", &json!({"booking_id": paid})).unwrap(),
    )
    .await;
    let all = rig.heard(&BOOKING_PAYMENTS).about(paid, 2).await;
    assert_eq!(all[1].0, "PaymentRefunded", "{all:?}");
    {
        let calls = calls.lock().unwrap();
        let (path, key, form) = calls.iter().find(|(p, _, _)| p == "/v1/refunds").unwrap();
        assert_eq!(path, "/v1/refunds");
        assert_eq!(key, &refund_key(paid).to_string());
        assert_ne!(key, &paid.to_string(), "a refund is never keyed like its charge");
        assert_eq!(
            (form["payment_intent"].as_str(), form["amount"].as_str()),
            (intent.as_str(), "4990")
        );
    }

    // A saved card is described by the provider; one it does not know is not saved.
    let customer = rig.token(&Uuid::new_v4().to_string(), vec![Role::Customer]);
    let save = |token: &str| {
        rig.http
            .post(format!("{}/api/v1/payments/methods", rig.base))
            .bearer_auth(&customer)
            .json(&json!({"payment_token": token}))
            .send()
    };
    let r = save("pm_card_visa").await.unwrap();
    assert_eq!(r.status(), 201);
    let card: Value = r.json().await.unwrap();
    assert_eq!(
        (
            &card["brand"],
            &card["last4"],
            &card["exp_month"],
            &card["exp_year"]
        ),
        (&json!("visa"), &json!("4242"), &json!(8), &json!(2031)),
        "{card}"
    );
    assert_eq!(save("pm_card_unknown").await.unwrap().status(), 422);
}
