//! Throwaway databases: a temporary SQLite file, or a uniquely named
//! PostgreSQL database dropped again when the handle goes away.

use std::path::PathBuf;

use ticketer_db::{url_with_database, Db, DbError};

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
            url: url_with_database(admin_url, &name),
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
