//! SMS and push: a customer turns them on with a phone number and a
//! device token, and is told through every channel they chose, each
//! channel sent on its own, through the gateway and a provider's webhook
//! started by the test.

use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use ticketer_http::Role;

use crate::{
    bookings::{book, event_on_sale_by},
    harness::TestStack,
};

/// What the providers were sent, by path.
type Heard = Arc<Mutex<Vec<(String, Value)>>>;

/// `/sms` answers 500 to its first two messages, then 200; `/push` never
/// answers. Every body is kept.
async fn providers() -> (String, Heard) {
    use axum::{extract::Path, http::StatusCode as Status, routing::post, Json, Router};
    let heard: Heard = Arc::default();
    let kept = heard.clone();
    let app = Router::new().route(
        "/{channel}",
        post(move |Path(channel): Path<String>, Json(body): Json<Value>| {
            let kept = kept.clone();
            async move {
                let before = {
                    let mut all = kept.lock().unwrap();
                    let before = all.iter().filter(|(c, _)| *c == channel).count();
                    all.push((channel.clone(), body));
                    before
                };
                match channel.as_str() {
                    "sms" if before < 2 => Status::INTERNAL_SERVER_ERROR,
                    "sms" => Status::OK,
                    _ => {
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        Status::OK
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, heard)
}

fn by_channel<'a>(page: &'a Value, kind: &str, channel: &str) -> Option<&'a Value> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["notification_type"] == kind && n["channel"] == channel)
}

async fn told_through_every_channel_they_chose(s: &TestStack, heard: Heard) {
    let l = s.label;
    let prefs = "/api/v1/notifications/preferences";
    let (event, _) = event_on_sale_by(s, 3).await;
    let (_, ada, _) = s.user("CUSTOMER").await;

    // A channel turned on needs its address, and an address must look like one.
    for (body, field) in [
        (json!({"email": true, "sms": true}), "phone_number"),
        (
            json!({"email": true, "sms": true, "phone_number": "0151 1234"}),
            "phone_number",
        ),
        (json!({"email": true, "push": true}), "push_token"),
        (
            json!({"email": true, "push": true, "push_token": "has space"}),
            "push_token",
        ),
    ] {
        let r = s.call(Method::PUT, prefs, Some(&ada), Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}: {body}: {}", r.body);
        assert_eq!(r.error_fields(), [field], "{l}: {body}: {}", r.body);
    }
    let r = s.call(Method::GET, prefs, Some(&ada), None).await;
    assert_eq!(
        (
            r.body["email"].clone(),
            r.body["sms"].clone(),
            r.body["push"].clone()
        ),
        (json!(true), json!(false), json!(false)),
        "{l}: the defaults, nothing half-saved: {}",
        r.body
    );
    let wanted = json!({"email": true, "sms": true, "phone_number": "+4915112345678",
        "push": true, "push_token": "device-abc"});
    let r = s.call(Method::PUT, prefs, Some(&ada), Some(wanted.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body);
    let r = s.call(Method::GET, prefs, Some(&ada), None).await;
    assert_eq!(r.body, wanted, "{l}");

    // SMS gets shorter words of its own; email keeps the shipped ones.
    let admin = s.forge_with(&uuid::Uuid::new_v4().to_string(), vec![Role::Admin], |_| {});
    let short = json!({"subject": "Tickets",
        "text": "{{ booking.number_of_tickets }} ticket for {{ event.name }}: {{ booking.tickets | join(', ') }}",
        "html": ""});
    let r = s
        .call(
            Method::PUT,
            "/api/v1/notifications/templates/BOOKING_CONFIRMED/EMAIL",
            Some(&admin),
            Some(short.clone()),
        )
        .await;
    assert_eq!(
        (r.status, r.error_fields()),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["html".to_string()]),
        "{l}: an email needs its HTML: {}",
        r.body
    );
    let r = s
        .call(
            Method::PUT,
            "/api/v1/notifications/templates/BOOKING_CONFIRMED/SMS",
            Some(&admin),
            Some(short),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body);

    let r = book(s, &ada, event, 1, "tok_visa").await;
    assert_eq!(r.text("status"), "CONFIRMED", "{l}: {}", r.body);
    let booking = r.text("booking_id");

    // Email at once; SMS after its provider failed twice; push still
    // waiting on a provider that does not answer, holding up neither.
    let told = s
        .eventually_as("/api/v1/notifications/mine", &ada, |p| {
            let sent = |c| by_channel(p, "BOOKING_CONFIRMED", c).is_some_and(|n| n["status"] == "SENT");
            sent("EMAIL") && sent("SMS")
        })
        .await;
    let sms = by_channel(&told, "BOOKING_CONFIRMED", "SMS").unwrap();
    assert_eq!(sms["retry_count"], 2, "{l}: {sms}");
    assert_eq!(sms["recipient"], "+4915112345678", "{l}: {sms}");
    let push = by_channel(&told, "BOOKING_CONFIRMED", "PUSH").unwrap();
    assert_eq!(
        (push["status"].clone(), push["recipient"].clone()),
        (json!("PENDING"), json!("device-abc")),
        "{l}: {push}"
    );

    let heard = heard.lock().unwrap().clone();
    let sms: Vec<&Value> = heard.iter().filter(|(c, _)| c == "sms").map(|(_, b)| b).collect();
    assert_eq!(sms.len(), 3, "{l}: {heard:?}");
    assert!(
        sms.iter().all(|b| b == &sms[0]),
        "{l}: the same message each time, id included"
    );
    assert_eq!(
        (
            sms[0]["to"].clone(),
            sms[0]["type"].clone(),
            sms[0]["channel"].clone()
        ),
        (json!("+4915112345678"), json!("BOOKING_CONFIRMED"), json!("SMS")),
        "{l}"
    );
    let ticket = s
        .eventually_as(&format!("/api/v1/bookings/{booking}"), &ada, |b| {
            b["status"] == "CONFIRMED"
        })
        .await["ticket_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let text = sms[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("1 ticket for ") && text.contains(&ticket),
        "{l}: the SMS template's words: {text}"
    );
    let email = by_channel(&told, "BOOKING_CONFIRMED", "EMAIL").unwrap();
    assert_ne!(email["subject"], "Tickets", "{l}: email keeps its own words");
    let push: Vec<&Value> = heard
        .iter()
        .filter(|(c, _)| c == "push")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(push.len(), 1, "{l}: asked once, still waiting: {heard:?}");
    assert_eq!(push[0]["to"], "device-abc", "{l}");
}

/// The providers' webhooks; a provider gets 20 s to answer, so the push
/// attempt outlasts the test.
fn webhooks(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NOTIFICATION_SMS_WEBHOOK_URL", format!("{url}/sms")),
        ("NOTIFICATION_PUSH_WEBHOOK_URL", format!("{url}/push")),
        ("NOTIFICATION_WEBHOOK_TIMEOUT_MS", "20000".into()),
        ("NOTIFICATION_DELIVERY_BACKOFF_MS", "50".into()),
        ("NOTIFICATION_DELIVERY_ATTEMPTS", "3".into()),
    ]
}

#[tokio::test]
async fn embedded_told_through_every_channel_they_chose() {
    let (url, heard) = providers().await;
    let vars = webhooks(&url);
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    told_through_every_channel_they_chose(&TestStack::embedded(&env).await, heard).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn production_told_through_every_channel_they_chose() {
    let (url, heard) = providers().await;
    let vars = webhooks(&url);
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Some(s) = TestStack::production_with(&env).await else {
        return;
    };
    told_through_every_channel_they_chose(&s, heard).await;
}
