//! What customers and organizers are told, through the gateway, and the
//! emails that carry it: received by a mail server the test starts, or
//! `.eml` files under the data dir where no SMTP server is given.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use ticketer_http::Role;

use crate::{
    bookings::{book, event_on_sale_by},
    harness::TestStack,
};

/// The notifications of `kind` in a listing.
fn of_kind<'a>(page: &'a Value, kind: &str) -> Vec<&'a Value> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["notification_type"] == kind)
        .collect()
}

/// Exactly one notification of `kind` there, SENT.
fn one_sent(page: &Value, kind: &str) -> bool {
    let found = of_kind(page, kind);
    found.len() == 1 && found[0]["status"] == "SENT"
}

/// The email of a notification, as the mail server received it.
fn mailed(sink: &ticketer_testkit::SmtpSink, notification: &Value) -> String {
    let id = format!("<{}@ticketer>", notification["id"].as_str().unwrap());
    let all = sink.messages();
    all.iter()
        .find(|m| m.contains(&id))
        .cloned()
        .unwrap_or_else(|| panic!("no mail with Message-ID {id} among {}", all.len()))
}

/// The email of a notification, as written.
fn email_of(s: &TestStack, notification: &Value) -> String {
    let path = s
        .mail_dir()
        .join(format!("{}.eml", notification["id"].as_str().unwrap()));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {}: {e}", s.label, path.display()))
}

