//! The embedded transport. Same topology rules as RabbitMQ (topic bindings,
//! a dead-letter store per queue), but a publish to a queue consumed in
//! this process returns only after the consumer has settled the message, so
//! the outbox marks it published only once its effects are committed.
//! Dead letters are handed to the consumer ([`BatchHandler::dead_lettered`]:
//! the inbox keeps them in the service's database, where `ticketer dlq`
//! lists and replays them) before the message counts as settled; a copy
//! stays in memory for [`InProcessBus::dead_letters`]. Held in memory only,
//! and lost if the process stops: a message for a queue nobody in this
//! process consumes (kept, up to `QUEUE_CAPACITY`, for a consumer that may
//! start later; `ticketer dev` opens the bus only once every queue has its
//! consumer).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::{
    sync::{mpsc, oneshot, Mutex as AsyncMutex},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    processing::{apply, BatchHandler, DeadLetter, Outcome},
    topology::topic_matches,
    BusError, Envelope, Outgoing, Subscription,
};

pub(crate) struct Delivery {
    exchange: Arc<str>,
    routing_key: Arc<str>,
    body: Arc<Vec<u8>>,
    /// true once applied or dead-lettered; false when abandoned.
    settled: oneshot::Sender<bool>,
}

struct Binding {
    exchange: String,
    pattern: String,
    queue: String,
}

type Receiver = Arc<AsyncMutex<mpsc::Receiver<Delivery>>>;

/// The most messages a queue holds. A consumed queue holds at most what one
/// publish is waiting for; this bounds a queue nobody in this process reads
/// (a service tried alone without a broker), whose messages could never be
/// delivered here anyway.
const QUEUE_CAPACITY: usize = 10_000;

struct Queue {
    tx: mpsc::Sender<Delivery>,
    rx: Receiver,
    /// Whether a consumer in this process reads it. Publishes wait for
    /// consumers to settle; a queue nobody here consumes just keeps the
    /// message (another service's queue when testing one service alone).
    consumed: bool,
}

/// How long a publish waits for consumers to settle it. A queue declared
/// in the topology but consumed by no one in this process would otherwise
/// hold the outbox relay forever; after this the batch is retried.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct InProcessBus {
    /// Publishing waits while this is false (see [`InProcessBus::gated`]).
    open: tokio::sync::watch::Sender<bool>,
    bindings: Mutex<Vec<Binding>>,
    queues: Mutex<HashMap<String, Queue>>,
    dead: Arc<Mutex<HashMap<String, Vec<DeadLetter>>>>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        InProcessBus {
            open: tokio::sync::watch::Sender::new(true),
            bindings: Mutex::default(),
            queues: Mutex::default(),
            dead: Arc::default(),
        }
    }
}

impl InProcessBus {
    /// A bus that publishes nothing until [`InProcessBus::open`]: for a
    /// process that starts several services, so that no message leaves an
    /// outbox before every consumer is listening.
    pub fn gated() -> Self {
        let bus = InProcessBus::default();
        bus.open.send_replace(false);
        bus
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    pub(crate) async fn publish(&self, batch: &[Outgoing]) -> Result<(), BusError> {
        // Until every service of the process has subscribed, nothing is
        // published: a message is only marked sent once its consumers exist.
        let mut open = self.open.subscribe();
        while !*open.borrow_and_update() {
            if open.changed().await.is_err() {
                break;
            }
        }
        let mut waiting = Vec::new();
        {
            let bindings = self.bindings.lock().expect("bindings lock");
            let queues = self.queues.lock().expect("queues lock");
            for msg in batch {
                let body = Arc::new(msg.body.clone());
                let (exchange, routing_key): (Arc<str>, Arc<str>) =
                    (msg.exchange.as_str().into(), msg.routing_key.as_str().into());
                let mut targets: Vec<&str> = bindings
                    .iter()
                    .filter(|b| b.exchange == msg.exchange && topic_matches(&b.pattern, &msg.routing_key))
                    .map(|b| b.queue.as_str())
                    .collect();
                // One copy per queue, however many of its bindings match.
                targets.sort_unstable();
                targets.dedup();
                for queue in targets {
                    let (tx, rx) = oneshot::channel();
                    let q = queues.get(queue).ok_or(BusError::NotSettled(msg.message_id))?;
                    let delivery = Delivery {
                        exchange: exchange.clone(),
                        routing_key: routing_key.clone(),
                        body: body.clone(),
                        settled: tx,
                    };
                    match q.tx.try_send(delivery) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) if !q.consumed => {
                            tracing::warn!(
                                queue,
                                kind = %msg.routing_key,
                                "no consumer in this process and the queue is full; message dropped (run every service, or set AMQP_URL)"
                            );
                            continue;
                        }
                        Err(_) => return Err(BusError::NotSettled(msg.message_id)),
                    }
                    if q.consumed {
                        waiting.push((msg.message_id, rx));
                    }
                }
            }
        }
        for (id, settled) in waiting {
            match tokio::time::timeout(SETTLE_TIMEOUT, settled).await {
                Ok(Ok(true)) => {}
                _ => return Err(BusError::NotSettled(id)),
            }
        }
        Ok(())
    }

    /// Creates the queue (once) and adds any bindings it lacks; messages
    /// routed to it wait there until a consumer starts.
    pub(crate) fn declare(&self, queue: &str, bindings: &[(String, String)]) -> Receiver {
        let rx = {
            let mut queues = self.queues.lock().expect("queues lock");
            let q = queues.entry(queue.to_string()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                Queue {
                    tx,
                    rx: Arc::new(AsyncMutex::new(rx)),
                    consumed: false,
                }
            });
            q.rx.clone()
        };
        let mut existing = self.bindings.lock().expect("bindings lock");
        for (exchange, pattern) in bindings {
            let known = existing
                .iter()
                .any(|b| b.queue == queue && &b.exchange == exchange && &b.pattern == pattern);
            if !known {
                existing.push(Binding {
                    exchange: exchange.clone(),
                    pattern: pattern.clone(),
                    queue: queue.to_string(),
                });
            }
        }
        rx
    }

    pub(crate) fn subscribe(
        &self,
        sub: Subscription,
        handler: Arc<dyn BatchHandler>,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let rx = self.declare(&sub.queue, &sub.bindings);
        if let Some(q) = self.queues.lock().expect("queues lock").get_mut(&sub.queue) {
            q.consumed = true;
        }
        let sub = Arc::new(sub);
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(sub.concurrency));
        (0..sub.concurrency)
            .map(|_| {
                let (rx, sub, handler, shutdown, dead, live) = (
                    rx.clone(),
                    sub.clone(),
                    handler.clone(),
                    shutdown.clone(),
                    self.dead.clone(),
                    live.clone(),
                );
                tokio::spawn(async move {
                    worker(rx.clone(), sub, handler, shutdown, dead).await;
                    if live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                        close(&rx).await;
                    }
                })
            })
            .collect()
    }

    /// Messages waiting in `queue`, not yet taken by its consumer.
    pub fn queued(&self, queue: &str) -> usize {
        let queues = self.queues.lock().expect("queues lock");
        queues
            .get(queue)
            .map_or(0, |q| q.tx.max_capacity() - q.tx.capacity())
    }

    /// The messages dead-lettered from `queue` so far.
    pub fn dead_letters(&self, queue: &str) -> Vec<DeadLetter> {
        self.dead
            .lock()
            .expect("dead lock")
            .get(queue)
            .cloned()
            .unwrap_or_default()
    }
}

