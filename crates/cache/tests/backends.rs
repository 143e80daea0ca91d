//! The same behaviour from both backends: process memory always, Redis when
//! `TICKETER_TEST_REDIS_URL` is set (each test under its own key prefix).

use std::time::Duration;

use ticketer_cache::{Bucket, Cache};

async fn backends() -> Vec<Cache> {
    let mut caches = vec![Cache::memory()];
    match std::env::var("TICKETER_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(url) => {
            let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
            caches.push(Cache::connect(Some(&url), &prefix).await.expect("redis"));
        }
        None => ticketer_config::skip_test("Redis cache test", "TICKETER_TEST_REDIS_URL"),
    }
    caches
}

#[tokio::test]
async fn values_expire() {
    for cache in backends().await {
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

#[tokio::test]
async fn a_lock_has_one_holder_until_released_or_expired() {
    for cache in backends().await {
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

#[tokio::test]
async fn rate_limit_allows_the_burst_then_refuses_with_retry_after() {
    for cache in backends().await {
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
