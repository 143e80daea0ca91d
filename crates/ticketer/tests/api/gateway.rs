//! What the gateway itself adds: limits, filters, CORS, health and docs.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use ticketer_cache::Cache;
use ticketer_config::{Env, Service};
use tokio_util::sync::CancellationToken;

use crate::harness::{test_urls, TestStack};

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let s = TestStack::embedded(&[
        ("GATEWAY_RATE_LIMIT_PER_MINUTE", "60"),
        ("GATEWAY_RATE_LIMIT_BURST", "3"),
    ])
    .await;
    for i in 0..3 {
        let r = s.call(Method::GET, "/api/v1/events", None, None).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
    }
    let r = s.call(Method::GET, "/api/v1/events", None, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.content_type(), "application/problem+json");
    let retry = r.retry_after().expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Health stays reachable for orchestrators.
    assert_eq!(
        s.call(Method::GET, "/health", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn gateway_replicas_share_one_limit_through_redis() {
    let Some((_, _, redis)) = test_urls() else {
        ticketer_testkit::skip_test("shared rate limit test", "the TICKETER_TEST_* URLs");
        return;
    };
    let s = TestStack::embedded(&[]).await;
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let vars = [
        ("GATEWAY_RATE_LIMIT_PER_MINUTE", "60"),
        ("GATEWAY_RATE_LIMIT_BURST", "4"),
        ("GATEWAY_EVENTS_URL", ""),
    ];
    let shutdown = CancellationToken::new();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let cache = Cache::connect(Some(&redis), &prefix).await.unwrap();
        let mut env: std::collections::HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        // Both replicas front the same events service: the embedded stack's gateway.
        env.insert("GATEWAY_EVENTS_URL".into(), s.base.clone());
        let config =
            ticketer_gateway::GatewayConfig::from_env(&Env::from_map(Service::Gateway, env)).unwrap();
        let listener = ticketer_http::bind("127.0.0.1", 0).await.unwrap();
        let verifier = ticketer_http::TokenVerifier::with_keys("ticketer-auth", vec![]);
        let app = ticketer_gateway::build(config, cache, verifier, listener, shutdown.clone()).unwrap();
        replicas.push(format!("http://127.0.0.1:{}", app.port()));
        tokio::spawn(app.run_until_stopped());
    }
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = http
            .get(format!("{}/api/v1/events", replicas[i % 2]))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    shutdown.cancel();
    Cache::connect(Some(&redis), &prefix)
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
}

#[tokio::test]
async fn denied_addresses_get_403() {
    let s = TestStack::embedded(&[("GATEWAY_IP_DENY", "127.0.0.0/8")]).await;
    let r = s.call(Method::GET, "/api/v1/events", None, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let s = TestStack::embedded(&[("GATEWAY_IP_ALLOW", "10.0.0.0/8")]).await;
    assert_eq!(
        s.call(Method::GET, "/api/v1/events", None, None).await.status,
        StatusCode::FORBIDDEN
    );
    let s = TestStack::embedded(&[("GATEWAY_IP_ALLOW", "127.0.0.1")]).await;
    assert_eq!(
        s.call(Method::GET, "/api/v1/events", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn cors_answers_only_listed_origins() {
    let s = TestStack::embedded(&[("GATEWAY_CORS_ORIGINS", "https://app.example.com")]).await;
    let preflight = |origin: &'static str| {
        s.http
            .request(Method::OPTIONS, format!("{}/api/v1/events", s.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn health_docs_and_metrics() {
    let s = TestStack::embedded(&[("GATEWAY_METRICS_TOKEN", "scrape")]).await;
    let r = s.call(Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    for svc in ["auth", "events", "ticket", "booking", "payment", "notification"] {
        assert_eq!(r.body["services"][svc]["status"], "UP", "{svc}: {}", r.body);
    }
    let r = s.call(Method::GET, "/openapi.json", None, None).await;
    assert!(r.body["paths"]["/api/v1/auth/register"].is_object(), "{}", r.body);
    assert!(r.body["paths"]["/api/v1/events/{id}/publish"].is_object());
    assert!(r.body["components"]["schemas"]["Problem"].is_object());
    let r = s.call(Method::GET, "/docs/", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.as_str().unwrap().contains("swagger"), "docs page");
    let r = s
        .call(Method::GET, "/docs/swagger-ui-bundle.js", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "assets are served from the binary");

    s.call(Method::GET, "/api/v1/events", None, None).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = s.call(Method::GET, "/metrics", Some("scrape"), None).await;
    let text = r.body.as_str().unwrap();
    assert!(text.contains("ticketer_http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/api/v1/{*rest}\""), "{text}");
    assert!(
        text.contains("ticketer_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_are_problem_json_404() {
    let s = TestStack::embedded(&[]).await;
    let r = s.call(Method::GET, "/api/v1/nothing/here", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.content_type(), "application/problem+json");
    let r = s
        .call(Method::GET, "/api/v1/events/not-a-number", None, None)
        .await;
    assert_eq!(r.error_fields(), ["id"]);
}

#[tokio::test]
async fn gateway_serves_https_when_given_a_certificate() {
    use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{rustls, TlsConnector};

    // A throwaway CA, and a certificate for localhost signed by it.
    let certs = ticketer_testkit::TestCertificates::for_localhost();
    let (ca, cert, key) = (&certs.ca, &certs.cert, &certs.key);
    let s = TestStack::embedded(&[
        ("GATEWAY_TLS_CERT", cert.as_str()),
        ("GATEWAY_TLS_KEY", key.as_str()),
        // Two handshakes (and two connections) at a time, for the check
        // at the end.
        ("GATEWAY_HTTP_MAX_CONNECTIONS", "2"),
    ])
    .await;
    let port: u16 = s.base.rsplit(':').next().unwrap().parse().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = TlsConnector::from(std::sync::Arc::new(config));
    let handshake = move || {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        }
    };
    let mut tls = handshake().await.expect("TLS handshake with the gateway");
    tls.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("strict-transport-security: max-age=31536000"),
        "HTTPS answers tell browsers to keep to HTTPS: {answer}"
    );
    assert!(
        answer.contains("\"items\""),
        "the request went through to events: {answer}"
    );

    // Plain HTTP on the TLS port gets no answer.
    let plain = s.http.get(format!("{}/health", s.base)).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // Handshakes are capped: with two connections that never start one,
    // a third client's handshake is not even begun (it waits in the
    // backlog) until one of them goes.
    let silent_one = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _silent_two = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let waiting = tokio::spawn(async move { handshake().await.is_ok() });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third handshake ran beside two stalled ones"
    );
    drop(silent_one);
    let done = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the third handshake went ahead once a place was free")
        .unwrap();
    assert!(done, "the third handshake succeeded");
}

/// Anonymous public reads come from the gateway's short-lived copy: with
/// an ETag (304 when it is sent back), never long behind a change, and
/// never mixed up with what a signed-in organizer may see.
async fn public_reads_are_kept_briefly(s: &TestStack) {
    let l = s.label;
    let (_, organizer, _) = s.user("ORGANIZER").await;
    let body = serde_json::json!({
        "event_name": "Kept", "description": "", "category": "Music", "location": "Hall",
        "event_date": "2031-03-03", "start_time": "20:00", "end_time": "23:00",
        "ticket_capacity": 10, "ticket_price": "20.00"
    });
    let r = s
        .call(Method::POST, "/api/v1/events", Some(&organizer), Some(body))
        .await;
    let id = r.body["id"].as_i64().unwrap();
    let path = format!("/api/v1/events/{id}");

    // A draft: hidden from everyone else, shown to its organizer.
    let anonymous = s.call(Method::GET, &path, None, None).await;
    assert_eq!(anonymous.status, StatusCode::NOT_FOUND, "{l}");
    let own = s.call(Method::GET, &path, Some(&organizer), None).await;
    assert_eq!(own.status, StatusCode::OK, "{l}: credentials bypass the copy");

    let publish = format!("/api/v1/events/{id}/publish");
    s.call(Method::POST, &publish, Some(&organizer), None).await;
    let seen = s.eventually(&path, |b| b["status"] == "PUBLISHED").await;
    assert_eq!(seen["event_name"], "Kept", "{l}");
    let r = s.call(Method::GET, &path, None, None).await;
    let etag = r
        .headers
        .get("etag")
        .expect("an ETag")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-cache", "{l}");
    let r = s
        .call_with(Method::GET, &path, None, None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{l}");

    let rename = serde_json::json!({"event_name": "Renamed"});
    let r = s.call(Method::PATCH, &path, Some(&organizer), Some(rename)).await;
    assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body);
    let renamed = s.eventually(&path, |b| b["event_name"] == "Renamed").await;
    assert_eq!(renamed["id"], id, "{l}");
    let r = s
        .call_with(Method::GET, &path, None, None, &[("if-none-match", &etag)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{l}: the old ETag no longer matches");
    assert_ne!(r.headers.get("etag").unwrap().to_str().unwrap(), etag, "{l}");
}

const KEPT: &[(&str, &str)] = &[("GATEWAY_CACHE_TTL_MS", "500")];

both_backends!(public_reads_are_kept_briefly, KEPT);

/// A lone gateway whose events service is `events_url`, with a 1 s upstream
/// timeout; its base URL.
async fn gateway_in_front_of(events_url: &str, shutdown: &CancellationToken) -> String {
    let env: std::collections::HashMap<String, String> = [
        ("GATEWAY_RATE_LIMIT_PER_MINUTE", "0"),
        ("GATEWAY_CACHE_TTL_MS", "0"),
        ("GATEWAY_UPSTREAM_TIMEOUT_SECONDS", "1"),
        ("GATEWAY_EVENTS_URL", events_url),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = ticketer_gateway::GatewayConfig::from_env(&Env::from_map(Service::Gateway, env)).unwrap();
    let listener = ticketer_http::bind("127.0.0.1", 0).await.unwrap();
    let verifier = ticketer_http::TokenVerifier::with_keys("ticketer-auth", vec![]);
    let app = ticketer_gateway::build(config, Cache::memory(), verifier, listener, shutdown.clone()).unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    base
}

/// A service that is down answers 503 with Retry-After (nothing was sent,
/// the client may retry); one that hangs is given up on after the upstream
/// timeout a few times, and then not asked at all for a moment: callers
/// get 503 with Retry-After at once instead of piling up on it.
#[tokio::test]
async fn a_dead_or_hung_service_is_failed_fast_with_retry_after() {
    let shutdown = CancellationToken::new();
    let http = reqwest::Client::new();

    // Down: nothing listens on the port.
    let gone = ticketer_http::bind("127.0.0.1", 0).await.unwrap();
    let gone_url = format!("http://127.0.0.1:{}", gone.local_addr().unwrap().port());
    drop(gone);
    let base = gateway_in_front_of(&gone_url, &shutdown).await;
    let r = http.get(format!("{base}/api/v1/events")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // Hung: accepts connections, never answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    let base = gateway_in_front_of(&hung_url, &shutdown).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = http.get(format!("{base}/api/v1/events")).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
        }
    }
    assert_eq!(statuses, [504, 504, 504, 504, 504, 503, 503, 503]);
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "the open breaker kept the last three requests from the hung service"
    );
    shutdown.cancel();
}