async fn worker(
    rx: Receiver,
    sub: Arc<Subscription>,
    handler: Arc<dyn BatchHandler>,
    shutdown: CancellationToken,
    dead: Arc<Mutex<HashMap<String, Vec<DeadLetter>>>>,
) {
    loop {
        let batch = {
            let mut rx = tokio::select! {
                _ = shutdown.cancelled() => return,
                guard = rx.lock() => guard,
            };
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                d = rx.recv() => match d { Some(d) => d, None => return },
            };
            let mut batch = vec![first];
            while batch.len() < sub.batch_size {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            batch
        };

        let mut parsed = Vec::with_capacity(batch.len());
        let mut owners = Vec::with_capacity(batch.len());
        for d in batch {
            match Envelope::from_bytes(&d.body) {
                Ok(env) => {
                    parsed.push(env);
                    owners.push(d);
                }
                Err(e) => {
                    tracing::error!(queue = %sub.queue, error = %e, "dead-lettering undecodable message");
                    let kept = bury(handler.as_ref(), &dead, &sub.queue, &d, e.to_string()).await;
                    let _ = d.settled.send(kept);
                }
            }
        }
        let outcomes = apply(handler.as_ref(), &parsed, &sub, &shutdown).await;
        for (d, outcome) in owners.into_iter().zip(outcomes) {
            let settled = match outcome {
                Outcome::Applied => true,
                Outcome::DeadLettered(reason) => bury(handler.as_ref(), &dead, &sub.queue, &d, reason).await,
                Outcome::Abandoned => false,
            };
            let _ = d.settled.send(settled);
        }
    }
}

/// Once a queue's consumers have all stopped, nothing more can be settled
/// there: the channel is closed, so a publish to it fails at once (the
/// sender's outbox keeps the message for the next start) instead of waiting
/// out [`SETTLE_TIMEOUT`] during a shutdown, and what was still buffered is
/// dropped, which fails its publish the same way.
async fn close(rx: &Receiver) {
    let mut rx = rx.lock().await;
    rx.close();
    while rx.try_recv().is_ok() {}
}

/// Hands a dead letter to the consumer to keep; true once kept. Not kept
/// (its database is away), the delivery is left unsettled, so the publish
/// fails and the sender's outbox sends it again later.
async fn bury(
    handler: &dyn BatchHandler,
    dead: &Mutex<HashMap<String, Vec<DeadLetter>>>,
    queue: &str,
    d: &Delivery,
    reason: String,
) -> bool {
    let letter = DeadLetter {
        exchange: d.exchange.to_string(),
        routing_key: d.routing_key.to_string(),
        body: d.body.to_vec(),
        reason,
    };
    if let Err(e) = handler.dead_lettered(&letter).await {
        tracing::warn!(queue, error = %e, "could not keep a dead letter; it will be delivered again");
        return false;
    }
    // A copy for this process, at most QUEUE_CAPACITY per queue (the oldest
    // goes first; the kept one and the log line remain).
    let mut dead = dead.lock().expect("dead lock");
    let letters = dead.entry(queue.to_string()).or_default();
    if letters.len() >= QUEUE_CAPACITY {
        letters.remove(0);
    }
    letters.push(letter);
    true
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod declared_queue_tests;
