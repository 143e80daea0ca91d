//! `rediss://`: the cache speaks TLS to Redis and checks the server's
//! certificate against the trusted roots (the OS's, or the file named by
//! `SSL_CERT_FILE`, which is how this test trusts its throwaway CA; nextest
//! runs each test in its own process, so the variable is this test's). No
//! Redis here serves TLS, so a TLS proxy stands in front of the plain one.
//! Ignored unless run with `--run-ignored`, as ./scripts/test does when
//! `TICKETER_TEST_REDIS_URL` is set.

use ticketer_cache::Cache;
use ticketer_testkit::{tls_proxy, TestCertificates};

#[tokio::test]
#[ignore = "needs TICKETER_TEST_REDIS_URL"]
async fn rediss_is_spoken_and_the_server_certificate_checked() {
    let Some(url) = ticketer_testkit::redis_url() else {
        ticketer_testkit::skip_test("rediss test", "TICKETER_TEST_REDIS_URL");
        return;
    };
    let certs = TestCertificates::for_localhost();
    let port = tls_proxy(&certs, &ticketer_testkit::address_of(&url)).await;
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let over_tls = format!("rediss://localhost:{port}");

    std::env::set_var("SSL_CERT_FILE", &certs.ca);
    let cache = Cache::connect(Some(&over_tls), &prefix).await.expect("rediss");
    cache.set("k", "v", None).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"));
    cache.clear().await.unwrap();

    // A certificate no trusted authority signed is refused.
    let stranger = TestCertificates::for_localhost();
    std::env::set_var("SSL_CERT_FILE", &stranger.ca);
    let refused = match Cache::connect(Some(&over_tls), &prefix).await {
        Err(_) => true,
        Ok(cache) => cache.get("k").await.is_err(),
    };
    assert!(
        refused,
        "a server certificate from an unknown authority was accepted"
    );
}
