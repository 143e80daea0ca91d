//! The pool hands out connections that work: one the server closed while it
//! sat idle is found out and replaced before anyone uses it.

use std::time::Duration;

use ticketer_db::Db;
use ticketer_testkit::{postgres_url, skip_test, TestDatabase};

async fn backend_pid(db: &Db) -> i32 {
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(db.pool())
        .await
        .unwrap();
    pid
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_a_connection_closed_while_idle_is_replaced_not_handed_out() {
    let Some(url) = postgres_url() else {
        skip_test("PostgreSQL pool test", "TICKETER_TEST_POSTGRES_URL");
        return;
    };
    let tdb = TestDatabase::postgres(&url, "pool").await.unwrap();
    // One connection, so the one ended below is the one asked for next.
    let db = Db::connect(&tdb.url, 1).await.unwrap();
    let admin = tdb.connect().await.unwrap();
    let first = backend_pid(&db).await;
    // The server (a restart, an idle timeout, an operator) ends the pool's
    // only connection while nobody uses it.
    let (ended,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(admin.pool())
        .await
        .unwrap();
    assert!(ended);
    // Idle for longer than the pool takes a connection on trust (a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The next query gets a live connection, not an error.
    let second = backend_pid(&db).await;
    assert_ne!(first, second, "the closed connection was replaced");
    db.close().await;
    admin.close().await;
}
