//! What a careless or hostile client tries, through the gateway, on both
//! backends.

use reqwest::{Method, StatusCode};
use serde_json::json;

use ticketer_http::Role;

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

/// Every answer is something a client can act on: the right status as
/// problem+json for a wrong method, a body that is not JSON and a body too
/// large; and every answer carries the headers that keep a browser safe.
async fn careless_requests_get_problems(s: &TestStack) {
    let l = s.label;
    for path in ["/api/v1/events", "/api/v1/no-such-thing"] {
        let r = s.call(Method::GET, path, None, None).await;
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(
                r.headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{l}: {name} on {path}"
            );
        }
    }

    let (_, token, _) = s.user("CUSTOMER").await;
    let r = s
        .call(Method::DELETE, "/api/v1/bookings", Some(&token), None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{l}: {}", r.body);
    assert_eq!(r.content_type(), "application/problem+json", "{l}: 405");

    let body = json!({"event_id": 1, "number_of_tickets": 1, "payment_token": "tok_visa"});
    for content_type in ["application/jsonfoo", "text/plain"] {
        let r = s
            .call_with(
                Method::POST,
                "/api/v1/bookings",
                Some(&token),
                Some(body.clone()),
                &[("content-type", content_type)],
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{l}: {content_type}: {}",
            r.body
        );
        assert_eq!(r.content_type(), "application/problem+json", "{l}: 415");
    }
    let r = s
        .call_with(
            Method::POST,
            "/api/v1/bookings",
            Some(&token),
            Some(body.clone()),
            &[("content-type", "application/json; charset=utf-8")],
        )
        .await;
    assert_ne!(
        r.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{l}: JSON with a charset is JSON"
    );

    // A 3 MB body, announced and begun: refused from its announced length.
    // Sent by hand, since a server that answers 413 before reading it all
    // may close the connection while a client library is still writing
    // (it then reports the broken pipe, not the answer).
    let (status, head) = oversized_post(s, &token, 3 * 1024 * 1024).await;
    assert_eq!(status, 413, "{l}: {head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{l}: 413: {head}"
    );
}

