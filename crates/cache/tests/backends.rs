//! The same behaviour from both backends: process memory always, Redis
//! (ignored unless run with `--run-ignored`, as ./scripts/test does when
//! `TICKETER_TEST_REDIS_URL` is set; each test under its own key prefix).

use std::time::Duration;

use ticketer_cache::{Bucket, Cache};

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
