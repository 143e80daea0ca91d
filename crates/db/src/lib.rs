//! Database access shared by every service.
//!
//! One body of SQL per service runs on PostgreSQL (production) and SQLite
//! (embedded) through sqlx's `Any` driver. Queries use `$1`-style
//! placeholders, which both understand; the few statements whose text
//! differs ask [`Db::dialect`]. Values are stored in types both dialects
//! share: integers (money in minor units), text (UUIDs, RFC 3339 timestamps,
//! dates) and booleans.

pub mod dead_letters;
pub mod idempotency;
mod inbox;
pub mod janitor;
pub mod lists;
mod migrate;
mod outbox;
mod pipeline;
pub mod time;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

pub use inbox::{traced, Inbox, MessageHandler};
pub use migrate::Migration;
pub use outbox::{answering, backlog, enqueue, pending_count, reply, Outbound, OutboxRelay, UNDECODABLE};
use sqlx::{
    any::AnyPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode},
    ConnectOptions, Executor,
};
pub use sqlx::{any::AnyRow, Any, AnyConnection, AnyPool, Error as SqlxError, Row, Transaction};
use tokio::sync::Notify;

pub type Tx = Transaction<'static, Any>;

/// PostgreSQL advisory locks, kept in one place so that no two uses share
/// a key (a replica waiting to migrate must never wait on the relay).
pub(crate) mod locks {
    /// Serialises concurrent start-ups of several replicas.
    pub const MIGRATION: i64 = 0x7469_636b_6574; // "ticket"
    /// Held by the replica that relays the outbox.
    pub const OUTBOX_RELAY: i64 = 0x6f75_7462_6f78; // "outbox"
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("migration {component}/{version} ({name}) failed: {source}")]
    Migration {
        component: String,
        version: i64,
        name: String,
        source: sqlx::Error,
    },
    #[error("unsupported database url `{0}`: expected postgres:// or sqlite://")]
    UnsupportedUrl(String),
    #[error(transparent)]
    Bus(#[from] ticketer_bus::BusError),
    /// A message that cannot be put in JSON: a bug, never worth a retry.
    #[error("message cannot be encoded: {0}")]
    Encode(String),
}

/// A consumer whose database failed tries again later: the connection
/// comes back, the lock is released, the concurrent change is read anew.
/// (A message that can never apply is refused as Permanent by its handler,
/// before any statement runs.)
impl From<DbError> for ticketer_bus::HandleError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Encode(_) => ticketer_bus::HandleError::Permanent(e.to_string()),
            e => ticketer_bus::HandleError::Transient(e.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn of_url(url: &str) -> Result<Dialect, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else {
            Err(DbError::UnsupportedUrl(redact(url)))
        }
    }

    /// The dialect an open connection speaks, so that a store function
    /// given only a connection can still write its dialect's SQL.
    pub fn of(conn: &AnyConnection) -> Dialect {
        if conn.backend_name() == "PostgreSQL" {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }
}

/// What ends a SELECT whose rows must stay locked until the transaction
/// ends: `FOR UPDATE` on PostgreSQL. On SQLite nothing: a database has one
/// writing connection ([`Db::connect`]), so a write transaction already
/// excludes every other.
pub fn for_update(conn: &AnyConnection) -> &'static str {
    match Dialect::of(conn) {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    }
}

/// A connection pool to one service's database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// Reads outside a transaction. SQLite: separate read-only connections,
    /// which WAL lets run beside the one writer. PostgreSQL: the same pool.
    reader: AnyPool,
    dialect: Dialect,
    outbox_written: Arc<Notify>,
    tally: Arc<Tally>,
}

/// What the messaging of this database has done since the process started,
/// for the service's `/metrics`.
#[derive(Debug, Default)]
pub struct Tally {
    /// Outbox rows published (confirmed, then deleted).
    pub published: std::sync::atomic::AtomicU64,
    /// Deliveries the inbox had already applied (redelivered, or delivered
    /// twice), skipped.
    pub duplicates: std::sync::atomic::AtomicU64,
    /// Transactions waiting for a connection now.
    pub waiting: std::sync::atomic::AtomicI64,
}

