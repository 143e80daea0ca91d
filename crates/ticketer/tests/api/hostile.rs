//! What a careless or hostile client tries, through the gateway, on both
//! backends.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::TestStack;

/// Auth never honours Idempotency-Key: a retried login mints its own
/// tokens instead of replaying (and storing) the first pair, and a retried
/// refresh is a second refresh, not a replay of the first answer's tokens.
async fn auth_never_replays(s: &TestStack) {
    let l = s.label;
    let email = format!("careless-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "a-careless-client-9";
    let registered = json!({"email": email, "password": password, "first_name": "Care", "last_name": "Less"});
    let key = [("idempotency-key", "same-key")];
    let r = s
        .call_with(
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(registered),
            &key,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{l}: {}", r.body);
    let login = json!({"email": email, "password": password});
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let r = s
            .call_with(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(login.clone()),
                &key,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body);
        assert!(
            r.headers.get("idempotent-replayed").is_none(),
            "{l}: a login was replayed"
        );
        tokens.push(r.text("refresh_token"));
    }
    assert_ne!(tokens[0], tokens[1], "{l}: each login has its own session");

    // The same refresh token twice under one key: the second is a reuse of
    // a rotated token, refused, not the first answer again.
    let body = json!({"refresh_token": tokens[0]});
    let first = s
        .call_with(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(body.clone()),
            &key,
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{l}: {}", first.body);
    let again = s
        .call_with(Method::POST, "/api/v1/auth/refresh", None, Some(body), &key)
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{l}: {}", again.body);
    assert!(again.headers.get("idempotent-replayed").is_none(), "{l}");
}

#[tokio::test]
async fn embedded_auth_never_replays() {
    auth_never_replays(&TestStack::embedded(&[]).await).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn production_auth_never_replays() {
    let Some(s) = TestStack::production().await else {
        return;
    };
    auth_never_replays(&s).await;
}