/// Through the gateway, to a mail server started by the test
/// (`NOTIFICATION_SMTP_URL`): every email below is read as it received it.
async fn customers_and_organizers_are_told(s: &TestStack, sink: &ticketer_testkit::SmtpSink) {
    let l = s.label;
    let mine = "/api/v1/notifications/mine";
    let (event, organizer) = event_on_sale_by(s, 3).await;

    // The organizer: welcomed, then told the event is published.
    let told = s
        .eventually_as(mine, &organizer, |p| {
            one_sent(p, "WELCOME") && one_sent(p, "EVENT_PUBLISHED")
        })
        .await;
    assert!(of_kind(&told, "EVENT_PUBLISHED")[0]["subject"]
        .as_str()
        .unwrap()
        .contains("Sale"));

    // A confirmed booking: its email names the event and lists the tickets.
    let (_, ada, _) = s.user("CUSTOMER").await;
    let r = book(s, &ada, event, 2, "tok_visa").await;
    assert_eq!(r.text("status"), "CONFIRMED", "{l}: {}", r.body);
    let booking = r.text("booking_id");
    let told = s
        .eventually_as(mine, &ada, |p| {
            one_sent(p, "WELCOME") && one_sent(p, "BOOKING_CONFIRMED")
        })
        .await;
    let confirmed = of_kind(&told, "BOOKING_CONFIRMED")[0];
    assert_eq!(confirmed["booking_id"], booking.as_str());
    assert_eq!(confirmed["channel"], "EMAIL");
    assert!(confirmed["recipient"].as_str().unwrap().starts_with("customer-"));
    let mail = mailed(sink, confirmed);
    assert!(mail.contains("Subject: Your tickets for Sale"), "{l}: {mail}");
    let to = confirmed["recipient"].as_str().unwrap();
    assert!(mail.contains(&format!("To: {to}")), "{l}: {mail}");
    for ticket in r.body["ticket_ids"].as_array().unwrap() {
        assert!(mail.contains(ticket.as_str().unwrap()), "{l}: {ticket} in {mail}");
    }
    assert!(
        mail.contains("text/html") && mail.contains("40.00 EUR"),
        "{l}: {mail}"
    );

    // A declined card: told why, in words.
    let (_, bob, _) = s.user("CUSTOMER").await;
    let r = book(s, &bob, event, 1, "tok_chargeDeclined").await;
    assert_eq!(r.text("failure_reason"), "PAYMENT_DECLINED", "{l}: {}", r.body);
    let told = s
        .eventually_as(mine, &bob, |p| one_sent(p, "BOOKING_FAILED"))
        .await;
    let mail = mailed(sink, of_kind(&told, "BOOKING_FAILED")[0]);
    assert!(mail.contains("declined"), "{l}: {mail}");

    // Preferences: email on by default, turned off and read back; a
    // channel that does not exist is refused. (That nothing is stored for
    // someone who turned email off is the notification crate's test.)
    let prefs = "/api/v1/notifications/preferences";
    let (_, carol, _) = s.user("CUSTOMER").await;
    let r = s.call(Method::GET, prefs, Some(&carol), None).await;
    let defaults = serde_json::json!({"email": true, "sms": false, "phone_number": null,
        "push": false, "push_token": null});
    assert_eq!(r.body, defaults, "{l}: email on by default, SMS and push off");
    let off = serde_json::json!({"email": false, "sms": false, "phone_number": null,
        "push": false, "push_token": null});
    let r = s
        .call(
            Method::PUT,
            prefs,
            Some(&carol),
            Some(serde_json::json!({"email": false})),
        )
        .await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &off), "{l}");
    assert_eq!(
        s.call(Method::GET, prefs, Some(&carol), None).await.body,
        off,
        "{l}"
    );
    let r = s
        .call(
            Method::PUT,
            prefs,
            Some(&carol),
            Some(serde_json::json!({"email": true, "fax": true})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "{l}: no such channel: {}",
        r.body
    );
    let r = s.call(Method::GET, prefs, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}");

    // Nobody reads another's notifications; an administrator lists a
    // booking's, and only an administrator does.
    let bobs = s.call(Method::GET, mine, Some(&bob), None).await;
    assert!(
        of_kind(&bobs.body, "BOOKING_CONFIRMED").is_empty(),
        "{l}: {}",
        bobs.body
    );
    let by_booking = format!("/api/v1/notifications?booking_id={booking}");
    let r = s.call(Method::GET, &by_booking, Some(&ada), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}");
    let admin = s.forge_with(&uuid::Uuid::new_v4().to_string(), vec![Role::Admin], |_| {});
    let r = s.call(Method::GET, &by_booking, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body);
    assert_eq!(r.body["total"], 1, "{l}: {}", r.body);
    let r = s
        .call(
            Method::GET,
            "/api/v1/notifications?event_id=0",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.error_fields(), vec!["event_id".to_string()], "{l}: {}", r.body);

    // The event is cancelled: its ticket holder is told once, and told
    // of the refund.
    let r = s
        .call(
            Method::POST,
            &format!("/api/v1/events/{event}/cancel"),
            Some(&organizer),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body);
    let told = s
        .eventually_as(mine, &ada, |p| {
            one_sent(p, "EVENT_CANCELLED") && one_sent(p, "BOOKING_CANCELLED")
        })
        .await;
    let mail = mailed(sink, of_kind(&told, "BOOKING_CANCELLED")[0]);
    assert!(mail.contains("40.00 EUR is refunded"), "{l}: {mail}");
    let mail = mailed(sink, of_kind(&told, "EVENT_CANCELLED")[0]);
    assert!(mail.contains("Sale"), "{l}: {mail}");
    let welcome = mailed(sink, of_kind(&told, "WELCOME")[0]);
    assert!(welcome.contains(&format!("To: {to}")), "{l}: {welcome}");
    let r = s
        .call(Method::GET, "/api/v1/notifications/mine", Some(&bob), None)
        .await;
    assert!(
        of_kind(&r.body, "EVENT_CANCELLED").is_empty(),
        "{l}: bob holds no ticket"
    );
}

/// A mail server for the test, and the stack's variable pointing at it.
async fn mail_server() -> (std::sync::Arc<ticketer_testkit::SmtpSink>, (&'static str, String)) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("smtp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    (
        ticketer_testkit::SmtpSink::start(listener),
        ("NOTIFICATION_SMTP_URL", url),
    )
}

