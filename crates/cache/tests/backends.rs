//! The same behaviour from both backends: process memory always, Redis
//! (ignored unless run with `--run-ignored`, as ./scripts/test does when
//! `TICKETER_TEST_REDIS_URL` is set; each test under its own key prefix).

use std::time::Duration;

use ticketer_cache::{Bucket, Cache, Place, RoomRule};

/// Redis under a fresh prefix, or None (and the reason said) without a URL.
async fn redis() -> Option<Cache> {
    let Some(url) = ticketer_testkit::redis_url() else {
        ticketer_testkit::skip_test("Redis cache test", "TICKETER_TEST_REDIS_URL");
        return None;
    };
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    Some(Cache::connect(Some(&url), &prefix).await.expect("redis"))
}

async fn values_expire(cache: Cache) {
    {
        cache
            .set("k", "v", Some(Duration::from_millis(150)))
            .await
            .unwrap();
        assert_eq!(
            cache.get("k").await.unwrap().as_deref(),
            Some("v"),
            "{}",
            cache.kind()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cache.get("k").await.unwrap(), None, "{}", cache.kind());
        cache.clear().await.unwrap();
    }
}

async fn a_lock_has_one_holder_until_released_or_expired(cache: Cache) {
    {
        let kind = cache.kind();
        let held = cache
            .try_lock("event:1", Duration::from_millis(200))
            .await
            .unwrap()
            .expect(kind);
        assert!(
            cache
                .try_lock("event:1", Duration::from_secs(1))
                .await
                .unwrap()
                .is_none(),
            "{kind}"
        );
        assert!(cache.unlock(&held).await.unwrap(), "{kind}");
        let second = cache
            .try_lock("event:1", Duration::from_millis(100))
            .await
            .unwrap()
            .expect(kind);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Expired: someone else may take it, and the old holder cannot release theirs.
        let third = cache
            .try_lock("event:1", Duration::from_secs(1))
            .await
            .unwrap()
            .expect(kind);
        assert!(!cache.unlock(&second).await.unwrap(), "{kind}");
        assert!(cache.unlock(&third).await.unwrap(), "{kind}");
        cache.clear().await.unwrap();
    }
}

async fn rate_limit_allows_the_burst_then_refuses_with_retry_after(cache: Cache) {
    {
        let kind = cache.kind();
        let bucket = Bucket {
            per_minute: 60,
            burst: 5,
        };
        for i in 0..5 {
            assert!(
                cache.rate_limit("ip:1", bucket).await.unwrap().allowed,
                "{kind} request {i}"
            );
        }
        let refused = cache.rate_limit("ip:1", bucket).await.unwrap();
        assert!(!refused.allowed, "{kind}");
        assert!((1..=2).contains(&refused.retry_after_secs), "{kind}: {refused:?}");
        // Another client has its own bucket.
        assert!(cache.rate_limit("ip:2", bucket).await.unwrap().allowed, "{kind}");
        cache.clear().await.unwrap();
    }
}

