//! Lists bound as one parameter on PostgreSQL (array literals) reach the
//! database exactly as written, whatever their text, and the outbox keeps
//! the messages' order; on SQLite the same calls bind one value per item.
//! Rows looked up or updated by a list are found one index probe per item
//! on PostgreSQL, even by a statement planned while its table was empty.

use ticketer_bus::Envelope;
use ticketer_db::{
    enqueue,
    lists::{any_of, nullable_array_literal, probed, rows_with, Binds, Lock},
    Db, Dialect, Migration, Outbound,
};
use ticketer_testkit::{postgres_url, skip_test, TestDatabase};

/// Text that an array literal must escape, or that looks like its syntax.
const AWKWARD: [&str; 8] = [
    "plain",
    "with \"quotes\"",
    r"back\slash\\",
    "{braces},commas",
    "NULL",
    "",
    "  spaced  ",
    "ünïcödé ✓ 票",
];

const SCHEMA: &[Migration] = &[Migration {
    version: 1,
    name: "items",
    postgres: "CREATE TABLE items (name TEXT PRIMARY KEY, note TEXT)",
    sqlite: "CREATE TABLE items (name TEXT PRIMARY KEY, note TEXT)",
}];

async fn lists_arrive_as_written(db: &Db) {
    // With the messaging tables.
    db.migrate("lists", SCHEMA).await.unwrap();
    let dialect = db.dialect();
    let mut conn = db.pool().acquire().await.unwrap();

    // Rows written from arrays, NULLs among them, read back by a list.
    let notes: Vec<Option<&str>> = AWKWARD
        .iter()
        .enumerate()
        .map(|(i, s)| (i % 3 != 1).then_some(*s))
        .collect();
    match dialect {
        Dialect::Postgres => {
            sqlx::query("INSERT INTO items (name, note) SELECT * FROM unnest($1::text[], $2::text[])")
                .bind(nullable_array_literal(AWKWARD.iter().map(Some)))
                .bind(nullable_array_literal(notes.iter().copied()))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        Dialect::Sqlite => {
            for (name, note) in AWKWARD.iter().zip(&notes) {
                sqlx::query("INSERT INTO items (name, note) VALUES ($1, $2)")
                    .bind(*name)
                    .bind(*note)
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            }
        }
    }
    let sql = format!(
        "SELECT name, note FROM items WHERE name {} ORDER BY name",
        any_of(dialect, 1, AWKWARD.len(), "text")
    );
    let mut found: Vec<(String, Option<String>)> = sqlx::query_as(&sql)
        .bind_list(dialect, AWKWARD)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let mut want: Vec<(String, Option<String>)> = AWKWARD
        .iter()
        .zip(&notes)
        .map(|(n, note)| (n.to_string(), note.map(str::to_string)))
        .collect();
    found.sort();
    want.sort();
    assert_eq!(found, want);
    // A list of one and an empty list.
    let one: Vec<(String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT name, note FROM items WHERE name {}",
        any_of(dialect, 1, 1, "text")
    ))
    .bind_list(dialect, ["NULL"])
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    // Its note is NULL, not the text "NULL" its name is.
    assert_eq!(one, [("NULL".to_string(), None)]);
    let none: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT name FROM items WHERE name {}",
        any_of(dialect, 1, 0, "text")
    ))
    .bind_list(dialect, Vec::<String>::new())
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(none.is_empty());

    // Messages with awkward text in the outbox, in their order.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Note {
        text: String,
    }
    impl ticketer_contract::Message for Note {
        const KIND: &'static str = "Note";
        const EXCHANGE: &'static str = "ticketer.events";
    }
    let messages: Vec<Outbound> = AWKWARD
        .iter()
        .map(|text| {
            Outbound::new(&Note {
                text: text.to_string(),
            })
        })
        .collect();
    // SQLite's one writing connection is needed for the transaction.
    drop(conn);
    let mut tx = db.begin().await.unwrap();
    enqueue(&mut tx, &messages).await.unwrap();
    tx.commit().await.unwrap();
    let bodies: Vec<(String,)> = sqlx::query_as("SELECT body FROM outbox ORDER BY id")
        .fetch_all(db.reader())
        .await
        .unwrap();
    let texts: Vec<String> = bodies
        .iter()
        .map(|(b,)| {
            Envelope::from_bytes(b.as_bytes()).unwrap().payload["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts, AWKWARD);
}

#[tokio::test]
async fn sqlite_lists_arrive_as_written() {
    let tdb = TestDatabase::sqlite();
    lists_arrive_as_written(&tdb.connect().await.unwrap()).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_lists_arrive_as_written() {
    let Some(url) = postgres_url() else {
        skip_test("PostgreSQL lists test", "TICKETER_TEST_POSTGRES_URL");
        return;
    };
    let tdb = TestDatabase::postgres(&url, "lists").await.unwrap();
    lists_arrive_as_written(&tdb.connect().await.unwrap()).await;
}

const KEYED: &[Migration] = &[Migration {
    version: 1,
    name: "keyed",
    postgres: "CREATE TABLE keyed (k TEXT PRIMARY KEY, n BIGINT NOT NULL)",
    sqlite: "CREATE TABLE keyed (k TEXT PRIMARY KEY, n BIGINT NOT NULL)",
}];

/// `rows_with` finds each listed row once, whatever the list repeats or
/// names that does not exist; locked, in key order.
async fn rows_are_found_by_their_keys(db: &Db) {
    db.migrate("keyed", KEYED).await.unwrap();
    let dialect = db.dialect();
    let mut tx = db.begin().await.unwrap();
    for (k, n) in [("b", 2), ("a", 1), ("c", 3), ("d", 4)] {
        sqlx::query("INSERT INTO keyed (k, n) VALUES ($1, $2)")
            .bind(k)
            .bind(n as i64)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let wanted = ["c", "a", "missing", "c"];
    for lock in [Lock::No, Lock::ForUpdate] {
        let sql = rows_with(dialect, "k, n", "keyed", "k", 1, wanted.len(), "text", lock);
        let mut found: Vec<(String, i64)> = sqlx::query_as(&sql)
            .bind_list(dialect, wanted)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        if lock == Lock::No {
            found.sort();
        }
        assert_eq!(found, [("a".to_string(), 1), ("c".to_string(), 3)], "{lock:?}");
    }
    let none: Vec<(String, i64)> =
        sqlx::query_as(&rows_with(dialect, "k, n", "keyed", "k", 1, 0, "text", Lock::No))
            .bind_list(dialect, Vec::<String>::new())
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert!(none.is_empty());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn sqlite_rows_are_found_by_their_keys() {
    let tdb = TestDatabase::sqlite();
    rows_are_found_by_their_keys(&tdb.connect().await.unwrap()).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rows_are_found_and_updated_by_probes_planned_on_an_empty_table() {
    let Some(url) = postgres_url() else {
        skip_test("PostgreSQL lists test", "TICKETER_TEST_POSTGRES_URL");
        return;
    };
    let tdb = TestDatabase::postgres(&url, "probes").await.unwrap();
    let db = tdb.connect().await.unwrap();
    rows_are_found_by_their_keys(&db).await;

    // Statements planned once, generically, while the table is empty, as a
    // service's connection does at the start of a sale...
    sqlx::query("CREATE TABLE grown (k TEXT PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    let select = rows_with(
        Dialect::Postgres,
        "k, n",
        "grown",
        "k",
        1,
        2,
        "text",
        Lock::ForUpdate,
    );
    let update = format!(
        "UPDATE grown SET n = v.n FROM {} WHERE grown.ctid = v.row_id",
        probed(
            "grown",
            "unnest($1::text[], $2::bigint[]) AS v(k, n)",
            "v",
            "k = v.k"
        )
    );
    for sql in [
        "SET plan_cache_mode = force_generic_plan".to_string(),
        format!("PREPARE pick (text) AS {select}"),
        format!("PREPARE put (text, text) AS {update}"),
        r#"EXECUTE pick ('{"k1"}')"#.to_string(),
        r#"EXECUTE put ('{"k1"}', '{1}')"#.to_string(),
    ] {
        sqlx::query(&sql).execute(&mut *conn).await.unwrap();
    }
    // ...still probe the index once the table holds a sale's rows.
    sqlx::query("INSERT INTO grown (k, n) SELECT 'k' || i, i FROM generate_series(1, 20000) AS i")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (explain, what) in [
        (r#"EXPLAIN EXECUTE pick ('{"k7","k9"}')"#, "rows_with"),
        (r#"EXPLAIN EXECUTE put ('{"k7","k9"}', '{70,90}')"#, "probed"),
    ] {
        let plan: Vec<(String,)> = sqlx::query_as(explain).fetch_all(&mut *conn).await.unwrap();
        let plan: Vec<String> = plan.into_iter().map(|(line,)| line).collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Scan using grown_pkey"), "{what}:\n{plan}");
        assert!(
            !plan.contains("Seq Scan"),
            "{what} reads the whole table:\n{plan}"
        );
    }
    // And they do what they say.
    let mut tx = db.begin().await.unwrap();
    sqlx::query(&update)
        .bind(r#"{"k7","k9","nope"}"#)
        .bind("{70,90,1}")
        .execute(&mut *tx)
        .await
        .unwrap();
    let found: Vec<(String, i64)> = sqlx::query_as(&select)
        .bind(r#"{"k9","k7","k8"}"#)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        found,
        [
            ("k7".to_string(), 70),
            ("k8".to_string(), 8),
            ("k9".to_string(), 90)
        ]
    );
}
