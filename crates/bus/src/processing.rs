//! How a consumer applies a batch, shared by both transports: try the whole
//! batch at once; if it fails, apply its messages one by one so that one bad
//! message cannot hold back the others, retrying with backoff and
//! dead-lettering what still fails.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Envelope, Subscription};

#[derive(Debug, Clone, thiserror::Error)]
pub enum HandleError {
    /// Will never succeed (bad payload, broken invariant): dead-letter now.
    #[error("permanent: {0}")]
    Permanent(String),
    /// May succeed later (database busy, connection lost): retry.
    #[error("transient: {0}")]
    Transient(String),
}

/// An id read back that is not one (our own records hold only ids we
/// wrote): no retry will make it one.
impl From<uuid::Error> for HandleError {
    fn from(e: uuid::Error) -> Self {
        HandleError::Permanent(format!("not an id: {e}"))
    }
}

/// Applies a batch of messages. Must be all-or-nothing: when it returns an
/// error, none of the batch's effects may remain.
#[async_trait::async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError>;

    /// Keeps a message given up on, for a transport without a durable
    /// dead-letter queue (the in-process bus); the message counts as settled
    /// only once this succeeded. Nothing to do by default.
    async fn dead_lettered(&self, _letter: &DeadLetter) -> Result<(), HandleError> {
        Ok(())
    }

    /// Told, on either transport, how a delivered batch ended: how many of
    /// its messages were applied and how many given up on (metrics).
    /// Nothing by default.
    fn settled(&self, _applied: usize, _dead_lettered: usize) {}
}

/// A message that could not be applied, where it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Applied,
    DeadLettered(String),
    /// Shutdown came first: leave the message for redelivery.
    Abandoned,
}

pub(crate) async fn apply(
    handler: &dyn BatchHandler,
    batch: &[Envelope],
    sub: &Subscription,
    shutdown: &CancellationToken,
) -> Vec<Outcome> {
    if batch.len() > 1 {
        match handler.handle_batch(batch).await {
            Ok(()) => {
                handler.settled(batch.len(), 0);
                return vec![Outcome::Applied; batch.len()];
            }
            Err(e) => tracing::debug!(queue = %sub.queue, error = %e, "batch failed; applying one by one"),
        }
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    for msg in batch {
        outcomes.push(apply_one(handler, msg, sub, shutdown).await);
    }
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    handler.settled(
        count(|o| *o == Outcome::Applied),
        count(|o| matches!(o, Outcome::DeadLettered(_))),
    );
    outcomes
}

async fn apply_one(
    handler: &dyn BatchHandler,
    msg: &Envelope,
    sub: &Subscription,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut delay = sub.backoff;
    for attempt in 1..=sub.max_attempts {
        match handler.handle_batch(std::slice::from_ref(msg)).await {
            Ok(()) => return Outcome::Applied,
            Err(HandleError::Permanent(reason)) => {
                tracing::error!(queue = %sub.queue, message_id = %msg.message_id, kind = %msg.kind, %reason, "dead-lettering poison message");
                return Outcome::DeadLettered(reason);
            }
            Err(HandleError::Transient(reason)) if attempt == sub.max_attempts => {
                tracing::error!(queue = %sub.queue, message_id = %msg.message_id, kind = %msg.kind, %reason, attempt, "dead-lettering after retries");
                return Outcome::DeadLettered(reason);
            }
            Err(HandleError::Transient(reason)) => {
                tracing::warn!(queue = %sub.queue, message_id = %msg.message_id, %reason, attempt, "retrying message");
                tokio::select! {
                    _ = shutdown.cancelled() => return Outcome::Abandoned,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    Outcome::Abandoned
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Fails any batch containing a message of kind "Bad"; counts calls.
    struct Picky {
        transient: bool,
        calls: Mutex<Vec<usize>>,
        /// What `settled` was told: (applied, dead-lettered) per batch.
        told: Mutex<Vec<(usize, usize)>>,
    }

    #[async_trait::async_trait]
    impl BatchHandler for Picky {
        async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
            self.calls.lock().unwrap().push(batch.len());
            if batch.iter().any(|m| m.kind == "Bad") {
                return Err(if self.transient {
                    HandleError::Transient("busy".into())
                } else {
                    HandleError::Permanent("bad".into())
                });
            }
            Ok(())
        }

        fn settled(&self, applied: usize, dead_lettered: usize) {
            self.told.lock().unwrap().push((applied, dead_lettered));
        }
    }

    fn sub() -> Subscription {
        Subscription::new("q").retries(3, Duration::from_millis(1))
    }

    /// A stored id that is not one is a broken record: dead-lettered at
    /// once rather than retried.
    #[test]
    fn an_unparsable_id_is_permanent() {
        let e: HandleError = uuid::Uuid::parse_str("not-a-uuid").unwrap_err().into();
        assert!(
            matches!(e, HandleError::Permanent(ref m) if m.contains("not an id")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn good_batch_is_applied_in_one_call() {
        let h = Picky {
            transient: false,
            calls: Mutex::default(),
            told: Mutex::default(),
        };
        let batch = vec![Envelope::new("A", &1).unwrap(), Envelope::new("B", &2).unwrap()];
        let out = apply(&h, &batch, &sub(), &CancellationToken::new()).await;
        assert_eq!(out, vec![Outcome::Applied, Outcome::Applied]);
        assert_eq!(*h.calls.lock().unwrap(), vec![2]);
        assert_eq!(*h.told.lock().unwrap(), vec![(2, 0)]);
    }

    #[tokio::test]
    async fn poison_is_isolated_and_dead_lettered_without_retry() {
        let h = Picky {
            transient: false,
            calls: Mutex::default(),
            told: Mutex::default(),
        };
        let batch = vec![
            Envelope::new("A", &1).unwrap(),
            Envelope::new("Bad", &2).unwrap(),
            Envelope::new("C", &3).unwrap(),
        ];
        let out = apply(&h, &batch, &sub(), &CancellationToken::new()).await;
        assert_eq!(
            out,
            vec![
                Outcome::Applied,
                Outcome::DeadLettered("bad".into()),
                Outcome::Applied
            ]
        );
        assert_eq!(*h.calls.lock().unwrap(), vec![3, 1, 1, 1]);
        assert_eq!(*h.told.lock().unwrap(), vec![(2, 1)], "told once per batch");
    }

    #[tokio::test]
    async fn transient_failures_retry_then_dead_letter() {
        let h = Picky {
            transient: true,
            calls: Mutex::default(),
            told: Mutex::default(),
        };
        let out = apply(
            &h,
            &[Envelope::new("Bad", &1).unwrap()],
            &sub(),
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(out, vec![Outcome::DeadLettered("busy".into())]);
        assert_eq!(h.calls.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn shutdown_abandons_instead_of_dead_lettering() {
        let h = Picky {
            transient: true,
            calls: Mutex::default(),
            told: Mutex::default(),
        };
        let token = CancellationToken::new();
        token.cancel();
        let out = apply(&h, &[Envelope::new("Bad", &1).unwrap()], &sub(), &token).await;
        assert_eq!(out, vec![Outcome::Abandoned]);
    }
}
