//! `ticketer dlq list|replay <queue>`: what a queue's consumer gave up on,
//! and sending it back. With AMQP_URL set, RabbitMQ's `<queue>.dlq`;
//! otherwise (the in-process bus) the consuming service's database, where
//! the running process's outbox relay sends replayed letters on.

use std::path::Path;

use anyhow::Context;
use ticketer_bus::{topology, Bus};
use ticketer_config::{Env, InfraConfig, Service};

pub use ticketer_runtime::dead_letters::Letter;

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
            .map(|l| Letter::from_broker(queue, l))
            .collect(),
        Store::Database(db) => {
            let kept = ticketer_db::dead_letters::waiting(&db, queue).await?;
            db.close().await;
            kept.into_iter().map(|k| Letter::from_kept(queue, k)).collect()
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
