//! One consumer worker's loop: deliveries gathered into batches, applied,
//! then acknowledged, retried later or dead-lettered.

use std::time::Duration;

use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicNackOptions},
    Channel,
};
use tokio_util::sync::CancellationToken;

use crate::{
    processing::{apply, BatchHandler, Outcome},
    Envelope, Subscription,
};

/// How long a consumer's channel may take to close, and a new consumer to
/// start (connect, declare, subscribe), before the worker gives up on it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies deliveries until shutdown or until the channel fails.
pub(super) async fn consume(
    channel: Channel,
    mut consumer: lapin::Consumer,
    sub: &Subscription,
    handler: &dyn BatchHandler,
    shutdown: &CancellationToken,
) {
    let nack = |requeue| BasicNackOptions {
        requeue,
        multiple: false,
    };
    'outer: loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            d = consumer.next() => d,
        };
        let mut batch = match first {
            Some(Ok(d)) => vec![d],
            Some(Err(e)) => {
                tracing::warn!(queue = %sub.queue, error = %e, "consumer channel lost");
                break;
            }
            None => break,
        };
        // Take whatever else has already arrived, without waiting for it;
        // or, where the queue's effects may wait, what arrives meanwhile.
        let gathered = tokio::time::Instant::now() + sub.batch_wait;
        while batch.len() < sub.batch_size {
            let until = gathered.max(tokio::time::Instant::now() + Duration::from_millis(1));
            match tokio::time::timeout_at(until, consumer.next()).await {
                Ok(Some(Ok(d))) => batch.push(d),
                _ => break,
            }
        }

        let mut parsed = Vec::with_capacity(batch.len());
        let mut owners = Vec::with_capacity(batch.len());
        for d in batch {
            match Envelope::from_bytes(&d.data) {
                Ok(env) => {
                    parsed.push(env);
                    owners.push(d);
                }
                Err(e) => {
                    tracing::error!(queue = %sub.queue, error = %e, "dead-lettering undecodable message");
                    if d.acker.nack(nack(false)).await.is_err() {
                        break 'outer;
                    }
                }
            }
        }
        let outcomes = apply(handler, &parsed, sub, shutdown).await;
        // The usual case: everything applied. One ack settles the batch
        // (this worker's channel has nothing else unsettled).
        if outcomes.iter().all(|o| *o == Outcome::Applied) {
            if let Some(last) = owners.last() {
                let all = BasicAckOptions { multiple: true };
                if let Err(e) = last.acker.ack(all).await {
                    tracing::warn!(queue = %sub.queue, error = %e, "could not settle deliveries; they will be redelivered");
                    break 'outer;
                }
            }
            continue;
        }
        for (d, outcome) in owners.into_iter().zip(outcomes) {
            let sent = match outcome {
                Outcome::Applied => d.acker.ack(BasicAckOptions::default()).await,
                // The queue's dead-letter exchange routes it to `<queue>.dlq`.
                Outcome::DeadLettered(_) => d.acker.nack(nack(false)).await,
                Outcome::Abandoned => d.acker.nack(nack(true)).await,
            };
            if let Err(e) = sent {
                tracing::warn!(queue = %sub.queue, error = %e, "could not settle delivery; it will be redelivered");
                break 'outer;
            }
        }
    }
    // Closing the channel hands every unacked delivery back to the queue
    // (a dead connection has done so already). On a connection that died
    // under a paused or busy process the close may never be answered: the
    // worker must not wait on it, or the queue stays unconsumed for good.
    if tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "consumer stopped"))
        .await
        .is_err()
    {
        tracing::warn!(queue = %sub.queue, "the channel did not close; consuming again on a new one");
    }
}
