//! What `ticketer dev` writes to its log while people sign up, sign in,
//! refresh, change passwords, administer and buy: flat JSON lines an
//! on-call engineer can search by service and trace, and never a password,
//! a token, a password hash, the signing key or an operator's secret.

use std::process::Stdio;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{call_gateway as call, dev_env, event_on_sale_at, signed_up, terminate, wait_ok};

#[tokio::test]
async fn logs_are_json_lines_and_hold_no_secret() {
    let data = tempfile::tempdir().unwrap();
    let secret = |what: &str| format!("{what}-{}", uuid::Uuid::new_v4().simple());
    let (admin_password, metrics_token) = (secret("admin-pass"), secret("metrics-token"));
    let (env, gateway) = dev_env(
        data.path(),
        &[
            ("GATEWAY_METRICS_TOKEN", &metrics_token),
            ("AUTH_BOOTSTRAP_ADMIN_EMAIL", "root@example.com"),
            ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", &admin_password),
            // As chatty as an operator would ever make it.
            ("RUST_LOG", "debug"),
        ],
    );
    let log_path = data.path().join("ticketer.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut dev = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketer"))
        .arg("dev")
        .env_clear()
        .envs(&env)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_ok(&format!("{gateway}/health")).await;
    let http = reqwest::Client::new();

    let password = secret("pw");
    let (access, refresh) = signed_up(&http, &gateway, "CUSTOMER", &password).await;
    let refreshed = call(
        &http,
        Method::POST,
        format!("{gateway}/api/v1/auth/refresh"),
        None,
        Some(json!({"refresh_token": refresh})),
    )
    .await;
    let access2 = refreshed["access_token"].as_str().unwrap().to_string();
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_string();
    let new_password = secret("new-pw");
    call(
        &http,
        Method::PATCH,
        format!("{gateway}/api/v1/auth/me"),
        Some(&access2),
        Some(json!({"password": new_password, "current_password": password})),
    )
    .await;
    // A wrong password, and a forged token, are refused (and logged as such).
    let wrong = http
        .post(format!("{gateway}/api/v1/auth/login"))
        .json(&json!({"email": "root@example.com", "password": secret("guess")}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let forged = format!("{access}x");
    let r = http
        .get(format!("{gateway}/api/v1/auth/me"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let admin = call(
        &http,
        Method::POST,
        format!("{gateway}/api/v1/auth/login"),
        None,
        Some(json!({"email": "root@example.com", "password": admin_password})),
    )
    .await;
    let admin_token = admin["access_token"].as_str().unwrap().to_string();
    let r = http
        .get(format!("{gateway}/metrics"))
        .bearer_auth(&metrics_token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // A purchase, for the saga's lines.
    let (organizer, _) = signed_up(&http, &gateway, "ORGANIZER", &secret("org-pw")).await;
    let id = event_on_sale_at(&http, &gateway, &organizer, 5).await;
    let booking = json!({"event_id": id, "number_of_tickets": 1, "payment_token": "tok_visa"});
    let booked = call(
        &http,
        Method::POST,
        format!("{gateway}/api/v1/bookings"),
        Some(&access2),
        Some(booking),
    )
    .await;
    assert_eq!(booked["status"], "CONFIRMED", "{booked}");

    assert_eq!(terminate(&mut dev).await, Some(0));

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(lines.len() > 20, "{} lines", lines.len());
    for line in &lines {
        for key in ["timestamp", "level", "service", "message"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    // A request's lines name their service and trace.
    let served: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request served" && l["service"] == "booking")
        .collect();
    assert!(!served.is_empty(), "no booking request logged");
    for l in &served {
        let hex = |k: &str, n: usize| {
            l[k].as_str()
                .is_some_and(|v| v.len() == n && v.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        assert!(hex("trace_id", 32) && hex("span_id", 16), "{l}");
        assert!(l["request_id"].is_string() && l["path"].is_string(), "{l}");
    }

    // A booking's own lines name it and its event.
    let created = lines
        .iter()
        .find(|l| l["message"] == "booking created")
        .expect("the booking's creation logged");
    assert_eq!(created["booking_id"], booked["booking_id"], "{created}");
    assert_eq!(created["event_id"], json!(id), "{created}");
    assert_eq!(created["service"], "booking", "{created}");
    assert!(created["trace_id"].is_string(), "{created}");

    let key = std::fs::read_to_string(data.path().join("auth-signing-key.pem")).unwrap();
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let secrets = [
        ("a password", password.as_str()),
        ("a changed password", new_password.as_str()),
        ("the bootstrap administrator's password", admin_password.as_str()),
        ("the metrics token", metrics_token.as_str()),
        ("an access token", access.as_str()),
        ("a refreshed access token", access2.as_str()),
        ("an administrator's token", admin_token.as_str()),
        ("a refresh token", refresh.as_str()),
        ("a rotated refresh token", refresh2.as_str()),
        ("the signing key", key_body.as_str()),
        ("a password hash", "$argon2"),
    ];
    for (what, value) in secrets {
        assert!(!value.is_empty());
        assert!(!text.contains(value), "the log holds {what}");
    }
    // Nor any token's signature part (a token cut short would still be
    // replayable if its signature showed).
    for token in [&access, &access2, &admin_token] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "the log holds a token's signature");
    }
}
