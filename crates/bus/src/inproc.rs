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
        (0..sub.concurrency)
            .map(|_| {
                let (rx, sub, handler, shutdown, dead) = (
                    rx.clone(),
                    sub.clone(),
                    handler.clone(),
                    shutdown.clone(),
                    self.dead.clone(),
                );
                tokio::spawn(async move { worker(rx, sub, handler, shutdown, dead).await })
            })
            .collect()
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
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Bus, HandleError};

    struct Collect(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl BatchHandler for Collect {
        async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
            if batch.iter().any(|m| m.kind == "Poison") {
                return Err(HandleError::Permanent("poison".into()));
            }
            self.0
                .lock()
                .unwrap()
                .extend(batch.iter().map(|m| m.kind.clone()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn publish_waits_for_consumers_and_routes_by_topic() {
        let bus = Bus::in_process();
        let handler = Arc::new(Collect(Mutex::default()));
        let shutdown = CancellationToken::new();
        let sub = Subscription::new("q")
            .bind("ex", "Wanted")
            .retries(2, Duration::from_millis(1));
        bus.subscribe(sub, handler.clone(), shutdown.clone())
            .await
            .unwrap();

        let msgs = [
            Envelope::new("Wanted", &1),
            Envelope::new("Other", &2),
            Envelope::new("Wanted", &3),
        ];
        let out: Vec<_> = msgs.iter().map(|m| Outgoing::new("ex", m)).collect();
        bus.publish(&out).await.unwrap();
        // publish returned, so the handler has already run.
        assert_eq!(*handler.0.lock().unwrap(), vec!["Wanted", "Wanted"]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn poison_and_garbage_end_in_the_dead_letter_store() {
        let bus = InProcessBus::default();
        let handler = Arc::new(Collect(Mutex::default()));
        let shutdown = CancellationToken::new();
        bus.subscribe(
            Subscription::new("q").bind("ex", "#"),
            handler.clone(),
            shutdown.clone(),
        );
        let poison = Outgoing::new("ex", &Envelope::new("Poison", &1));
        let mut garbage = Outgoing::new("ex", &Envelope::new("Fine", &1));
        garbage.body = b"not json".to_vec();
        bus.publish(&[poison, garbage, Outgoing::new("ex", &Envelope::new("Fine", &2))])
            .await
            .unwrap();
        let dead = bus.dead_letters("q");
        assert_eq!(dead.len(), 2);
        assert!(dead.iter().any(|d| d.reason == "poison"), "{dead:?}");
        assert!(dead.iter().any(|d| d.body == b"not json"), "{dead:?}");
        assert_eq!(*handler.0.lock().unwrap(), vec!["Fine"]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn publish_fails_when_a_consumer_stops_before_settling() {
        struct Slow;
        #[async_trait::async_trait]
        impl BatchHandler for Slow {
            async fn handle_batch(&self, _: &[Envelope]) -> Result<(), HandleError> {
                Err(HandleError::Transient("db down".into()))
            }
        }
        let bus = InProcessBus::default();
        let shutdown = CancellationToken::new();
        let sub = Subscription::new("q")
            .bind("ex", "#")
            .retries(100, Duration::from_millis(20));
        bus.subscribe(sub, Arc::new(Slow), shutdown.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        });
        let res = bus.publish(&[Outgoing::new("ex", &Envelope::new("X", &1))]).await;
        assert!(matches!(res, Err(BusError::NotSettled(_))), "{res:?}");
    }
}

#[cfg(test)]
mod declared_queue_tests {
    use std::time::Duration;

    use super::*;
    use crate::{topology::TICKET_INVENTORY, Bus, HandleError};

    struct Count(Mutex<usize>);

    #[async_trait::async_trait]
    impl BatchHandler for Count {
        async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
            *self.0.lock().unwrap() += batch.len();
            Ok(())
        }
    }

    #[tokio::test]
    async fn messages_wait_in_a_declared_queue_until_its_consumer_starts() {
        let bus = Bus::in_process();
        let msg = Outgoing::new("ticketer.events", &Envelope::new("EventPublished", &1));
        // Nobody here consumes the queue yet: the message is kept, not dropped.
        bus.publish(&[msg]).await.unwrap();
        let count = Arc::new(Count(Mutex::new(0)));
        let shutdown = CancellationToken::new();
        bus.subscribe(TICKET_INVENTORY.subscription(), count.clone(), shutdown.clone())
            .await
            .unwrap();
        for _ in 0..100 {
            if *count.0.lock().unwrap() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*count.0.lock().unwrap(), 1);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_queue_nobody_consumes_holds_a_bounded_number_of_messages() {
        let bus = Bus::in_process();
        let batch: Vec<Outgoing> = (0..QUEUE_CAPACITY + 50)
            .map(|n| Outgoing::new("ticketer.events", &Envelope::new("EventPublished", &n)))
            .collect();
        bus.publish(&batch).await.unwrap();
        let Bus::InProcess(inner) = &bus else {
            unreachable!("an in-process bus")
        };
        let queues = inner.queues.lock().unwrap();
        let held =
            queues[TICKET_INVENTORY.name].tx.max_capacity() - queues[TICKET_INVENTORY.name].tx.capacity();
        assert_eq!(held, QUEUE_CAPACITY, "the rest were dropped, not kept");
    }

    #[tokio::test]
    async fn a_gated_bus_publishes_only_once_opened() {
        let bus = Bus::in_process_gated();
        let msg = Outgoing::new("ticketer.events", &Envelope::new("EventPublished", &1));
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.publish(&[msg]).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!publisher.is_finished(), "published before the bus was opened");
        let count = Arc::new(Count(Mutex::new(0)));
        let shutdown = CancellationToken::new();
        bus.subscribe(TICKET_INVENTORY.subscription(), count.clone(), shutdown.clone())
            .await
            .unwrap();
        bus.open();
        publisher.await.unwrap().unwrap();
        // Consumed queue: the publish returned after the consumer settled it.
        assert_eq!(*count.0.lock().unwrap(), 1);
        shutdown.cancel();
    }
}