/// A connection idle longer than this is checked (a round trip) before it
/// is handed out; one used more recently is taken as alive.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Pool options shared by every pool. sqlx checks each connection with a
/// round trip before handing it out; a busy service takes a connection
/// for every transaction, so that doubles the round trips (and, on SQLite,
/// the hops to its worker thread) for nothing: a connection used a moment
/// ago is alive. Only one that sat idle (the server may have closed it
/// meanwhile) is checked, and a failed check makes the pool open another.
fn pool_options() -> AnyPoolOptions {
    AnyPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl Db {
    /// Connects to `url`. SQLite gets WAL, a busy timeout, a single writing
    /// connection (SQLite admits one writer at a time anyway, and a single
    /// connection never fails a write on a lock upgrade) and read-only
    /// connections for [`Db::reader`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of_url(url)?;
        let (pool, reader) = match dialect {
            Dialect::Postgres => {
                let pool = pool_options()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?;
                (pool.clone(), pool)
            }
            Dialect::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)?;
                // Password hashes and stored tokens live here: the owner's
                // alone (SQLite gives its WAL files the database's mode).
                let file = opts.get_filename();
                if let Some(dir) = file.parent() {
                    if !dir.as_os_str().is_empty() {
                        private_dir(dir).map_err(sqlx::Error::Io)?;
                    }
                }
                if file != std::path::Path::new(":memory:") {
                    private_file(file).map_err(sqlx::Error::Io)?;
                }
                // Create the file and switch it to WAL once; WAL is persistent.
                let mut conn = opts
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .connect()
                    .await?;
                conn.execute("SELECT 1").await?;
                drop(conn);
                let writer = pool_options()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?;
                let read_only = match url.split_once('?') {
                    Some((path, _)) => format!("{path}?mode=ro"),
                    None => format!("{url}?mode=ro"),
                };
                let reader = pool_options()
                    .max_connections(max_connections.clamp(1, 8))
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&read_only)
                    .await?;
                (writer, reader)
            }
        };
        Ok(Db {
            pool,
            reader,
            dialect,
            outbox_written: Arc::new(Notify::new()),
            tally: Arc::default(),
        })
    }

    /// `<dir>/<name>.db`, the embedded default.
    pub async fn sqlite_file(path: &Path) -> Result<Db, DbError> {
        Db::connect(&format!("sqlite://{}?mode=rwc", path.display()), 1).await
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// For reads that need no transaction (listings, lookups). They see
    /// everything committed, and on SQLite they do not wait for the writer.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// A connection of [`Db::reader`], for several reads in a row.
    pub async fn reading(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, DbError> {
        Ok(self.reader.acquire().await?)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn begin(&self) -> Result<Tx, DbError> {
        // Counted while waiting for a connection: every write goes through
        // here, so a pool too small for the load shows as waiters. The guard
        // uncounts it however the wait ends, a caller that gave up included.
        struct Waiting<'a>(&'a std::sync::atomic::AtomicI64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.tally
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let waiting = Waiting(&self.tally.waiting);
        let tx = self.pool.begin().await;
        drop(waiting);
        Ok(tx?)
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        self.pool.options().get_max_connections()
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Wakes the outbox relay; call after committing outbox rows.
    /// Messages published and duplicates skipped so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    pub fn outbox_written(&self) {
        self.outbox_written.notify_one();
    }

    pub(crate) fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox_written.clone()
    }

    pub async fn close(&self) {
        self.reader.close().await;
        self.pool.close().await;
    }
}

/// A `LIKE ... ESCAPE '\'` pattern matching `s` anywhere, lower-cased, its
/// wildcards escaped so that user text matches literally.
pub fn like_pattern(s: &str) -> String {
    let escaped = s
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// `$start, $start+1, ...` for an `IN (...)` list of `n` values.
pub fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2, $3), ($4, $5, $6)` for an `INSERT ... VALUES` of `rows` rows
/// of `columns` values each.
pub fn value_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|i| format!("({})", placeholders(i * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates `dir` (and its parents) readable by the owner only (0700) if it
/// does not exist; a directory that exists is left as its owner set it.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `file` empty and readable by the owner only (0600) if it does
/// not exist (an empty file is an empty SQLite database).
pub fn private_file(file: &std::path::Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// True when `err` is a unique-constraint violation (e.g. a duplicate email).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| e.is_unique_violation())
}

/// `url` with its database name replaced by `name`.
pub fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// An id read back from a row. Rows hold only ids written from typed
/// values, so one that does not parse is a broken record: an error, never
/// a row quietly left out.
pub fn uuid_of(s: &str) -> Result<uuid::Uuid, DbError> {
    uuid::Uuid::parse_str(s).map_err(|e| DbError::Sqlx(sqlx::Error::Decode(Box::new(e))))
}

/// A URL with its password replaced, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &creds[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
