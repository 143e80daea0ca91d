//! Listing and replaying a queue's dead letters on RabbitMQ, where they wait
//! in `<queue>.dlq` (fed by the queue's dead-letter exchange).

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};

use super::RabbitBus;
use crate::{processing::DeadLetter, topology::dead_letter_queue, BusError};

impl RabbitBus {
    /// The messages waiting in `queue`'s dead-letter queue, left there.
    pub(crate) async fn peek_dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>, BusError> {
        let channel = self.connection().await?.create_channel().await?;
        let dlq = dead_letter_queue(queue);
        let mut letters = Vec::new();
        // Everything is taken unacknowledged, then handed back at once, so
        // that the same message is not taken twice while listing.
        let mut taken = Vec::new();
        while let Some(m) = channel.basic_get(&dlq, BasicGetOptions { no_ack: false }).await? {
            letters.push(letter_of(queue, &m.delivery));
            taken.push(m.delivery.delivery_tag);
        }
        if let Some(last) = taken.last() {
            channel
                .basic_nack(
                    *last,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await?;
        }
        let _ = channel.close(200, "listed").await;
        Ok(letters)
    }

    /// Moves the messages waiting in `queue`'s dead-letter queue back to
    /// `queue` (through the default exchange, so no other queue gets a
    /// copy), each acknowledged only once the broker confirmed its return;
    /// how many. Only those waiting when asked: a message the consumer
    /// gives up on again meanwhile lands back in the dead-letter queue and
    /// waits for the next replay, instead of going round again (it was
    /// counted twice, or more, when the consumer was quick).
    pub(crate) async fn replay_dead_letters(&self, queue: &str) -> Result<usize, BusError> {
        let dlq = dead_letter_queue(queue);
        let waiting = self.queue_depth(&dlq).await? as usize;
        let channel = self.connection().await?.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut moved = 0;
        while moved < waiting {
            let Some(m) = channel.basic_get(&dlq, BasicGetOptions { no_ack: false }).await? else {
                break;
            };
            let d = m.delivery;
            let confirm = channel
                .basic_publish(
                    "",
                    queue,
                    BasicPublishOptions::default(),
                    &d.data,
                    d.properties.clone(),
                )
                .await?
                .await?;
            if !confirm.is_ack() {
                return Err(BusError::Nacked(uuid::Uuid::nil()));
            }
            channel
                .basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await?;
            moved += 1;
        }
        let _ = channel.close(200, "replayed").await;
        Ok(moved)
    }
}

/// A dead-lettered delivery as the bus describes it: where it was first
/// published (from the broker's x-death record) and why it died.
fn letter_of(queue: &str, d: &lapin::message::Delivery) -> DeadLetter {
    let death = d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
        .and_then(|v| v.as_array())
        .and_then(|a| a.as_slice().first())
        .and_then(|v| v.as_field_table());
    let field = |name: &str| {
        death
            .and_then(|t| t.inner().get(name))
            .and_then(|v| v.as_long_string().map(|s| s.to_string()))
    };
    let original_key = death
        .and_then(|t| t.inner().get("routing-keys"))
        .and_then(|v| v.as_array())
        .and_then(|a| a.as_slice().first())
        .and_then(|v| v.as_long_string().map(|s| s.to_string()));
    DeadLetter {
        exchange: field("exchange").unwrap_or_default(),
        routing_key: original_key.unwrap_or_else(|| d.routing_key.to_string()),
        body: d.data.clone(),
        reason: field("reason").map_or_else(
            || format!("dead-lettered from {queue}"),
            |r| format!("{r} in {queue}"),
        ),
    }
}
