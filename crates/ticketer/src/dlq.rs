//! `ticketer dlq list|replay <queue>`: what a queue's consumer gave up on,
//! and sending it back. With AMQP_URL set, RabbitMQ's `<queue>.dlq`;
//! otherwise (the in-process bus) the consuming service's database, where
//! the running process's outbox relay sends replayed letters on.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use ticketer_bus::{topology, Bus, Envelope};
use ticketer_config::{Env, InfraConfig, Service};

/// One dead letter, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Letter {
    /// The message type.
    pub kind: String,
    /// None when the body was not even a message envelope.
    pub message_id: Option<String>,
    pub reason: String,
    /// When it died (kept letters only; RabbitMQ does not say).
    pub dead_at: Option<String>,
}

/// Where `queue`'s dead letters are: the broker, or the consumer's database.
enum Store {
    Broker(Bus),
    Database(ticketer_db::Db),
}

async fn store(env: &Env, data_dir: &Path, queue: &str) -> anyhow::Result<Store> {
    let spec = topology::queue(queue).with_context(|| {
        let known: Vec<&str> = topology::QUEUES.iter().map(|q| q.name).collect();
        format!("no queue `{queue}`; the queues are {}", known.join(", "))
    })?;
    let service = Service::ALL
        .into_iter()
        .find(|s| s.name() == spec.consumer)
        .with_context(|| format!("no service `{}`", spec.consumer))?;
    let infra = InfraConfig::from_env(service, env, data_dir.to_path_buf())?;
    Ok(match &infra.amqp_url {
        Some(url) => Store::Broker(Bus::connect(Some(url)).await?),
        None => {
            let db = crate::stack::connect_db(&infra).await?;
            db.migrate(service.name(), &[]).await?;
            Store::Database(db)
        }
    })
}

pub async fn list(env: &Env, data_dir: &Path, queue: &str) -> anyhow::Result<Vec<Letter>> {
    Ok(match store(env, data_dir, queue).await? {
        Store::Broker(bus) => bus
            .peek_dead_letters(queue)
            .await?
            .into_iter()
            .map(|l| Letter {
                message_id: Envelope::from_bytes(&l.body)
                    .ok()
                    .map(|e| e.message_id.to_string()),
                kind: l.routing_key,
                reason: l.reason,
                dead_at: None,
            })
            .collect(),
        Store::Database(db) => {
            let kept = ticketer_db::dead_letters::waiting(&db, queue).await?;
            db.close().await;
            kept.into_iter()
                .map(|k| Letter {
                    kind: k.kind,
                    message_id: k.message_id,
                    reason: k.reason,
                    dead_at: Some(k.dead_at),
                })
                .collect()
        }
    })
}

/// Sends the waiting dead letters back to `queue`'s consumer; how many.
pub async fn replay(env: &Env, data_dir: &Path, queue: &str) -> anyhow::Result<usize> {
    Ok(match store(env, data_dir, queue).await? {
        Store::Broker(bus) => bus.replay_dead_letters(queue).await?,
        Store::Database(db) => {
            let n = ticketer_db::dead_letters::replay(&db, queue).await?;
            db.close().await;
            n
        }
    })
}
