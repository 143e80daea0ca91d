use super::*;

#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::env::temp_dir().join(format!("ticketer-perm-{}", uuid::Uuid::new_v4().simple()));
    let dir = root.join("data");
    let db = Db::connect(&format!("sqlite://{}?mode=rwc", dir.join("auth.db").display()), 2)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (x INTEGER)")
        .execute(db.pool())
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for file in ["auth.db", "auth.db-wal"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    db.close().await;
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_stored_id_that_is_not_one_is_an_error() {
    let id = uuid::Uuid::new_v4();
    assert_eq!(uuid_of(&id.to_string()).unwrap(), id);
    assert!(matches!(
        uuid_of("seat-7"),
        Err(DbError::Sqlx(sqlx::Error::Decode(_)))
    ));
}

#[test]
fn redacts_passwords() {
    assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
}

#[test]
fn dialect_from_url() {
    assert_eq!(Dialect::of_url("postgres://x").unwrap(), Dialect::Postgres);
    assert_eq!(Dialect::of_url("sqlite://x.db").unwrap(), Dialect::Sqlite);
    assert!(Dialect::of_url("mysql://x").is_err());
}

#[test]
fn replaces_database_name() {
    assert_eq!(
        url_with_database("postgres://u@h:5432/postgres", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        url_with_database("postgres://u@h:5432", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        url_with_database("postgres://h/db?sslmode=disable", "x"),
        "postgres://h/x?sslmode=disable"
    );
}

#[test]
fn a_database_failure_is_worth_retrying() {
    let e: ticketer_bus::HandleError = DbError::Sqlx(sqlx::Error::PoolTimedOut).into();
    assert!(matches!(e, ticketer_bus::HandleError::Transient(_)), "{e}");
}

#[test]
fn advisory_locks_are_distinct() {
    assert_ne!(locks::MIGRATION, locks::OUTBOX_RELAY);
}

#[test]
fn placeholder_lists() {
    assert_eq!(placeholders(2, 3), "$2, $3, $4");
    assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
}

#[test]
fn like_patterns_escape_wildcards() {
    assert_eq!(like_pattern("Rock"), "%rock%");
    assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
}
