//! Saved payment methods through the gateway: a customer's own cards,
//! shown without their tokens, one of them the default.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{
    bookings::event_on_sale_by,
    harness::{Reply, TestStack},
};

const METHODS: &str = "/api/v1/payments/methods";

async fn save(s: &TestStack, customer: &str, body: Value) -> Reply {
    s.call(Method::POST, METHODS, Some(customer), Some(body)).await
}

async fn delete(s: &TestStack, customer: &str, id: &str) -> Reply {
    let path = format!("{METHODS}/{id}");
    s.call(Method::DELETE, &path, Some(customer), None).await
}

fn items(list: &Value) -> Vec<(String, bool)> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["last4"].as_str().unwrap().to_string(), m["is_default"] == true))
        .collect()
}

async fn customers_keep_their_own_cards(s: &TestStack) {
    let l = s.label;
    let (_, ada, _) = s.user("CUSTOMER").await;

    // The first card is the default; it is shown by brand, last four and
    // expiry, never by its token.
    let r = save(s, &ada, json!({"payment_token": "tok_visa"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{l}: {}", r.body);
    assert_eq!(
        (
            r.text("brand"),
            r.text("last4"),
            r.body["exp_month"].as_i64(),
            r.body["is_default"].as_bool()
        ),
        ("visa".into(), "4242".into(), Some(12), Some(true)),
        "{l}: {}",
        r.body
    );
    assert!(
        !r.body.to_string().contains("tok_"),
        "{l}: the token is shown: {}",
        r.body
    );
    let visa = r.text("id");

    // A second card asked to be the default takes the mark; a third not.
    let r = save(
        s,
        &ada,
        json!({"payment_token": "tok_mastercard", "make_default": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{l}: {}", r.body);
    let mastercard = r.text("id");
    let r = save(s, &ada, json!({"payment_token": "tok_chargeDeclined"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{l}: {}", r.body);
    let list = s.call(Method::GET, METHODS, Some(&ada), None).await;
    assert_eq!(list.status, StatusCode::OK, "{l}");
    assert_eq!(
        items(&list.body),
        [
            ("4444".into(), true),
            ("0002".into(), false),
            ("4242".into(), false)
        ],
        "{l}: the default first, then the newest"
    );
    assert!(!list.body.to_string().contains("tok_"), "{l}: {}", list.body);

    // Nobody sees, or deletes, another's cards.
    let (_, bob, _) = s.user("CUSTOMER").await;
    let theirs = s.call(Method::GET, METHODS, Some(&bob), None).await;
    assert_eq!(theirs.body, json!({"items": []}), "{l}");
    let r = delete(s, &bob, &visa).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: {}", r.body);

    // Deleting the default makes the newest remaining one the default.
    let r = delete(s, &ada, &mastercard).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{l}: {}", r.body);
    let list = s.call(Method::GET, METHODS, Some(&ada), None).await;
    assert_eq!(
        items(&list.body),
        [("0002".into(), true), ("4242".into(), false)],
        "{l}"
    );
    let r = delete(s, &ada, &mastercard).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: deleted once");

    // Careless and wrong requests, each told what is wrong.
    for (body, status, field) in [
        (
            json!({"payment_token": "tok_amex"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "payment_token",
        ),
        (
            json!({"payment_token": ""}),
            StatusCode::BAD_REQUEST,
            "payment_token",
        ),
        (
            json!({"payment_token": "x".repeat(300)}),
            StatusCode::BAD_REQUEST,
            "payment_token",
        ),
    ] {
        let r = s.call(Method::POST, METHODS, Some(&ada), Some(body)).await;
        assert_eq!(r.status, status, "{l}: {}", r.body);
        assert_eq!(r.error_fields(), [field], "{l}: {}", r.body);
    }
    let r = save(s, &ada, json!({"payment_token": "tok_visa", "cvc": "123"})).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "{l}: unknown field: {}",
        r.body
    );
    let r = s
        .call(Method::DELETE, &format!("{METHODS}/not-an-id"), Some(&ada), None)
        .await;
    assert_eq!(r.error_fields(), ["id"], "{l}: {}", r.body);

    // Only customers keep cards; nobody without a token.
    let (_, organizer, _) = s.user("ORGANIZER").await;
    let r = s.call(Method::GET, METHODS, Some(&organizer), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}");
    let r = s.call(Method::GET, METHODS, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}");

    // At most twenty cards each.
    let (_, carol, _) = s.user("CUSTOMER").await;
    for i in 0..20 {
        let r = save(s, &carol, json!({"payment_token": "tok_visa"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{l}: card {i}: {}", r.body);
    }
    let r = save(s, &carol, json!({"payment_token": "tok_visa"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{l}: {}", r.body);
    let list = s.call(Method::GET, METHODS, Some(&carol), None).await;
    let cards = items(&list.body);
    assert_eq!(
        (cards.len(), cards.iter().filter(|(_, d)| *d).count()),
        (20, 1),
        "{l}: one default"
    );
}

both_backends!(customers_keep_their_own_cards);

/// Books with `body` (event and tickets filled in), waiting for the outcome.
async fn book_with(s: &TestStack, customer: &str, event: i64, payment: Value) -> Reply {
    let mut body = json!({"event_id": event, "number_of_tickets": 1});
    body.as_object_mut()
        .unwrap()
        .extend(payment.as_object().unwrap().clone());
    s.call_with(
        Method::POST,
        "/api/v1/bookings",
        Some(customer),
        Some(body),
        &[("prefer", "wait=25")],
    )
    .await
}

async fn bookings_pay_with_saved_cards(s: &TestStack) {
    let l = s.label;
    let (event, _) = event_on_sale_by(s, 10).await;
    let (_, ada, _) = s.user("CUSTOMER").await;
    let visa = save(s, &ada, json!({"payment_token": "tok_visa"}))
        .await
        .text("id");
    let declining = save(s, &ada, json!({"payment_token": "tok_chargeDeclined"}))
        .await
        .text("id");

    // Her own good card pays; her own declining card is declined.
    let r = book_with(s, &ada, event, json!({"payment_method_id": visa})).await;
    assert_eq!(r.text("status"), "CONFIRMED", "{l}: {}", r.body);
    let paid = s
        .call(
            Method::GET,
            &format!("/api/v1/payments/booking/{}", r.text("booking_id")),
            Some(&ada),
            None,
        )
        .await;
    assert_eq!(paid.text("status"), "SUCCEEDED", "{l}: {}", paid.body);
    let r = book_with(s, &ada, event, json!({"payment_method_id": declining})).await;
    assert_eq!(
        (r.text("status"), r.text("failure_reason")),
        ("FAILED".into(), "PAYMENT_DECLINED".into()),
        "{l}: {}",
        r.body
    );

    // Someone else's card, or one deleted, pays for nothing.
    let (_, bob, _) = s.user("CUSTOMER").await;
    let r = book_with(s, &bob, event, json!({"payment_method_id": visa})).await;
    assert_eq!(r.text("failure_reason"), "PAYMENT_DECLINED", "{l}: {}", r.body);
    let refused = s
        .call(
            Method::GET,
            &format!("/api/v1/payments/booking/{}", r.text("booking_id")),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(
        (refused.text("status"), refused.text("failure_reason")),
        ("FAILED".into(), "payment_method_not_found".into()),
        "{l}: {}",
        refused.body
    );
    assert_eq!(delete(s, &ada, &visa).await.status, StatusCode::NO_CONTENT, "{l}");
    let r = book_with(s, &ada, event, json!({"payment_method_id": visa})).await;
    assert_eq!(r.text("failure_reason"), "PAYMENT_DECLINED", "{l}: {}", r.body);

    // One way to pay, named right.
    for (payment, field) in [
        (json!({}), "payment_token"),
        (
            json!({"payment_token": "tok_visa", "payment_method_id": declining}),
            "payment_method_id",
        ),
        (json!({"payment_method_id": "card-1"}), "payment_method_id"),
    ] {
        let r = book_with(s, &ada, event, payment).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}: {}", r.body);
        assert_eq!(r.error_fields(), [field], "{l}: {}", r.body);
    }
}

both_backends!(bookings_pay_with_saved_cards);

/// The event's organizer refunds one confirmed booking: it ends CANCELLED,
/// the money goes back, the seats are for sale again and the customer is
/// told. Nobody else may; an unpaid booking cannot be refunded.
async fn organizers_refund_a_booking(s: &TestStack) {
    let l = s.label;
    let (event, organizer) = event_on_sale_by(s, 5).await;
    let (_, ada, _) = s.user("CUSTOMER").await;
    let r = book_with(s, &ada, event, json!({"payment_token": "tok_visa"})).await;
    assert_eq!(r.text("status"), "CONFIRMED", "{l}: {}", r.body);
    let booking = r.text("booking_id");
    let refund = format!("/api/v1/bookings/{booking}/refund");

    let (_, stranger, _) = s.user("ORGANIZER").await;
    for who in [&ada, &stranger] {
        let r = s.call(Method::POST, &refund, Some(who), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: {}", r.body);
    }
    let nobody = format!("/api/v1/bookings/{}/refund", uuid::Uuid::new_v4());
    let r = s.call(Method::POST, &nobody, Some(&organizer), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: {}", r.body);

    let r = s.call(Method::POST, &refund, Some(&organizer), None).await;
    assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body);
    let path = format!("/api/v1/bookings/{booking}");
    s.eventually_as(&path, &ada, |b| b["status"] == "CANCELLED").await;
    let paid = format!("/api/v1/payments/booking/{booking}");
    s.eventually_as(&paid, &ada, |p| p["status"] == "REFUNDED").await;
    let availability = format!("/api/v1/tickets/availability/{event}");
    s.eventually(&availability, |a| a["available"] == 5 && a["sold"] == 0)
        .await;
    s.eventually_as("/api/v1/notifications/mine", &ada, |p| {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["notification_type"] == "BOOKING_CANCELLED")
    })
    .await;
    // The money's return is told too, once it went back, with the amount.
    let refunds = |p: &serde_json::Value| -> Vec<serde_json::Value> {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["notification_type"] == "PAYMENT_REFUNDED")
            .cloned()
            .collect()
    };
    let mine = s
        .eventually_as("/api/v1/notifications/mine", &ada, |p| !refunds(p).is_empty())
        .await;
    let payment = s.eventually_as(&paid, &ada, |p| p["status"] == "REFUNDED").await;
    let amount = format!(
        "{} {}",
        payment["amount"].as_str().unwrap(),
        payment["currency"].as_str().unwrap()
    );
    let told = &refunds(&mine)[0];
    assert!(told["subject"].as_str().unwrap().contains(&amount), "{l}: {told}");
    // Asked again: the same, nothing refunded twice.
    let r = s.call(Method::POST, &refund, Some(&organizer), None).await;
    assert_eq!(
        (r.status, r.text("status")),
        (StatusCode::OK, "CANCELLED".into()),
        "{l}"
    );

    let r = book_with(s, &ada, event, json!({"payment_token": "tok_chargeDeclined"})).await;
    assert_eq!(r.text("status"), "FAILED", "{l}: {}", r.body);
    let declined = format!("/api/v1/bookings/{}/refund", r.text("booking_id"));
    let r = s.call(Method::POST, &declined, Some(&organizer), None).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "{l}: nothing was paid: {}",
        r.body
    );
    // One refund, told once; the declined card took nothing to give back.
    let all_told = s
        .eventually_as("/api/v1/notifications/mine", &ada, |p| {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["notification_type"] == "BOOKING_FAILED")
                .count()
                == 1
        })
        .await;
    assert_eq!(refunds(&all_told).len(), 1, "{l}: {all_told}");
}

both_backends!(organizers_refund_a_booking);

/// A stand-in for Stripe's API: PaymentIntents (`pm_card_visa` pays,
/// anything else is declined), Refunds, and PaymentMethods (only
/// `pm_card_visa` exists). Every call it was asked is kept as
/// "path payment_method" (or the refunded intent).
async fn stripe_stub() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::{
        extract::Path,
        http::{HeaderMap, StatusCode as Status},
        routing::{get, post},
        Json, Router,
    };
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let authorized = |headers: &HeaderMap| {
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer sk_test_gateway")
    };
    let field = |body: &str, name: &str| {
        body.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_string()
    };
    let (intents, refunds) = (asked.clone(), asked.clone());
    let app = Router::new()
        .route(
            "/v1/payment_intents",
            post(move |headers: HeaderMap, body: String| {
                let asked = intents.clone();
                async move {
                    let method = field(&body, "payment_method");
                    asked.lock().unwrap().push(format!("charge {method}"));
                    match (authorized(&headers), method.as_str()) {
                        (true, "pm_card_visa") => {
                            (Status::OK, Json(json!({"id": "pi_stub", "status": "succeeded"})))
                        }
                        (true, _) => (
                            Status::PAYMENT_REQUIRED,
                            Json(json!({"error": {"type": "card_error", "code": "card_declined"}})),
                        ),
                        (false, _) => (
                            Status::UNAUTHORIZED,
                            Json(json!({"error": {"type": "invalid_request_error"}})),
                        ),
                    }
                }
            }),
        )
        .route(
            "/v1/refunds",
            post(move |headers: HeaderMap, body: String| {
                let asked = refunds.clone();
                async move {
                    asked
                        .lock()
                        .unwrap()
                        .push(format!("refund {}", field(&body, "payment_intent")));
                    if authorized(&headers) {
                        (Status::OK, Json(json!({"id": "re_stub"})))
                    } else {
                        (Status::UNAUTHORIZED, Json(json!({})))
                    }
                }
            }),
        )
        .route(
            "/v1/payment_methods/{id}",
            get(move |headers: HeaderMap, Path(id): Path<String>| async move {
                if authorized(&headers) && id == "pm_card_visa" {
                    let card =
                        json!({"card": {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2031}});
                    (Status::OK, Json(card))
                } else {
                    (
                        Status::NOT_FOUND,
                        Json(json!({"error": {"type": "invalid_request_error"}})),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

/// With a real provider configured (PAYMENT_PROVIDER=stripe), a booking
/// may name the provider's own tokens: the booking service takes anything
/// shaped like a token, and the provider pays or declines it; a card saved
/// with the provider pays a booking, and an organizer's refund goes back
/// through the provider. Through the gateway, against a stand-in for
/// Stripe's API.
#[tokio::test]
async fn a_real_providers_tokens_are_the_providers_to_judge() {
    let (stripe, asked) = stripe_stub().await;
    let s = TestStack::embedded(&[
        ("PAYMENT_PROVIDER", "stripe"),
        ("PAYMENT_STRIPE_URL", &stripe),
        ("PAYMENT_STRIPE_SECRET_KEY", "sk_test_gateway"),
    ])
    .await;
    let (event, _) = event_on_sale_by(&s, 5).await;
    let (_, customer, _) = s.user("CUSTOMER").await;

    let paid = book_with(&s, &customer, event, json!({"payment_token": "pm_card_visa"})).await;
    assert_eq!(paid.text("status"), "CONFIRMED", "{}", paid.body);
    let declined = book_with(
        &s,
        &customer,
        event,
        json!({"payment_token": "pm_card_chargeDeclined"}),
    )
    .await;
    assert_eq!(
        (declined.text("status"), declined.text("failure_reason")),
        ("FAILED".to_string(), "PAYMENT_DECLINED".to_string()),
        "{}",
        declined.body
    );
    // Not shaped like a token: refused before any charge, naming the field.
    let odd = book_with(&s, &customer, event, json!({"payment_token": "pm card; drop"})).await;
    assert_eq!(odd.status, StatusCode::BAD_REQUEST, "{}", odd.body);
    assert_eq!(odd.error_fields(), ["payment_token"]);
    assert_eq!(
        *asked.lock().unwrap(),
        ["charge pm_card_visa", "charge pm_card_chargeDeclined"],
        "the provider was asked for exactly the two charges"
    );

    // A card saved with the provider pays a booking named by its id; its
    // organizer refunds that booking through the provider.
    let saved = save(&s, &customer, json!({"payment_token": "pm_card_visa"})).await;
    assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.body);
    assert_eq!(
        (saved.text("brand"), saved.text("last4")),
        ("visa".into(), "4242".into())
    );
    let unknown = save(&s, &customer, json!({"payment_token": "pm_card_unknown"})).await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unknown.body
    );
    assert_eq!(unknown.error_fields(), ["payment_token"]);
    let (event, organizer) = event_on_sale_by(&s, 2).await;
    let r = book_with(
        &s,
        &customer,
        event,
        json!({"payment_method_id": saved.text("id")}),
    )
    .await;
    assert_eq!(r.text("status"), "CONFIRMED", "{}", r.body);
    let booking = r.text("booking_id");
    let refund = format!("/api/v1/bookings/{booking}/refund");
    let r = s.call(Method::POST, &refund, Some(&organizer), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    s.eventually_as(&format!("/api/v1/bookings/{booking}"), &customer, |b| {
        b["status"] == "CANCELLED"
    })
    .await;
    let paid = format!("/api/v1/payments/booking/{booking}");
    s.eventually_as(&paid, &customer, |p| p["status"] == "REFUNDED")
        .await;
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked[2..], ["charge pm_card_visa", "refund pi_stub"], "{asked:?}");
}
