//! Redis going away and coming back: a call made while Redis hangs fails
//! within a bound instead of waiting forever, and the cache works again
//! once Redis answers, without a restart of the process. Ignored unless run
//! with `--run-ignored` and `TICKETER_TEST_REDIS_URL`, as ./scripts/test does.

use std::time::{Duration, Instant};

use ticketer_cache::Cache;
use ticketer_testkit::{address_of, TcpProxy};

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn the_cache_fails_fast_while_redis_hangs_and_recovers_after() {
    let Some(url) = ticketer_testkit::redis_url() else {
        ticketer_testkit::skip_test("Redis reconnection test", "TICKETER_TEST_REDIS_URL");
        return;
    };
    let proxy = TcpProxy::start(&address_of(&url)).await.unwrap();
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let cache = Cache::connect(Some(&proxy.url_through(&url)), &prefix)
        .await
        .unwrap();
    cache.set("k", "v", None).await.unwrap();

    // Every connection cut, and new ones accepted but never answered: the
    // reconnection hangs unless it is bounded.
    proxy.stall();
    for _ in 0..2 {
        let answer = tokio::time::timeout(Duration::from_secs(15), cache.ping()).await;
        assert!(
            matches!(answer, Ok(Err(_))),
            "a call while Redis hangs must fail, not wait: {answer:?}"
        );
    }

    proxy.unblock();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Ok(Some(v))) = tokio::time::timeout(Duration::from_secs(5), cache.get("k")).await {
            assert_eq!(v, "v");
            break;
        }
        assert!(Instant::now() < deadline, "the cache never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cache.clear().await.unwrap();
}