/// Posts a booking whose body says it is `length` bytes long, sends its
/// first 64 KiB, and returns the answer's status and head.
async fn oversized_post(s: &TestStack, token: &str, length: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/bookings HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The server may stop reading at any point: a failed write is expected.
    let _ = conn.write_all(&vec![b' '; 64 * 1024]).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A refused token is refused in words a client can act on, never the
/// token library's: expired, not valid yet (`nbf` is honoured), or invalid.
async fn refused_tokens_say_why(s: &TestStack) {
    let l = s.label;
    let (id, token, _) = s.user("CUSTOMER").await;
    let roles = vec![Role::Customer];
    let now = chrono::Utc::now().timestamp();
    let tampered = crate::harness::broken_signature(&token);
    for (token, detail) in [
        (token.clone(), None),
        (s.forge(&id, roles.clone(), -1), Some("the token has expired")),
        (
            s.forge_with(&id, roles.clone(), |c| c.nbf = Some(now + 600)),
            Some("the token is not valid yet"),
        ),
        (tampered, Some("the token is invalid")),
        ("not.a.token".to_string(), Some("the token is invalid")),
    ] {
        let r = s
            .call(Method::GET, "/api/v1/bookings/mine", Some(&token), None)
            .await;
        match detail {
            None => assert_eq!(r.status, StatusCode::OK, "{l}: {}", r.body),
            Some(detail) => {
                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: {}", r.body);
                assert_eq!(r.text("detail"), detail, "{l}");
            }
        }
    }
}

/// Names and emails that would display as something else (a text-direction
/// override) or carry control characters are refused, naming the field;
/// so are passwords that are guessed first.
async fn deceptive_text_is_refused(s: &TestStack) {
    let l = s.label;
    let email = format!("who-{}@example.com", uuid::Uuid::new_v4().simple());
    for (first, last, field) in [
        ("Eve\u{202E}nimda", "Smith", "first_name"),
        ("Eve", "Sm\u{0}ith", "last_name"),
        ("Eve", "Smith\u{1b}[2J", "last_name"),
    ] {
        let body = json!({"email": email, "password": "a-careless-client-9", "first_name": first, "last_name": last});
        let r = s
            .call(Method::POST, "/api/v1/auth/register", None, Some(body))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{l}: {}", r.body);
        assert_eq!(r.error_fields(), [field], "{l}");
    }
    let body = json!({"email": format!("e\u{7}{email}"), "password": "a-careless-client-9", "first_name": "Eve", "last_name": "Smith"});
    let r = s
        .call(Method::POST, "/api/v1/auth/register", None, Some(body))
        .await;
    assert_eq!(r.error_fields(), ["email"], "{l}: {}", r.body);
}

/// Guessing a password is throttled: after five wrong passwords for one
/// account from one address, the next attempt is refused with 429
/// problem+json and Retry-After, even with the right password and whatever
/// address the client claims in X-Forwarded-For; the email's case does not
/// help. Another account signs in from the same address as before.
async fn password_guessing_is_throttled(s: &TestStack) {
    let l = s.label;
    let email = format!("guessed-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "the-owners-own-9";
    let body = json!({"email": email, "password": password, "first_name": "Ow", "last_name": "Ner"});
    let r = s.call_patiently("/api/v1/auth/register", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{l}: {}", r.body);
    for n in 0..5 {
        // A different address claimed each time: the gateway does not
        // believe it.
        let claimed = format!("198.51.100.{n}");
        let r = s
            .call_with(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": format!("guess-number-{n}")})),
                &[("x-forwarded-for", claimed.as_str())],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{l}: guess {n}: {}", r.body);
    }
    for who in [email.clone(), email.to_uppercase()] {
        let r = s
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": who, "password": password})),
            )
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{l}: {}", r.body);
        assert_eq!(r.content_type(), "application/problem+json", "{l}");
        let wait = r.retry_after().expect("Retry-After in seconds");
        assert!((1..=60).contains(&wait), "{l}: Retry-After {wait}");
        assert_eq!(
            r.text("detail"),
            "too many failed sign-ins; try again later",
            "{l}"
        );
    }
    // Someone else on the same network is not locked out.
    s.user("CUSTOMER").await;
}

/// A client that opens connections and sends nothing, or half a request,
/// holds none of them: the gateway and every service behind it close them
/// after the header-read timeout (one second here).
async fn silent_connections_are_closed(s: &TestStack) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = s.label;
    let mut targets = s.services.clone();
    targets.push(("gateway (public port)".into(), s.base.clone()));
    let mut tries = Vec::new();
    for (name, url) in targets {
        for opening in [&b""[..], b"GET /health/live HTTP/1.1\r\nHost: x\r\n"] {
            let addr = url.trim_start_matches("http://").to_string();
            let name = name.clone();
            // All at once: each waits out the same second.
            tries.push(tokio::spawn(async move {
                let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
                conn.write_all(opening).await.unwrap();
                let mut got = Vec::new();
                let closed =
                    tokio::time::timeout(std::time::Duration::from_secs(15), conn.read_to_end(&mut got))
                        .await;
                (name, closed.is_ok(), String::from_utf8_lossy(&got).into_owned())
            }));
        }
    }
    for t in tries {
        let (name, closed, got) = t.await.unwrap();
        assert!(closed, "{l}: {name} kept a silent connection open");
        assert!(!got.contains("200 OK"), "{l}: {name} answered half a request");
    }
    // Clients that finish their requests are served as ever.
    let r = s.call(Method::GET, "/api/v1/events", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{l}");
}

/// Operations stay with the operators: the gateway's `/metrics` only with
/// its scrape token (the services' own, private ports serve theirs), and
/// `/health`, which asks every service, costs them one readiness check a
/// second however often anonymous callers ask.
async fn operations_stay_private(s: &TestStack) {
    let l = s.label;
    let metrics = format!("{}/metrics", s.base);
    for token in [None, Some("guess")] {
        let mut req = s.http.get(&metrics);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{l}: token {token:?}");
    }
    let r = s
        .http
        .get(&metrics)
        .bearer_auth(SCRAPE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{l}");
    assert!(
        r.text().await.unwrap().contains("process_resident_memory_bytes"),
        "{l}"
    );
    let ready_checks = || {
        s.metric_sum(
            "events",
            "ticketer_http_requests_total",
            "route=\"/health/ready\"",
        )
    };
    // Past the last answer's second (the harness asked while starting).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = ready_checks().await;
    let asks: Vec<_> = (0..40)
        .map(|_| {
            let (http, url) = (s.http.clone(), format!("{}/health", s.base));
            tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    for a in asks {
        assert_eq!(a.await.unwrap().unwrap(), StatusCode::OK, "{l}");
    }
    let asked = ready_checks().await - before;
    assert!(
        (1.0..=3.0).contains(&asked),
        "{l}: 40 calls of /health asked events {asked} times"
    );
}

/// Without a scrape token, the gateway does not serve its metrics at all.
async fn metrics_are_not_public(s: &TestStack) {
    let r = s.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", s.label);
    assert_eq!(r.content_type(), "application/problem+json", "{}", s.label);
}

/// A request target too long to be a real one gets 414 problem+json, from
/// the gateway and from a service's own port alike.
async fn overlong_targets_get_414(s: &TestStack) {
    let l = s.label;
    let long = format!("/api/v1/events?q={}", "a".repeat(ticketer_http::MAX_URI_LENGTH));
    let events = s.services.iter().find(|(n, _)| n == "events").unwrap().1.clone();
    for base in [s.base.clone(), events] {
        let r = s.http.get(format!("{base}{long}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::URI_TOO_LONG, "{l}: {base}");
        let kind = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(kind, "application/problem+json", "{l}: {base}");
    }
}

/// Anonymous search takes bounded input (400 naming the parameter past the
/// bounds), reads nothing a client types as search syntax, never answers
/// 5xx, and still finds events by the words of their description (stems
/// included: "quartets" finds "quartet").
async fn search_is_bounded(s: &TestStack) {
    let l = s.label;
    let word = format!("zq{}", uuid::Uuid::new_v4().simple());
    let (_, organizer, _) = s.user("ORGANIZER").await;
    let body = json!({
        "event_name": format!("Evening {word}"), "description": "A string quartet plays Haydn",
        "category": "Music", "location": "Graz", "event_date": "2031-03-03",
        "start_time": "20:00", "end_time": "23:00", "ticket_capacity": 10, "ticket_price": "20.00"
    });
    s.published_event(&organizer, body).await;
    let search = |query: String| async move {
        let url =
            reqwest::Url::parse_with_params(&format!("{}/api/v1/events", s.base), [("q", query)]).unwrap();
        let r = s.http.get(url).send().await.unwrap();
        let status = r.status();
        (status, r.json::<serde_json::Value>().await.unwrap_or_default())
    };
    let (status, found) = search(format!("{word} quartets")).await;
    assert_eq!(status, StatusCode::OK, "{l}");
    assert_eq!(found["total"], 1, "{l}: {found}");
    // Past the last page: no items, and still the true total.
    let r = s
        .call(
            Method::GET,
            &format!("/api/v1/events?q={word}&page=9"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (r.body["items"].as_array().map(Vec::len), &r.body["total"]),
        (Some(0), &json!(1)),
        "{l}"
    );
    for (query, field) in [
        (vec!["word"; 1_000].join(" "), "q"),
        ("x".repeat(5_000), "q"),
        ("a b c d e f g h i j k".to_string(), "q"),
        ("bell\u{0}".to_string(), "q"),
    ] {
        let (status, problem) = search(query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{l}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{l}: {problem}");
    }
    let r = s
        .call(
            Method::GET,
            &format!("/api/v1/events?location={}", "y".repeat(500)),
            None,
            None,
        )
        .await;
    assert_eq!(r.error_fields(), ["location"], "{l}");
    for query in [
        "\"",
        "\"\"",
        "*",
        "a*",
        "OR",
        "NOT x",
        "x AND",
        "NEAR(a b)",
        "event_name:x",
        "-x",
        "(x",
        "^x",
        "x:y:z",
        "' OR 1=1 --",
        "%_\\",
        "{}",
        "é ü",
    ] {
        let (status, page) = search(query.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{l}: q={query:?}: {page}");
        assert!(page["items"].is_array(), "{l}: q={query:?}");
    }
}

both_backends!(search_is_bounded);

const SCRAPE_TOKEN: &str = "scrape-secret-for-tests";
const WITH_SCRAPE_TOKEN: &[(&str, &str)] = &[("GATEWAY_METRICS_TOKEN", SCRAPE_TOKEN)];

both_backends!(operations_stay_private, WITH_SCRAPE_TOKEN);
both_backends!(metrics_are_not_public);
both_backends!(overlong_targets_get_414);

const SHORT_HEADER_READ: &[(&str, &str)] = &[("HTTP_HEADER_READ_TIMEOUT_SECONDS", "1")];

both_backends!(silent_connections_are_closed, SHORT_HEADER_READ);
both_backends!(careless_requests_get_problems);
both_backends!(password_guessing_is_throttled);
both_backends!(deceptive_text_is_refused);
both_backends!(refused_tokens_say_why);

both_backends!(auth_never_replays);
