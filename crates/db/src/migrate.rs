//! Versioned migrations, one SQL text per dialect, applied in order and
//! recorded per component so a service's own schema and the shared
//! messaging tables version independently.

use sqlx::{Acquire, Executor};

use crate::{time, Db, DbError, Dialect};

/// One migration step in both dialects.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub postgres: &'static str,
    pub sqlite: &'static str,
}

impl Migration {
    /// A step whose SQL is the same in both dialects.
    pub const fn portable(version: i64, name: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            name,
            postgres: sql,
            sqlite: sql,
        }
    }
}

/// The outbox and inbox tables every service carries.
pub const MESSAGING: &[Migration] = &[
    Migration {
        version: 1,
        name: "outbox and inbox",
        postgres: include_str!("../migrations/postgres/messaging.sql"),
        sqlite: include_str!("../migrations/sqlite/messaging.sql"),
    },
    Migration {
        version: 2,
        name: "dead letters",
        postgres: include_str!("../migrations/postgres/dead_letters.sql"),
        sqlite: include_str!("../migrations/sqlite/dead_letters.sql"),
    },
    Migration::portable(
        3,
        "outbox read by its key",
        include_str!("../migrations/outbox_by_id.sql"),
    ),
];

/// Stored responses for `Idempotency-Key` requests.
pub const IDEMPOTENCY: &[Migration] = &[Migration::portable(
    1,
    "idempotency keys",
    include_str!("../migrations/idempotency.sql"),
)];

impl Db {
    /// Applies the shared tables (outbox, inbox, idempotency keys), then `migrations` recorded under
    /// `component`, skipping those already applied.
    pub async fn migrate(&self, component: &str, migrations: &[Migration]) -> Result<(), DbError> {
        let mut conn = self.pool().acquire().await?;
        if self.dialect() == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(crate::locks::MIGRATION)
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    component  TEXT NOT NULL,
                    version    BIGINT NOT NULL,
                    name       TEXT NOT NULL,
                    applied_at TEXT NOT NULL,
                    PRIMARY KEY (component, version))",
            )
            .await?;
            let lists = [("messaging", MESSAGING), ("idempotency", IDEMPOTENCY), (component, migrations)];
            for (comp, list) in lists {
                for m in list {
                    let done: Option<(i64,)> = sqlx::query_as(
                        "SELECT version FROM schema_migrations WHERE component = $1 AND version = $2",
                    )
                    .bind(comp)
                    .bind(m.version)
                    .fetch_optional(&mut *conn)
                    .await?;
                    if done.is_some() {
                        continue;
                    }
                    let sql = match self.dialect() {
                        Dialect::Postgres => m.postgres,
                        Dialect::Sqlite => m.sqlite,
                    };
                    let fail = |source| DbError::Migration {
                        component: comp.to_string(),
                        version: m.version,
                        name: m.name.to_string(),
                        source,
                    };
                    let mut tx = conn.begin().await?;
                    sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(fail)?;
                    sqlx::query(
                        "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(comp)
                    .bind(m.version)
                    .bind(m.name)
                    .bind(time::now())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    tracing::info!(component = comp, version = m.version, name = m.name, "applied migration");
                }
            }
            Ok::<_, DbError>(())
        }
        .await;
        if self.dialect() == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(crate::locks::MIGRATION)
                .execute(&mut *conn)
                .await?;
        }
        result
    }
}
