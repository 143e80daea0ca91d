//! The real binary as an operator runs it: `ticketer dev` comes up, stops
//! cleanly on SIGTERM and finds its data again; `serve` exports traces.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{routing::post, Router};
use reqwest::StatusCode;
use serde_json::json;
use ticketer_config::Service;
use tokio::process::Child;

use crate::harness::{spawn_ticketer, wait_ok};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends SIGTERM and returns the exit code, failing if it takes too long.
async fn terminate(child: &mut Child) -> Option<i32> {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("stopped within 15 s of SIGTERM")
        .unwrap()
        .code()
}

#[tokio::test]
async fn dev_stops_cleanly_on_sigterm_and_keeps_its_data() {
    let data = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = HashMap::from([
        ("HOST".into(), "127.0.0.1".into()),
        ("GATEWAY_RATE_LIMIT_PER_MINUTE".into(), "0".into()),
        ("RUST_LOG".into(), "warn".into()),
    ]);
    for svc in Service::ALL {
        env.insert(format!("{}PORT", svc.env_prefix()), free_port().to_string());
    }
    let gateway = format!("http://127.0.0.1:{}", env["GATEWAY_PORT"]);
    let data_dir = data.path().display().to_string();
    let args = ["dev", "--data-dir", &data_dir];

    // An administrator made from the command line, before the first start.
    let status = spawn_ticketer(
        &[
            "admin",
            "create",
            "--data-dir",
            &data_dir,
            "--email",
            "ops@example.com",
            "--password",
            "admin-pass-1",
        ],
        &env,
    )
    .wait()
    .await
    .unwrap();
    assert!(status.success(), "admin create failed");

    let mut first = spawn_ticketer(&args, &env);
    wait_ok(&format!("{gateway}/health")).await;
    let http = reqwest::Client::new();
    let login = json!({"email": "ops@example.com", "password": "admin-pass-1"});
    let r = http
        .post(format!("{gateway}/api/v1/auth/login"))
        .json(&login)
        .send()
        .await
        .unwrap();
    let token = r.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let me = http
        .get(format!("{gateway}/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.json::<serde_json::Value>().await.unwrap()["roles"],
        json!(["ADMIN"])
    );
    let user =
        json!({"email": "keep@example.com", "password": "persisted-1", "first_name": "K", "last_name": "P"});
    let r = http
        .post(format!("{gateway}/api/v1/auth/register"))
        .json(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(terminate(&mut first).await, Some(0), "clean exit on SIGTERM");

    // Same data dir: the account and the signing key are still there.
    let mut second = spawn_ticketer(&args, &env);
    wait_ok(&format!("{gateway}/health")).await;
    let login = json!({"email": "keep@example.com", "password": "persisted-1"});
    let r = http
        .post(format!("{gateway}/api/v1/auth/login"))
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(terminate(&mut second).await, Some(0));
    assert!(data.path().join("auth.db").exists() && data.path().join("auth-signing-key.pem").exists());
}

#[tokio::test]
async fn serve_exports_traces_over_otlp() {
    // A stand-in collector that counts OTLP/HTTP trace exports.
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let collector = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                if !body.is_empty() {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let env: HashMap<String, String> = HashMap::from([
        ("HOST".into(), "127.0.0.1".into()),
        ("EVENTS_PORT".into(), port.to_string()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
        ("TICKETER_DATA_DIR".into(), data.path().display().to_string()),
        ("RUST_LOG".into(), "info".into()),
    ]);
    let mut events = spawn_ticketer(&["serve", "events"], &env);
    wait_ok(&format!("http://127.0.0.1:{port}/health/live")).await;
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/events"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Shutdown flushes the batch exporter.
    assert_eq!(terminate(&mut events).await, Some(0));
    assert!(
        received.load(Ordering::SeqCst) > 0,
        "no trace export reached the collector"
    );
}
