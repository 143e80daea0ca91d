//! Throwaway databases for tests: a temporary SQLite file, or a uniquely
//! named PostgreSQL database dropped again when the handle goes away.

use std::path::PathBuf;

use crate::{Db, DbError};

/// The PostgreSQL server tests may use, from `TICKETER_TEST_POSTGRES_URL`.
pub fn postgres_url() -> Option<String> {
    std::env::var("TICKETER_TEST_POSTGRES_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("ticketer-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TestDatabase {
            url: format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
            cleanup: Cleanup::File(dir),
        }
    }

    /// Creates `test_<label>_<random>` on the server at `admin_url`.
    pub async fn postgres(admin_url: &str, label: &str) -> Result<Self, DbError> {
        let name = format!("test_{label}_{}", uuid::Uuid::new_v4().simple());
        let admin = Db::connect(admin_url, 1).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(admin.pool())
            .await?;
        admin.close().await;
        Ok(TestDatabase {
            url: with_database(admin_url, &name),
            cleanup: Cleanup::Postgres {
                admin_url: admin_url.to_string(),
                name,
            },
        })
    }

    pub async fn connect(&self) -> Result<Db, DbError> {
        Db::connect(&self.url, 8).await
    }
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
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

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs inside the test's runtime; use a fresh one on its own thread.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async {
                        let admin = Db::connect(&admin_url, 1).await?;
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(admin.pool())
                            .await?;
                        admin.close().await;
                        Ok::<_, DbError>(())
                    })
                    .map_err(|e| std::io::Error::other(e.to_string()))
                })
                .join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
