use super::*;

#[test]
fn only_public_reads_are_kept() {
    for p in [
        "/api/v1/events",
        "/api/v1/events/12",
        "/api/v1/tickets/availability/7",
    ] {
        assert!(public_read(p), "{p}");
    }
    for p in [
        "/api/v1/events/mine",
        "/api/v1/events/12/publish",
        "/api/v1/bookings/mine",
        "/api/v1/tickets/mine",
        "/api/v1/events/",
        "/api/v1/tickets/availability/x",
    ] {
        assert!(!public_read(p), "{p}");
    }
}

fn get(path: &str, auth: bool) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    if auth {
        b = b.header(header::AUTHORIZATION, "Bearer x");
    }
    b.body(Body::empty()).unwrap()
}

fn upstream(body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

#[tokio::test]
async fn keeps_an_answer_for_its_ttl_and_answers_its_etag_with_304() {
    let cache = ReadCache::new(Duration::from_secs(60), 10);
    let Lookup::Fill(fill) = cache
        .lookup(&get("/api/v1/events/1", false), Duration::from_secs(1))
        .await
    else {
        panic!("a first read asks the service");
    };
    let first = fill.store(upstream("{\"id\":1}")).await;
    let etag = first.headers()[header::ETAG].clone();
    let Lookup::Hit(again) = cache
        .lookup(&get("/api/v1/events/1", false), Duration::from_secs(1))
        .await
    else {
        panic!("a second read is kept");
    };
    assert_eq!(again.headers()[header::ETAG], etag);
    let body = axum::body::to_bytes(again.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"{\"id\":1}");
    let mut conditional = get("/api/v1/events/1", false);
    conditional.headers_mut().insert(header::IF_NONE_MATCH, etag);
    let Lookup::Hit(resp) = cache.lookup(&conditional, Duration::from_secs(1)).await else {
        panic!("kept");
    };
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert!(matches!(
        cache
            .lookup(&get("/api/v1/events/1", true), Duration::from_secs(1))
            .await,
        Lookup::Pass
    ));
}

#[tokio::test]
async fn an_expired_answer_is_asked_for_again() {
    let cache = ReadCache::new(Duration::from_millis(1), 10);
    let Lookup::Fill(fill) = cache
        .lookup(&get("/api/v1/events", false), Duration::from_secs(1))
        .await
    else {
        panic!("first read");
    };
    fill.store(upstream("[]")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(
        cache
            .lookup(&get("/api/v1/events", false), Duration::from_secs(1))
            .await,
        Lookup::Fill(_)
    ));
}

#[tokio::test]
async fn concurrent_misses_wait_for_one_upstream_answer() {
    let cache = ReadCache::new(Duration::from_secs(60), 10);
    let Lookup::Fill(fill) = cache
        .lookup(&get("/api/v1/events/2", false), Duration::from_secs(5))
        .await
    else {
        panic!("first read");
    };
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            matches!(
                cache
                    .lookup(&get("/api/v1/events/2", false), Duration::from_secs(5))
                    .await,
                Lookup::Hit(_)
            )
        })
    };
    tokio::task::yield_now().await;
    fill.store(upstream("{\"id\":2}")).await;
    assert!(
        waiter.await.unwrap(),
        "the second read got the first one's answer"
    );
}

#[tokio::test]
async fn never_more_entries_than_allowed() {
    let cache = ReadCache::new(Duration::from_secs(60), 2);
    for id in 1..=2 {
        let Lookup::Fill(fill) = cache
            .lookup(
                &get(&format!("/api/v1/events/{id}"), false),
                Duration::from_secs(1),
            )
            .await
        else {
            panic!("fills");
        };
        fill.store(upstream("{}")).await;
    }
    assert!(matches!(
        cache
            .lookup(&get("/api/v1/events/3", false), Duration::from_secs(1))
            .await,
        Lookup::Pass
    ));
}
