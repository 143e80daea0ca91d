//! The newcomer's walk through Ticketer, on each backend.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use ticketer_http::Role;

use crate::harness::TestStack;

fn event_body(name: &str) -> Value {
    json!({
        "event_name": name,
        "description": "An evening of string quartets",
        "category": "Music",
        "location": "Vienna",
        "event_date": "2031-06-01",
        "start_time": "19:30",
        "end_time": "22:00",
        "ticket_capacity": 250,
        "ticket_price": "49.90"
    })
}

/// Signing up and in: one account per email whatever its case, nobody their
/// own admin, a wrong password indistinguishable from an unknown account.
async fn signing_up_and_in(s: &TestStack) {
    let l = s.label;
    let (customer_id, customer, _) = s.user("CUSTOMER").await;

    // Duplicate email, whatever its case.
    let email = format!("Dup-{}@Example.com", uuid::Uuid::new_v4().simple());
    let reg = |e: String| json!({"email": e, "password": "longenough", "first_name": "A", "last_name": "B"});
    let r = s
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(reg(email.clone())),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{l}");
    assert_eq!(r.body["roles"], json!(["CUSTOMER"]), "{l}");
    let r = s
        .call(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(reg(email.to_lowercase())),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{l}");
    assert_eq!(r.content_type(), "application/problem+json", "{l}");

    // Nobody makes themselves an admin.
    let mut admin = reg(format!("a-{}@x.io", uuid::Uuid::new_v4().simple()));
    admin["role"] = json!("ADMIN");
    let r = s
        .call(Method::POST, "/api/v1/auth/register", None, Some(admin))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}");
    assert_eq!(r.error_fields(), ["role"], "{l}");

    // Wrong password and unknown account look the same.
    let bad = s
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": "wrong-one"})),
        )
        .await;
    let unknown = s
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "nobody@x.io", "password": "wrong-one"})),
        )
        .await;
    assert_eq!(
        (bad.status, unknown.status),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED),
        "{l}"
    );
    assert_eq!(bad.body["detail"], unknown.body["detail"], "{l}");

    // Who am I.
    let r = s
        .call(Method::GET, "/api/v1/auth/me", Some(&customer), None)
        .await;
    assert_eq!(
        (r.status, r.text("id")),
        (StatusCode::OK, customer_id.clone()),
        "{l}"
    );
}

/// Events: only organizers create them, and bad input is refused with the
/// offending fields named.
async fn events_refuse_wrong_roles_and_bad_input(s: &TestStack) {
    let l = s.label;
    let (_, organizer, _) = s.user("ORGANIZER").await;
    let (_, customer, _) = s.user("CUSTOMER").await;

    // A customer cannot create events.
    let r = s
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&customer),
            Some(event_body("Nope")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}: {}", r.body);

    // Bad input: malformed JSON, a missing field, a wrong type, a broken rule.
    let r = s
        .raw_post("/api/v1/events", &organizer, "{\"event_name\": ")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}");
    assert_eq!(r.content_type(), "application/problem+json", "{l}");
    let mut missing = event_body("Missing");
    missing.as_object_mut().unwrap().remove("location");
    let r = s
        .call(Method::POST, "/api/v1/events", Some(&organizer), Some(missing))
        .await;
    assert_eq!(
        (r.status, r.error_fields()),
        (StatusCode::BAD_REQUEST, vec!["location".to_string()]),
        "{l}"
    );
    let mut wrong = event_body("Wrong");
    wrong["ticket_capacity"] = json!("lots");
    let r = s
        .call(Method::POST, "/api/v1/events", Some(&organizer), Some(wrong))
        .await;
    assert_eq!(r.error_fields(), ["ticket_capacity"], "{l}");
    let mut rules = event_body("Rules");
    rules["end_time"] = json!("18:00");
    rules["event_date"] = json!("2001-01-01");
    let r = s
        .call(Method::POST, "/api/v1/events", Some(&organizer), Some(rules))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}");
    assert_eq!(r.error_fields(), ["event_date", "end_time"], "{l}");
}

