//! TLS to PostgreSQL (rustls, the operating system's trusted roots):
//! `sslmode=require` encrypts, `sslmode=verify-full` also checks the
//! server's certificate, so a server whose certificate nobody vouches for
//! (the local one: Debian's self-signed "snakeoil") is refused.

use ticketer_db::Db;
use ticketer_testkit::postgres_url;

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_connections_are_encrypted_and_verified_when_asked() {
    let Some(url) = postgres_url() else {
        ticketer_testkit::skip_test("PostgreSQL TLS test", "TICKETER_TEST_POSTGRES_URL");
        return;
    };
    let plain = Db::connect(&with_param(&url, "sslmode=disable"), 1)
        .await
        .unwrap();
    let (ssl_on,): (String,) = sqlx::query_as("SHOW ssl").fetch_one(plain.pool()).await.unwrap();
    plain.close().await;
    if ssl_on != "on" {
        ticketer_testkit::skip_test("PostgreSQL TLS test", "a PostgreSQL server with ssl = on");
        return;
    }

    let db = Db::connect(&with_param(&url, "sslmode=require"), 1)
        .await
        .unwrap();
    let (ssl, version): (bool, String) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(ssl, "sslmode=require gave a plain connection");
    assert!(version.starts_with("TLSv1."), "{version}");
    db.close().await;

    let refused = Db::connect(&with_param(&url, "sslmode=verify-full"), 1).await;
    let err = refused
        .err()
        .expect("a certificate nobody vouches for was accepted");
    let text = err.to_string().to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls"),
        "refused for another reason: {err}"
    );
}
