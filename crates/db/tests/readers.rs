//! On SQLite, reads do not queue behind the single writer.

use std::time::Duration;

use ticketer_db::Migration;
use ticketer_testkit::TestDatabase;

const SCHEMA: &[Migration] = &[Migration::portable(1, "t", "CREATE TABLE t (v BIGINT NOT NULL)")];

#[tokio::test]
async fn reads_run_while_a_write_transaction_is_open() {
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("readers", SCHEMA).await.unwrap();
    sqlx::query("INSERT INTO t (v) VALUES (1)")
        .execute(db.pool())
        .await
        .unwrap();

    let mut tx = db.begin().await.unwrap();
    sqlx::query("INSERT INTO t (v) VALUES (2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    // The writer is busy inside `tx`; a reader still answers, with what is committed.
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM t").fetch_one(db.reader()),
    )
    .await
    .expect("the read waited for the writer")
    .unwrap();
    assert_eq!(read.0, 1);
    tx.commit().await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t")
        .fetch_one(db.reader())
        .await
        .unwrap();
    assert_eq!(n, 2);

    // Readers cannot write.
    assert!(sqlx::query("INSERT INTO t (v) VALUES (3)")
        .execute(db.reader())
        .await
        .is_err());
}

/// A transaction waiting for the writer's one connection is counted as
/// waiting (the pool's `waiting` figure on /metrics) until it gets it.
#[tokio::test]
async fn a_transaction_waiting_for_a_connection_is_counted() {
    use std::sync::atomic::Ordering::Relaxed;
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    assert_eq!(db.max_connections(), 1);
    let first = db.begin().await.unwrap();
    let second = tokio::spawn({
        let db = db.clone();
        async move { db.begin().await.unwrap().commit().await.unwrap() }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while db.tally().waiting.load(Relaxed) != 1 {
        assert!(std::time::Instant::now() < deadline, "never counted as waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.commit().await.unwrap();
    second.await.unwrap();
    assert_eq!(db.tally().waiting.load(Relaxed), 0);
}

/// A caller that gives up waiting for a connection (its request timed
/// out) is no longer counted as waiting.
#[tokio::test]
async fn a_transaction_that_stops_waiting_is_uncounted() {
    use std::sync::atomic::Ordering::Relaxed;
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    let first = db.begin().await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(200), db.begin()).await;
    assert!(gave_up.is_err(), "the one connection was free");
    assert_eq!(db.tally().waiting.load(Relaxed), 0);
    first.commit().await.unwrap();
}