/// An event's life: a draft only its organizer sees, edited and published
/// by its owner alone, on sale at the ticket service, found by search,
/// resized, then cancelled for good.
async fn an_event_from_draft_to_cancelled(s: &TestStack) {
    let l = s.label;
    let (organizer_id, organizer, _) = s.user("ORGANIZER").await;
    let (_, other_organizer, _) = s.user("ORGANIZER").await;
    let (_, customer, _) = s.user("CUSTOMER").await;

    // Create a draft: only its organizer sees it.
    let word = format!("quartet{}", uuid::Uuid::new_v4().simple());
    let r = s
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&organizer),
            Some(event_body(&format!("Evening {word}"))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{l}: {}", r.body);
    assert_eq!(
        (r.text("status"), r.text("organizer")),
        ("DRAFT".into(), organizer_id.clone()),
        "{l}"
    );
    assert_eq!(r.text("ticket_price"), "49.90", "{l}");
    let id = r.body["id"].as_i64().unwrap();
    let path = format!("/api/v1/events/{id}");
    assert_eq!(
        s.call(Method::GET, &path, None, None).await.status,
        StatusCode::NOT_FOUND,
        "{l}"
    );
    assert_eq!(
        s.call(Method::GET, &path, Some(&customer), None).await.status,
        StatusCode::NOT_FOUND,
        "{l}"
    );
    assert_eq!(
        s.call(Method::GET, &path, Some(&organizer), None).await.status,
        StatusCode::OK,
        "{l}"
    );

    // Another organizer can neither edit nor publish it.
    let patch = json!({"ticket_capacity": 300});
    let r = s
        .call(Method::PATCH, &path, Some(&other_organizer), Some(patch.clone()))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}");
    let r = s
        .call(
            Method::POST,
            &format!("{path}/publish"),
            Some(&other_organizer),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}");

    // The owner edits and publishes; publishing twice is a conflict.
    let r = s.call(Method::PATCH, &path, Some(&organizer), Some(patch)).await;
    assert_eq!(
        (r.status, r.body["ticket_capacity"].as_i64()),
        (StatusCode::OK, Some(300)),
        "{l}"
    );
    let r = s
        .call(Method::POST, &format!("{path}/publish"), Some(&organizer), None)
        .await;
    assert_eq!(
        (r.status, r.text("status")),
        (StatusCode::OK, "PUBLISHED".into()),
        "{l}"
    );
    let r = s
        .call(Method::POST, &format!("{path}/publish"), Some(&organizer), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{l}");

    // Shortly after publishing, its seats are on sale.
    let availability = format!("/api/v1/tickets/availability/{id}");
    let r = s.eventually(&availability, |b| b["status"] == "ON_SALE").await;
    assert_eq!(
        (
            r["capacity"].as_i64(),
            r["available"].as_i64(),
            r["held"].as_i64(),
            r["sold"].as_i64()
        ),
        (Some(300), Some(300), Some(0), Some(0)),
        "{l}: {r}"
    );
    let draft = s
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&organizer),
            Some(event_body("Still a draft")),
        )
        .await;
    let r = s
        .call(
            Method::GET,
            &format!("/api/v1/tickets/availability/{}", draft.body["id"]),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}: drafts sell nothing");
    // A capacity change reaches the inventory.
    let r = s
        .call(
            Method::PATCH,
            &path,
            Some(&organizer),
            Some(json!({"ticket_capacity": 280})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{l}");
    s.eventually(&availability, |b| b["capacity"] == 280 && b["available"] == 280)
        .await;

    // Everyone finds it by search and fetches it.
    let r = s
        .call(Method::GET, &format!("/api/v1/events?q={word}"), None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{l}");
    let ids: Vec<i64> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect();
    assert_eq!(ids, vec![id], "{l}: search for {word}");
    assert_eq!(r.body["total"], json!(1), "{l}");
    let r = s
        .call(
            Method::GET,
            "/api/v1/events?category=music&location=vienna&page_size=100",
            None,
            None,
        )
        .await;
    assert!(
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == json!(id)),
        "{l}"
    );
    let r = s
        .call(Method::GET, "/api/v1/events?page_size=500", None, None)
        .await;
    assert_eq!(r.error_fields(), ["page_size"], "{l}");
    let r = s.call(Method::GET, &path, None, None).await;
    assert_eq!(
        (r.status, r.text("event_name")),
        (StatusCode::OK, format!("Evening {word}")),
        "{l}"
    );
    assert!(
        r.body.get("revenue").is_none(),
        "{l}: sales figures are for the organizer"
    );
    let r = s
        .call(Method::GET, "/api/v1/events/mine", Some(&organizer), None)
        .await;
    assert_eq!(r.body["items"][0]["tickets_sold"], json!(0), "{l}");

    // Cancelling: the owner may, and a cancelled event stays cancelled.
    let r = s
        .call(Method::POST, &format!("{path}/cancel"), Some(&organizer), None)
        .await;
    assert_eq!(r.text("status"), "CANCELLED", "{l}");
    let r = s.eventually(&availability, |b| b["status"] == "CANCELLED").await;
    assert_eq!(r["available"], 0, "{l}: a cancelled event sells nothing");
    let r = s
        .call(
            Method::PATCH,
            &path,
            Some(&organizer),
            Some(json!({"event_name": "Again"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{l}");
}

/// Tokens and sessions: absent, expired, tampered or foreign tokens are
/// refused; refresh rotates, and a reused refresh token ends the session.
async fn tokens_and_sessions(s: &TestStack) {
    let l = s.label;
    let (organizer_id, _, organizer_refresh) = s.user("ORGANIZER").await;
    let (_, customer, _) = s.user("CUSTOMER").await;

    // Tokens: absent, expired, tampered, foreign role claims.
    let r = s
        .call(Method::POST, "/api/v1/events", None, Some(event_body("x")))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}");
    let expired = s.forge(&organizer_id, vec![Role::Organizer], -1);
    let r = s
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&expired),
            Some(event_body("x")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: expired token");
    let mut parts: Vec<String> = customer.split('.').map(String::from).collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["roles"] = json!(["ORGANIZER", "ADMIN"]);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let tampered = parts.join(".");
    let r = s
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&tampered),
            Some(event_body("x")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: tampered token");
    assert_eq!(
        s.call(Method::GET, "/api/v1/auth/me", Some("garbage"), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Refresh rotates; a reused refresh token kills the whole session.
    let body = |t: &str| Some(json!({"refresh_token": t}));
    let r = s
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            body(&organizer_refresh),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{l}");
    let next = r.text("refresh_token");
    assert_ne!(next, organizer_refresh, "{l}");
    assert_eq!(
        s.call(
            Method::GET,
            "/api/v1/auth/me",
            Some(&r.text("access_token")),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    let r = s
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            body(&organizer_refresh),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: reused refresh token");
    let r = s
        .call(Method::POST, "/api/v1/auth/refresh", None, body(&next))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "{l}: the family is revoked after reuse"
    );

    // Logout ends the session.
    let (_, _, refresh) = s.user("CUSTOMER").await;
    let r = s
        .call(Method::POST, "/api/v1/auth/logout", None, body(&refresh))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{l}");
    let r = s
        .call(Method::POST, "/api/v1/auth/refresh", None, body(&refresh))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}");
}

/// A retried POST with the same Idempotency-Key has one effect, and keys
/// belong to their caller.
async fn idempotent_event_creation(s: &TestStack) {
    let l = s.label;
    let (_, organizer, _) = s.user("ORGANIZER").await;
    let (_, other_organizer, _) = s.user("ORGANIZER").await;

    // A retried POST with the same Idempotency-Key has one effect.
    let key = [("idempotency-key", "create-once-1")];
    let before = s
        .call(Method::GET, "/api/v1/events/mine", Some(&organizer), None)
        .await
        .body["total"]
        .clone();
    let first = s
        .call_with(
            Method::POST,
            "/api/v1/events",
            Some(&organizer),
            Some(event_body("Once")),
            &key,
        )
        .await;
    let again = s
        .call_with(
            Method::POST,
            "/api/v1/events",
            Some(&organizer),
            Some(event_body("Once")),
            &key,
        )
        .await;
    assert_eq!(
        (first.status, again.status),
        (StatusCode::CREATED, StatusCode::CREATED),
        "{l}"
    );
    assert_eq!(
        first.body["id"], again.body["id"],
        "{l}: the retry created a second event"
    );
    assert_eq!(again.headers["idempotent-replayed"], "true", "{l}");
    let other = s
        .call_with(
            Method::POST,
            "/api/v1/events",
            Some(&organizer),
            Some(event_body("Different")),
            &key,
        )
        .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{l}");
    let after = s
        .call(Method::GET, "/api/v1/events/mine", Some(&organizer), None)
        .await
        .body["total"]
        .clone();
    assert_eq!(after.as_i64().unwrap(), before.as_i64().unwrap() + 1, "{l}");
    // Keys belong to their caller: another organizer's same key is a new request.
    let theirs = s
        .call_with(
            Method::POST,
            "/api/v1/events",
            Some(&other_organizer),
            Some(event_body("Once")),
            &key,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{l}");
    assert_ne!(theirs.body["id"], first.body["id"], "{l}");

    // Every answer carries a request id.
    assert!(theirs.headers.contains_key("x-request-id"), "{l}");
}

both_backends!(signing_up_and_in);
both_backends!(events_refuse_wrong_roles_and_bad_input);
both_backends!(an_event_from_draft_to_cancelled);
both_backends!(tokens_and_sessions);
both_backends!(idempotent_event_creation);

/// Really on the production backends, each service on its own.
#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn production_runs_each_service_on_the_real_servers() {
    let Some(stack) = TestStack::production().await else {
        return;
    };
    let health = stack.call(Method::GET, "/health", None, None).await;
    for svc in ["auth", "events", "ticket", "booking", "payment", "notification"] {
        let c = &health.body["services"][svc]["details"]["components"];
        assert_eq!(c["database"]["kind"], "postgres", "{svc}: {}", health.body);
        assert_eq!(c["bus"]["kind"], "rabbitmq", "{svc}");
    }
    assert_eq!(
        health.body["services"]["ticket"]["details"]["components"]["cache"]["kind"],
        "redis"
    );
}

const ADMIN_EMAIL: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "bootstrap-pass";
/// A stack that starts with that administrator.
const ADMIN_ENV: &[(&str, &str)] = &[
    ("AUTH_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL),
    ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD),
];

async fn roles_and_profile(s: &TestStack) {
    let l = s.label;
    let login = |email: &str, password: &str| {
        s.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
    };
    let admin = login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(
        admin.status,
        StatusCode::OK,
        "{l}: bootstrap admin logs in: {}",
        admin.body
    );
    let admin = admin.text("access_token");
    let (user_id, customer, customer_refresh) = s.user("CUSTOMER").await;
    let roles_path = format!("/api/v1/auth/users/{user_id}/roles");

    // Only admins grant roles.
    let r = s
        .call(
            Method::POST,
            &roles_path,
            Some(&customer),
            Some(json!({"role": "ORGANIZER"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}");
    let r = s
        .call(
            Method::POST,
            &roles_path,
            Some(&admin),
            Some(json!({"role": "ORGANIZER"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["roles"].clone()),
        (StatusCode::OK, json!(["CUSTOMER", "ORGANIZER"])),
        "{l}"
    );
    let r = s
        .call(
            Method::POST,
            &roles_path,
            Some(&admin),
            Some(json!({"role": "SUPERUSER"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}");
    let missing = format!("/api/v1/auth/users/{}/roles", uuid::Uuid::new_v4());
    let r = s
        .call(
            Method::POST,
            &missing,
            Some(&admin),
            Some(json!({"role": "ORGANIZER"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{l}");

    // The new role is in the next token.
    let r = s
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": customer_refresh})),
        )
        .await;
    let promoted = r.text("access_token");
    let r = s
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&promoted),
            Some(event_body("Promoted")),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{l}: {}", r.body);
    let r = s
        .call(
            Method::DELETE,
            &format!("{roles_path}/ORGANIZER"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.body["roles"], json!(["CUSTOMER"]), "{l}");

    // Profile edits; a new password ends the other sessions.
    let (_, token, refresh) = s.user("CUSTOMER").await;
    let r = s
        .call(
            Method::PATCH,
            "/api/v1/auth/me",
            Some(&token),
            Some(json!({"first_name": "  "})),
        )
        .await;
    assert_eq!(r.error_fields(), ["first_name"], "{l}");
    // A stolen access token alone cannot take the account: a new password
    // needs the current one, and a guessable one is refused.
    let patch = |body: serde_json::Value| s.call(Method::PATCH, "/api/v1/auth/me", Some(&token), Some(body));
    let r = patch(json!({"password": "brand-new-pass"})).await;
    assert_eq!(r.error_fields(), ["current_password"], "{l}: {}", r.body);
    let r = patch(json!({"password": "brand-new-pass", "current_password": "not-it-at-all"})).await;
    assert_eq!(r.error_fields(), ["current_password"], "{l}: {}", r.body);
    let r = patch(json!({"password": "password123", "current_password": "s3cret-pass"})).await;
    assert_eq!(r.error_fields(), ["password"], "{l}: {}", r.body);
    let r = patch(
        json!({"first_name": "Grace", "password": "brand-new-pass", "current_password": "s3cret-pass"}),
    )
    .await;
    assert_eq!(
        (r.status, r.text("first_name")),
        (StatusCode::OK, "Grace".into()),
        "{l}"
    );
    let email = r.text("email");
    let r = s
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "{l}: old session survives a password change"
    );
    assert_eq!(
        login(&email, "s3cret-pass").await.status,
        StatusCode::UNAUTHORIZED,
        "{l}"
    );
    assert_eq!(
        login(&email, "brand-new-pass").await.status,
        StatusCode::OK,
        "{l}"
    );
}

both_backends!(roles_and_profile, ADMIN_ENV);

/// An administrator finds users by part of their email or name, with their
/// roles; nobody else can list them; wildcards in the query are plain text.
async fn admins_find_users(s: &TestStack) {
    let l = s.label;
    let admin = s
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await
        .text("access_token");
    let (customer_id, customer, _) = s.user("CUSTOMER").await;
    let (organizer_id, _, _) = s.user("ORGANIZER").await;
    let me = s
        .call(Method::GET, "/api/v1/auth/me", Some(&customer), None)
        .await;
    let email = me.text("email");

    let r = s
        .call(Method::GET, "/api/v1/auth/users", Some(&customer), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{l}");
    let r = s.call(Method::GET, "/api/v1/auth/users", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}");

    // By a piece of the email, any case: that user alone, with the role.
    let piece = email[..email.find('@').unwrap()].to_uppercase();
    let r = s
        .call(
            Method::GET,
            &format!("/api/v1/auth/users?q={piece}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body);
    assert_eq!(r.body["total"], 1, "{l}: {}", r.body);
    assert_eq!(r.body["items"][0]["id"], customer_id.as_str());
    assert_eq!(r.body["items"][0]["roles"], json!(["CUSTOMER"]));

    // By name: every test user is "Test <ROLE>"; newest first.
    let r = s
        .call(
            Method::GET,
            "/api/v1/auth/users?q=test%20organizer&page_size=100",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{l}");
    assert_eq!(r.body["items"][0]["id"], organizer_id.as_str(), "{l}: {}", r.body);
    assert!(r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["roles"] == json!(["ORGANIZER"])));

    // All users, paged; the administrator is among them.
    let r = s
        .call(Method::GET, "/api/v1/auth/users?page_size=1", Some(&admin), None)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{l}");
    assert!(r.body["total"].as_i64().unwrap() >= 3, "{l}: {}", r.body);

    // Wildcards are text; a bad page or an overlong query names the field.
    let r = s
        .call(Method::GET, "/api/v1/auth/users?q=%25", Some(&admin), None)
        .await;
    assert_eq!(r.body["total"], 0, "{l}: {}", r.body);
    let r = s
        .call(
            Method::GET,
            "/api/v1/auth/users?page_size=1000",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.error_fields(), vec!["page_size"], "{l}");
    let long = "a".repeat(201);
    let r = s
        .call(
            Method::GET,
            &format!("/api/v1/auth/users?q={long}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.error_fields(), vec!["q"], "{l}");
}

both_backends!(admins_find_users, ADMIN_ENV);

/// A broad search stops counting at EVENTS_SEARCH_COUNT_LIMIT (3 here) and
/// says so; a narrower one is counted exactly; pages beyond the count
/// still come.
async fn broad_searches_are_counted_up_to_a_limit(s: &TestStack) {
    let l = s.label;
    let (_, organizer, _) = s.user("ORGANIZER").await;
    let word = format!("zq{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    for (i, place) in ["Porto", "Porto", "Lyon", "Lyon", "Lyon"].iter().enumerate() {
        let mut body = event_body(&format!("{word} night {i}"));
        body["location"] = json!(place);
        s.published_event(&organizer, body).await;
    }
    let r = s
        .call(
            Method::GET,
            &format!("/api/v1/events?q={word}&page_size=2"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (r.body["total"].clone(), r.body["total_capped"].clone()),
        (json!(3), json!(true)),
        "{l}: {}",
        r.body
    );
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "{l}");
    let r = s
        .call(
            Method::GET,
            &format!("/api/v1/events?q={word}&page_size=2&page=3"),
            None,
            None,
        )
        .await;
    assert_eq!(
        r.body["items"].as_array().unwrap().len(),
        1,
        "{l}: the fifth event, past the count"
    );
    let r = s
        .call(
            Method::GET,
            &format!("/api/v1/events?q={word}&location=porto"),
            None,
            None,
        )
        .await;
    assert_eq!(r.body["total"], 2, "{l}: {}", r.body);
    assert!(r.body.get("total_capped").is_none(), "{l}: {}", r.body);
}

both_backends!(
    broad_searches_are_counted_up_to_a_limit,
    &[("EVENTS_SEARCH_COUNT_LIMIT", "3")]
);

/// A search by place finds the text anywhere in the location, in any case,
/// whether it is long enough for the place index (three characters) or
/// not; with words, only events having both; drafts never; and the pages
/// of a search, read one after the other, are its matches in date order.
async fn places_are_found_anywhere_in_the_location(s: &TestStack) {
    let l = s.label;
    let (_, organizer, _) = s.user("ORGANIZER").await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (word, other) = (format!("zw{tag}"), format!("zo{tag}"));
    let place = format!("Qh{tag}");
    // (name, location, date, published)
    let events = [
        (word.clone(), format!("{place} Harbour"), "2031-03-05", true),
        (word.clone(), format!("Old {place}"), "2031-03-01", true),
        (word.clone(), "Lisbon".to_string(), "2031-03-02", true),
        (other.clone(), place.clone(), "2031-03-03", true),
        (word.clone(), place.clone(), "2031-03-04", false),
        (word.clone(), format!("X{place}ville"), "2031-03-06", true),
    ];
    let mut ids = Vec::new();
    for (name, location, date, published) in &events {
        let mut body = event_body(&format!("{name} concert"));
        body["location"] = json!(location);
        body["event_date"] = json!(date);
        if *published {
            ids.push(s.published_event(&organizer, body).await);
        } else {
            let r = s
                .call(Method::POST, "/api/v1/events", Some(&organizer), Some(body))
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{l}: {}", r.body);
            ids.push(r.body["id"].as_i64().unwrap());
        }
    }
    let found = |path: String| async move {
        let r = s.call(Method::GET, &path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {path}: {}", r.body);
        let items: Vec<i64> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        (items, r.body["total"].as_i64().unwrap())
    };
    let lower = place.to_lowercase();
    // In date order: Old Qh.. (1st), Qh.. Harbour (5th), XQh..ville (6th).
    let with_word = vec![ids[1], ids[0], ids[5]];
    assert_eq!(
        found(format!("/api/v1/events?q={word}&location={lower}")).await,
        (with_word.clone(), 3),
        "{l}"
    );
    assert_eq!(
        found(format!(
            "/api/v1/events?q={word}&location={}",
            place.to_uppercase()
        ))
        .await,
        (with_word.clone(), 3),
        "{l}: any case"
    );
    // Two characters: too short for trigrams, still found anywhere.
    let short = &lower[..2];
    assert_eq!(
        found(format!("/api/v1/events?q={word}&location={short}")).await.1,
        3,
        "{l}"
    );
    // The place alone: the other word's event too, and not the draft.
    assert_eq!(
        found(format!("/api/v1/events?location={lower}&page_size=100")).await,
        (vec![ids[1], ids[3], ids[0], ids[5]], 4),
        "{l}"
    );
    assert_eq!(
        found(format!("/api/v1/events?q={word}&location={lower}+harbour"))
            .await
            .0,
        vec![ids[0]],
        "{l}"
    );
    assert_eq!(
        found(format!("/api/v1/events?q={word}&location=nowhere{tag}")).await,
        (vec![], 0),
        "{l}"
    );
    // Page after page: the matches in date order, each once, counted alike.
    let mut paged = Vec::new();
    for page in 1..=3 {
        let (items, total) = found(format!("/api/v1/events?q={word}&page_size=2&page={page}")).await;
        assert_eq!(total, 4, "{l}: page {page}");
        paged.extend(items);
    }
    assert_eq!(paged, vec![ids[1], ids[2], ids[0], ids[5]], "{l}");
}

both_backends!(places_are_found_anywhere_in_the_location);