#[tokio::test]
async fn embedded_customers_and_organizers_are_told() {
    let (sink, (k, v)) = mail_server().await;
    customers_and_organizers_are_told(&TestStack::embedded(&[(k, &v)]).await, &sink).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn production_customers_and_organizers_are_told() {
    let (sink, (k, v)) = mail_server().await;
    let Some(s) = TestStack::production_with(&[(k, &v)]).await else {
        return;
    };
    customers_and_organizers_are_told(&s, &sink).await;
}

/// An administrator replaces a template: one that does not render is
/// refused with 422 naming its part; one that does is used for the next
/// notification of its type, and going back to the shipped one works.
async fn administrators_change_the_words(s: &TestStack) {
    let l = s.label;
    let path = "/api/v1/notifications/templates/BOOKING_FAILED/EMAIL";
    let admin = s.forge_with(&uuid::Uuid::new_v4().to_string(), vec![Role::Admin], |_| {});
    let (event, _) = event_on_sale_by(s, 5).await;
    let (_, customer, _) = s.user("CUSTOMER").await;

    let r = s.call(Method::GET, path, Some(&customer), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}");
    let shipped = s.call(Method::GET, path, Some(&admin), None).await;
    assert_eq!(shipped.body["is_default"], true, "{l}: {}", shipped.body);
    assert!(shipped.body["subject"]
        .as_str()
        .unwrap()
        .contains("{{ event.name }}"));
    let r = s
        .call(
            Method::GET,
            "/api/v1/notifications/templates/NO_SUCH/EMAIL",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}");

    let broken = serde_json::json!({
        "subject": "Sorry {{ recipient.first_name }}",
        "text": "{{ booking.no_such_thing }}",
        "html": "<p>Sorry</p>"
    });
    let r = s.call(Method::PUT, path, Some(&admin), Some(broken)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}: {}", r.body);
    assert_eq!(r.error_fields(), vec!["text".to_string()], "{l}: {}", r.body);

    let mine = serde_json::json!({
        "subject": "Sorry, {{ recipient.first_name }}: {{ event.name }}",
        "text": "Booking {{ booking.id }}: {{ booking.reason }}.",
        "html": "<p>Booking {{ booking.id }}: {{ booking.reason }}.</p>"
    });
    let r = s.call(Method::PUT, path, Some(&admin), Some(mine)).await;
    assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body);
    assert_eq!(r.body["is_default"], false);

    let r = book(s, &customer, event, 1, "tok_insufficientFunds").await;
    assert_eq!(r.text("status"), "FAILED", "{l}: {}", r.body);
    let told = s
        .eventually_as("/api/v1/notifications/mine", &customer, |p| {
            one_sent(p, "BOOKING_FAILED")
        })
        .await;
    let failed = of_kind(&told, "BOOKING_FAILED")[0];
    assert_eq!(failed["subject"], "Sorry, Test: Sale", "{l}");
    let mail = email_of(s, failed);
    assert!(
        mail.contains(&format!("Booking {}:", r.text("booking_id"))),
        "{l}: {mail}"
    );

    let r = s.call(Method::DELETE, path, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{l}");
    assert_eq!(
        s.call(Method::GET, path, Some(&admin), None).await.body,
        shipped.body,
        "{l}"
    );
}

both_backends!(administrators_change_the_words);

/// A mail server that refuses every connection, and one attempt per
/// notification: whatever is sent fails at once.
const MAIL_DOWN: &[(&str, &str)] = &[
    ("NOTIFICATION_SMTP_URL", "smtp://127.0.0.1:1"),
    ("NOTIFICATION_DELIVERY_ATTEMPTS", "1"),
];

/// An administrator sends a FAILED notification again: it is queued and
/// tried once more (its retry count goes up). Only FAILED ones with an
/// address can be; only administrators may.
async fn administrators_retry_what_failed(s: &TestStack) {
    let l = s.label;
    let admin = s.forge_with(&uuid::Uuid::new_v4().to_string(), vec![Role::Admin], |_| {});
    let (_, ada, _) = s.user("CUSTOMER").await;
    let mine = "/api/v1/notifications/mine";
    let failed = |p: &Value| {
        of_kind(p, "WELCOME")
            .first()
            .is_some_and(|n| n["status"] == "FAILED")
    };
    let told = s.eventually_as(mine, &ada, failed).await;
    let welcome = of_kind(&told, "WELCOME")[0].clone();
    assert_eq!(welcome["retry_count"], 1, "{l}: {welcome}");
    let retry = format!("/api/v1/notifications/{}/retry", welcome["id"].as_str().unwrap());

    let r = s.call(Method::POST, &retry, Some(&ada), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: {}", r.body);
    let r = s.call(Method::POST, &retry, Some(&admin), None).await;
    assert_eq!(
        (r.status, r.text("status")),
        (StatusCode::ACCEPTED, "PENDING".into()),
        "{l}: {}",
        r.body
    );
    let told = s
        .eventually_as(mine, &ada, |p| {
            of_kind(p, "WELCOME")
                .first()
                .is_some_and(|n| n["status"] == "FAILED" && n["retry_count"] == 2)
        })
        .await;
    assert_eq!(of_kind(&told, "WELCOME").len(), 1, "{l}: retried, not copied");

    let nobody = format!("/api/v1/notifications/{}/retry", uuid::Uuid::new_v4());
    let r = s.call(Method::POST, &nobody, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: {}", r.body);
    let r = s
        .call(Method::POST, "/api/v1/notifications/x/retry", Some(&admin), None)
        .await;
    assert_eq!(r.error_fields(), ["id"], "{l}: {}", r.body);
}

both_backends!(administrators_retry_what_failed, MAIL_DOWN);

/// The mail server is down when a customer registers: the welcome is tried
/// once and FAILED. Once the server is back, an administrator's retry sends
/// it: SENT, and the server has the mail for the customer's address.
async fn a_retry_succeeds_once_the_mail_server_is_back(s: &TestStack, port: u16) {
    let l = s.label;
    let admin = s.forge_with(&uuid::Uuid::new_v4().to_string(), vec![Role::Admin], |_| {});
    let (_, ada, _) = s.user("CUSTOMER").await;
    let mine = "/api/v1/notifications/mine";
    let status = |wanted: &'static str| {
        move |p: &Value| {
            of_kind(p, "WELCOME")
                .first()
                .is_some_and(|n| n["status"] == wanted)
        }
    };
    let told = s.eventually_as(mine, &ada, status("FAILED")).await;
    let welcome = of_kind(&told, "WELCOME")[0].clone();

    let sink =
        ticketer_testkit::SmtpSink::start(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let retry = format!("/api/v1/notifications/{}/retry", welcome["id"].as_str().unwrap());
    let r = s.call(Method::POST, &retry, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{l}: {}", r.body);
    let told = s.eventually_as(mine, &ada, status("SENT")).await;
    let sent = of_kind(&told, "WELCOME")[0].clone();
    assert_eq!(
        sent["id"], welcome["id"],
        "{l}: the same notification, not a copy"
    );
    assert!(sent["sent_at"].is_string(), "{l}: {sent}");
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{l}: {messages:?}");
    let to = welcome["recipient"].as_str().unwrap();
    assert!(messages[0].contains(&format!("To: {to}")), "{l}: {}", messages[0]);
}

/// A mail server on a port nobody listens on yet, one attempt per
/// notification.
fn mail_later(port: u16) -> [(&'static str, String); 2] {
    [
        ("NOTIFICATION_SMTP_URL", format!("smtp://127.0.0.1:{port}")),
        ("NOTIFICATION_DELIVERY_ATTEMPTS", "1".into()),
    ]
}

#[tokio::test]
async fn embedded_a_retry_succeeds_once_the_mail_server_is_back() {
    let port = crate::harness::free_port();
    let vars = mail_later(port);
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    a_retry_succeeds_once_the_mail_server_is_back(&TestStack::embedded(&env).await, port).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn production_a_retry_succeeds_once_the_mail_server_is_back() {
    let port = crate::harness::free_port();
    let vars = mail_later(port);
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Some(s) = TestStack::production_with(&env).await else {
        return;
    };
    a_retry_succeeds_once_the_mail_server_is_back(&s, port).await;
}