#[tokio::test]
async fn memory_values_expire() {
    values_expire(Cache::memory()).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn redis_values_expire() {
    if let Some(cache) = redis().await {
        values_expire(cache).await;
    }
}

#[tokio::test]
async fn memory_a_lock_has_one_holder_until_released_or_expired() {
    a_lock_has_one_holder_until_released_or_expired(Cache::memory()).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn redis_a_lock_has_one_holder_until_released_or_expired() {
    if let Some(cache) = redis().await {
        a_lock_has_one_holder_until_released_or_expired(cache).await;
    }
}

#[tokio::test]
async fn memory_rate_limit_allows_the_burst_then_refuses_with_retry_after() {
    rate_limit_allows_the_burst_then_refuses_with_retry_after(Cache::memory()).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn redis_rate_limit_allows_the_burst_then_refuses_with_retry_after() {
    if let Some(cache) = redis().await {
        rate_limit_allows_the_burst_then_refuses_with_retry_after(cache).await;
    }
}

/// A waiting room admits in order, as many at once as its rule says, and
/// each buyer who leaves or whose claim runs out admits the next; many
/// joining at once each get a number of their own.
async fn a_waiting_room_admits_in_order(cache: Cache) {
    let kind = cache.kind();
    let rule = RoomRule {
        admitted_at_once: 3,
        claim: Duration::from_secs(3),
    };
    let joins = (0..20).map(|n| {
        let cache = cache.clone();
        async move { cache.room_join(7, &format!("buyer-{n}"), rule).await.unwrap() }
    });
    let places = futures::future::join_all(joins).await;
    let mut numbers: Vec<u64> = places.iter().map(Place::number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>(), "{kind}");
    let admitted = places
        .iter()
        .filter(|p| matches!(p, Place::Admitted { .. }))
        .count();
    assert_eq!(admitted, 3, "{kind}: {places:?}");
    // Another event's room is its own.
    let other = cache.room_join(8, "buyer-0", rule).await.unwrap();
    assert!(
        matches!(other, Place::Admitted { number: 1, .. }),
        "{kind}: {other:?}"
    );

    let who = |number: u64| {
        let i = places.iter().position(|p| p.number() == number).unwrap();
        format!("buyer-{i}")
    };
    assert_eq!(
        cache.room_place(7, &who(5), rule).await.unwrap(),
        Some(Place::Waiting { number: 5, ahead: 1 }),
        "{kind}"
    );
    // Joining again keeps the place.
    assert_eq!(
        cache.room_join(7, &who(5), rule).await.unwrap().number(),
        5,
        "{kind}"
    );
    assert_eq!(cache.room_leave(7, &who(1), rule).await.unwrap(), 4, "{kind}");
    assert_eq!(cache.room_admit(7, rule).await.unwrap(), 4, "{kind}");
    assert!(
        matches!(
            cache.room_place(7, &who(4), rule).await.unwrap(),
            Some(Place::Admitted { number: 4, .. })
        ),
        "{kind}"
    );
    assert_eq!(cache.room_place(7, &who(1), rule).await.unwrap(), None, "{kind}");
    // Claims run out: those admitted lapse and the next three are admitted.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(cache.room_admit(7, rule).await.unwrap(), 7, "{kind}");
    assert_eq!(
        cache.room_place(7, &who(2), rule).await.unwrap(),
        Some(Place::Lapsed { number: 2 }),
        "{kind}"
    );
    // A lapsed buyer who joins again goes to the back.
    assert_eq!(
        cache.room_join(7, &who(2), rule).await.unwrap().number(),
        21,
        "{kind}"
    );
    cache.clear().await.unwrap();
}

/// A buyer who leaves while still waiting gives up their number: when
/// their turn comes it is skipped, rather than holding a claim nobody
/// uses until it runs out.
async fn a_buyer_gone_before_their_turn_is_skipped(cache: Cache) {
    let kind = cache.kind();
    let rule = RoomRule {
        admitted_at_once: 2,
        claim: Duration::from_secs(60),
    };
    for n in 1..=5 {
        cache.room_join(9, &format!("b{n}"), rule).await.unwrap();
    }
    // b3 and b4 are refused (sold out, say) while waiting.
    assert_eq!(cache.room_leave(9, "b3", rule).await.unwrap(), 2, "{kind}");
    assert_eq!(cache.room_leave(9, "b4", rule).await.unwrap(), 2, "{kind}");
    // b1's leaving admits b5 at once.
    assert_eq!(cache.room_leave(9, "b1", rule).await.unwrap(), 5, "{kind}");
    assert!(
        matches!(
            cache.room_place(9, "b5", rule).await.unwrap(),
            Some(Place::Admitted { number: 5, .. })
        ),
        "{kind}"
    );
    // Two claims are held (b2, b5): a newcomer waits.
    assert_eq!(
        cache.room_join(9, "b6", rule).await.unwrap(),
        Place::Waiting { number: 6, ahead: 0 },
        "{kind}"
    );
    assert_eq!(cache.room_leave(9, "b2", rule).await.unwrap(), 6, "{kind}");
}

#[tokio::test]
async fn memory_a_buyer_gone_before_their_turn_is_skipped() {
    a_buyer_gone_before_their_turn_is_skipped(Cache::memory()).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn redis_a_buyer_gone_before_their_turn_is_skipped() {
    if let Some(cache) = redis().await {
        a_buyer_gone_before_their_turn_is_skipped(cache).await;
    }
}

#[tokio::test]
async fn memory_a_waiting_room_admits_in_order() {
    a_waiting_room_admits_in_order(Cache::memory()).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn redis_a_waiting_room_admits_in_order() {
    if let Some(cache) = redis().await {
        a_waiting_room_admits_in_order(cache).await;
    }
}
