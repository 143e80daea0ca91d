//! The service's messaging and database figures on its `/metrics`: every
//! consumer's messages counted by type as they are applied and its dead
//! letters as they are given up on ([`Counted`]); the messages published,
//! the duplicates skipped, the outbox backlog and the connection pool
//! sampled every few seconds ([`sample`]).

use std::{sync::Arc, time::Duration};

use ticketer_bus::{BatchHandler, DeadLetter, Envelope, HandleError};
use tokio_util::sync::CancellationToken;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};
use ticketer_http::Metrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabels {
    pub queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MessageLabels {
    pub queue: String,
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectionLabels {
    pub state: &'static str,
}

/// How long messages waited between being written and being applied, in
/// seconds: a consumer falling behind shows here first.
fn age_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ])
}

/// The service's messaging and database figures (`ticketer_*`).
#[derive(Clone)]
pub(crate) struct Operations {
    pub consumed: Family<MessageLabels, Counter>,
    pub dead_lettered: Family<QueueLabels, Counter>,
    pub retried: Family<QueueLabels, Counter>,
    pub age: Family<QueueLabels, Histogram, fn() -> Histogram>,
    pub published: Counter,
    pub duplicates: Counter,
    pub outbox_pending: Gauge,
    pub outbox_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub connections: Family<ConnectionLabels, Gauge>,
}

impl Operations {
    /// The figures, registered on the service's `/metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let ops = Operations {
            consumed: Family::default(),
            dead_lettered: Family::default(),
            retried: Family::default(),
            age: Family::new_with_constructor(age_histogram),
            published: Counter::default(),
            duplicates: Counter::default(),
            outbox_pending: Gauge::default(),
            outbox_oldest: Gauge::default(),
            connections: Family::default(),
        };
        metrics.register(
            "ticketer_messages_consumed",
            "Messages applied, by queue and type (the saga's funnel: HoldTickets, TicketsHeld, PaymentSucceeded, BookingConfirmed...)",
            ops.consumed.clone(),
        );
        metrics.register(
            "ticketer_messages_dead_lettered",
            "Messages given up on (dead-lettered), by queue",
            ops.dead_lettered.clone(),
        );
        metrics.register(
            "ticketer_messages_retried",
            "Messages whose batch failed and will be tried again, by queue",
            ops.retried.clone(),
        );
        metrics.register(
            "ticketer_message_age_seconds",
            "From a message being written to its being applied, by queue",
            ops.age.clone(),
        );
        metrics.register(
            "ticketer_messages_published",
            "Messages the outbox relay published (the broker confirmed them)",
            ops.published.clone(),
        );
        metrics.register(
            "ticketer_messages_duplicate",
            "Deliveries the inbox had already applied (redelivered), skipped",
            ops.duplicates.clone(),
        );
        metrics.register(
            "ticketer_outbox_pending",
            "Outbox rows not yet published",
            ops.outbox_pending.clone(),
        );
        metrics.register(
            "ticketer_outbox_oldest_age_seconds",
            "Age of the oldest outbox row not yet published (0 when none)",
            ops.outbox_oldest.clone(),
        );
        metrics.register(
            "ticketer_db_connections",
            "Database pool connections, by state: idle, in_use, max (the pool's size), and waiting (transactions waiting for one)",
            ops.connections.clone(),
        );
        ops
    }
}

/// A consumer's handler, counted: messages applied, given up on and
/// retried, and how old each was when applied.
pub(crate) struct Counted {
    inner: Arc<dyn BatchHandler>,
    queue: QueueLabels,
    ops: Operations,
}

impl Counted {
    /// Every series of the queue (and of each type bound to it) exists
    /// from the start, at zero, so that a rate or an alert on it has
    /// something to read before the first event.
    pub fn new(inner: Arc<dyn BatchHandler>, queue: &str, kinds: &[&str], ops: Operations) -> Self {
        for kind in kinds {
            let _ = ops.consumed.get_or_create(&MessageLabels {
                queue: queue.to_string(),
                kind: kind.to_string(),
            });
        }
        let queue = QueueLabels {
            queue: queue.to_string(),
        };
        let _ = ops.dead_lettered.get_or_create(&queue);
        let _ = ops.retried.get_or_create(&queue);
        let _ = ops.age.get_or_create(&queue);
        Counted { inner, queue, ops }
    }
}

#[async_trait::async_trait]
impl BatchHandler for Counted {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        let result = self.inner.handle_batch(batch).await;
        match &result {
            Ok(()) => {
                let now = chrono::Utc::now();
                // One counter update per type in the batch, not per message.
                let mut kinds: Vec<(&str, u64)> = Vec::new();
                for msg in batch {
                    match kinds.iter_mut().find(|(k, _)| *k == msg.kind) {
                        Some((_, n)) => *n += 1,
                        None => kinds.push((&msg.kind, 1)),
                    }
                }
                for (kind, n) in kinds {
                    self.ops
                        .consumed
                        .get_or_create(&MessageLabels {
                            queue: self.queue.queue.clone(),
                            kind: kind.to_string(),
                        })
                        .inc_by(n);
                }
                let age = self.ops.age.get_or_create(&self.queue);
                for msg in batch {
                    let waited = (now - msg.occurred_at).num_microseconds().unwrap_or(i64::MAX);
                    age.observe(waited.max(0) as f64 / 1e6);
                }
            }
            Err(HandleError::Transient(_)) => {
                self.ops
                    .retried
                    .get_or_create(&self.queue)
                    .inc_by(batch.len() as u64);
            }
            Err(HandleError::Permanent(_)) => {}
        }
        result
    }

    async fn dead_lettered(&self, letter: &DeadLetter) -> Result<(), HandleError> {
        self.inner.dead_lettered(letter).await
    }

    fn settled(&self, applied: usize, dead_lettered: usize) {
        self.ops
            .dead_lettered
            .get_or_create(&self.queue)
            .inc_by(dead_lettered as u64);
        self.inner.settled(applied, dead_lettered);
    }
}

/// Samples the outbox backlog and the connection pool now and every
/// `every` until `shutdown`.
pub(crate) async fn sample(
    db: ticketer_db::Db,
    ops: Operations,
    every: Duration,
    shutdown: CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let (mut published, mut duplicates) = (0, 0);
    loop {
        // The database's tally counts from the start of the process; the
        // counters go up by what it gained since the last sample.
        let tally = db.tally();
        let (p, d) = (tally.published.load(Relaxed), tally.duplicates.load(Relaxed));
        ops.published.inc_by(p.saturating_sub(published));
        ops.duplicates.inc_by(d.saturating_sub(duplicates));
        (published, duplicates) = (p, d);
        match ticketer_db::backlog(&db).await {
            Ok((pending, oldest)) => {
                ops.outbox_pending.set(pending);
                let age = oldest.map_or(0.0, |at| {
                    (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1e3
                });
                ops.outbox_oldest.set(age);
            }
            Err(e) => tracing::debug!(error = %e, "outbox backlog not sampled"),
        }
        let pool = db.pool();
        let idle = pool.num_idle() as i64;
        let open = i64::from(pool.size());
        ops.connections
            .get_or_create(&ConnectionLabels { state: "idle" })
            .set(idle);
        ops.connections
            .get_or_create(&ConnectionLabels { state: "in_use" })
            .set((open - idle).max(0));
        ops.connections
            .get_or_create(&ConnectionLabels { state: "waiting" })
            .set(db.tally().waiting.load(Relaxed).max(0));
        ops.connections
            .get_or_create(&ConnectionLabels { state: "max" })
            .set(i64::from(db.max_connections()));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
