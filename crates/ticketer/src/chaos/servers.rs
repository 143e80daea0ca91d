//! The backing servers of a chaos run: a fresh database per service, a
//! RabbitMQ vhost and a Redis key prefix made for the run and removed after
//! it; and the shell commands that restart or stop the servers themselves.

use std::time::Duration;

use anyhow::{bail, Context};
use ticketer_config::Service;
use ticketer_db::Db;

/// Shell commands (`sh -c`) that hurt the servers; defaults for a Debian
/// machine running them as this one does.
#[derive(Debug, Clone)]
pub struct ServerCommands {
    pub restart_rabbitmq: String,
    pub restart_postgres: String,
    pub stop_redis: String,
    pub start_redis: String,
}

pub async fn sh(what: &str, command: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .output()
        .await
        .with_context(|| format!("{what}: running `{command}`"))?;
    if !out.status.success() {
        bail!(
            "{what}: `{command}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// What one run made, to be removed after it.
pub struct Resources {
    /// The run's name: databases are `<id>_<service>`, the vhost `<id>`,
    /// Redis keys `<id>:...`.
    pub id: String,
    pub postgres_admin: String,
    pub amqp_base: String,
    pub redis_url: String,
}

impl Resources {
    pub fn database_url(&self, svc: Service) -> String {
        let name = format!("{}_{}", self.id, svc.name());
        let url = ticketer_db::url_with_database(&self.postgres_admin, &name);
        // Everything is on this machine: TLS on loopback would only add work.
        match (url.contains("sslmode="), url.contains('?')) {
            (true, _) => url,
            (false, true) => format!("{url}&sslmode=disable"),
            (false, false) => format!("{url}?sslmode=disable"),
        }
    }

    pub fn amqp_url(&self) -> String {
        format!("{}/{}", self.amqp_base.trim_end_matches('/'), self.id)
    }

    pub async fn create(&self) -> anyhow::Result<()> {
        let admin = Db::connect(&self.postgres_admin, 1)
            .await
            .context("connecting to PostgreSQL")?;
        for svc in Service::BACKENDS {
            sqlx::query(&format!("CREATE DATABASE {}_{}", self.id, svc.name()))
                .execute(admin.pool())
                .await
                .with_context(|| format!("creating the {svc} database"))?;
        }
        admin.close().await;
        sh("vhost", &format!("rabbitmqctl -q add_vhost {}", self.id)).await?;
        sh(
            "vhost",
            &format!(
                "rabbitmqctl -q set_permissions -p {} guest '.*' '.*' '.*'",
                self.id
            ),
        )
        .await
    }

    /// Removes what `create` made; every step is tried.
    pub async fn remove(&self) {
        // The servers may have been restarted a moment ago.
        let mut admin = None;
        for _ in 0..30 {
            if let Ok(db) = Db::connect(&self.postgres_admin, 1).await {
                admin = Some(db);
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match admin {
            Some(admin) => {
                for svc in Service::BACKENDS {
                    let drop = format!("DROP DATABASE IF EXISTS {}_{} WITH (FORCE)", self.id, svc.name());
                    if let Err(e) = sqlx::query(&drop).execute(admin.pool()).await {
                        eprintln!("chaos: {drop}: {e}");
                    }
                }
                admin.close().await;
            }
            None => eprintln!("chaos: PostgreSQL did not answer; databases {}_* left", self.id),
        }
        if let Err(e) = sh("vhost", &format!("rabbitmqctl -q delete_vhost {}", self.id)).await {
            eprintln!("chaos: {e:#}");
        }
        let keys = format!(
            "redis-cli -u {url} --scan --pattern '{id}:*' | xargs -r redis-cli -u {url} del >/dev/null",
            url = self.redis_url,
            id = self.id
        );
        if let Err(e) = sh("redis keys", &keys).await {
            eprintln!("chaos: {e:#}");
        }
    }
}
