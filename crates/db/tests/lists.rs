//! Lists bound as one parameter on PostgreSQL (array literals) reach the
//! database exactly as written, whatever their text, and the outbox keeps
//! the messages' order; on SQLite the same calls bind one value per item.

use ticketer_bus::Envelope;
use ticketer_db::{
    enqueue,
    lists::{any_of, nullable_array_literal, Binds},
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
