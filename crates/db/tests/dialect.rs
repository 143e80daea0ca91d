//! Each connection knows its dialect, and the locking clause store
//! functions append follows it.

use ticketer_db::{for_update, Db, Dialect};
use ticketer_testkit::{postgres_url, skip_test, TestDatabase};

/// What a store function writes after a locking SELECT, from the
/// connection alone.
async fn a_connection_knows_its_dialect(url: &str, want: Dialect, lock: &str) {
    let db = Db::connect(url, 1).await.unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    assert_eq!((Dialect::of(&conn), db.dialect()), (want, want));
    assert_eq!(for_update(&conn), lock);
    let sql = format!("SELECT 1 AS one{}", for_update(&conn));
    sqlx::query(&sql).execute(&mut *conn).await.unwrap();
    drop(conn);
    db.close().await;
}

#[tokio::test]
async fn sqlite_a_connection_knows_its_dialect() {
    let tdb = TestDatabase::sqlite();
    a_connection_knows_its_dialect(&tdb.url, Dialect::Sqlite, "").await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_a_connection_knows_its_dialect() {
    let Some(url) = postgres_url() else {
        skip_test("PostgreSQL dialect test", "TICKETER_TEST_POSTGRES_URL");
        return;
    };
    let tdb = TestDatabase::postgres(&url, "dialect").await.unwrap();
    a_connection_knows_its_dialect(&tdb.url, Dialect::Postgres, " FOR UPDATE").await;
}
