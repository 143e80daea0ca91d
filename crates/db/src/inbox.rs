//! The consumer side: a batch of messages applied in one transaction, each
//! recorded in the inbox with its effect so that redelivery does nothing.

use ticketer_bus::{BatchHandler, DeadLetter, Envelope, HandleError};
use tracing::Instrument;

use std::collections::HashSet;

use crate::{lists::array_literal, time, value_rows, AnyConnection, Db, DbError, Dialect};

/// What a service does with one message, inside the batch's transaction.
#[async_trait::async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError>;

    /// Applies a batch's new messages, in order. One at a time unless the
    /// handler overrides it to read and write the rows they share (one
    /// event's inventory, many bookings) a statement per batch instead of
    /// a statement per message. An error undoes the whole batch; the
    /// consumer then applies its messages one by one.
    async fn handle_all(&self, tx: &mut AnyConnection, msgs: &[&Envelope]) -> Result<(), HandleError> {
        for msg in msgs {
            self.handle(tx, msg).instrument(handle_span(msg)).await?;
        }
        Ok(())
    }

    /// Called once the batch's transaction committed (for example to wake
    /// whoever waits for the changes); must not fail or block.
    fn committed(&self, _batch: &[&Envelope]) {}
}

/// The span of one message's consumption, a child of the span that sent
/// it; open until the batch it came in is done.
fn consume_span(consumer: &str, msg: &Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        consumer = %consumer,
        kind = %msg.kind,
        message_id = %msg.message_id,
        correlation_id = %msg.correlation_id,
    );
    ticketer_telemetry::set_remote_parent(&span, msg.traceparent.as_deref());
    span
}

/// Every message joins its own trace, whatever batch it came in: its
/// consume span (returned, to be kept open until it is handled) is a child
/// of the span that sent it, and the copy returned carries that span's
/// context, which what it causes carries on (Envelope::caused_by).
pub fn traced(consumer: &str, msgs: &[&Envelope]) -> (Vec<tracing::Span>, Vec<Envelope>) {
    msgs.iter().map(|m| traced_one(consumer, m)).unzip()
}

/// [`traced`] for one message.
fn traced_one(consumer: &str, msg: &Envelope) -> (tracing::Span, Envelope) {
    let span = consume_span(consumer, msg);
    let copy = Envelope {
        traceparent: ticketer_telemetry::traceparent_of(&span).or_else(|| msg.traceparent.clone()),
        ..msg.clone()
    };
    (span, copy)
}

/// One message handled on its own, under its consume span.
fn handle_span(msg: &Envelope) -> tracing::Span {
    let span = tracing::info_span!("handle", kind = %msg.kind);
    ticketer_telemetry::set_remote_parent(&span, msg.traceparent.as_deref());
    span
}

/// Wraps a [`MessageHandler`] with the inbox and the batch transaction.
pub struct Inbox<H> {
    db: Db,
    consumer: String,
    handler: H,
}

impl<H: MessageHandler> Inbox<H> {
    /// `consumer` names the inbox; use the queue name.
    pub fn new(db: Db, consumer: &str, handler: H) -> Self {
        Inbox {
            db,
            consumer: consumer.to_string(),
            handler,
        }
    }
}

impl<H: MessageHandler> Inbox<H> {
    /// Applies messages that came, or would have come, from several queues
    /// in one transaction: each is recorded in the inbox under its queue's
    /// name (`batch`: the queue and the message), so that one message heard
    /// both ways is applied once. The handler sees them in this order.
    pub async fn handle_from(&self, batch: &[(&str, Envelope)]) -> Result<(), HandleError> {
        let consumers: Vec<&str> = batch.iter().map(|(c, _)| *c).collect();
        let msgs: Vec<&Envelope> = batch.iter().map(|(_, m)| m).collect();
        self.apply(&consumers, &msgs).await
    }

    /// `msgs[i]` recorded under `consumers[i]`, and the new ones handled,
    /// in one transaction.
    async fn apply(&self, consumers: &[&str], msgs: &[&Envelope]) -> Result<(), HandleError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        // One statement records the whole batch; what it returns is what
        // had not been seen before.
        let now = time::now();
        let recorded: Vec<(String, String)> = match Dialect::of(&tx) {
            // One text for every batch size (see `lists`).
            Dialect::Postgres => {
                sqlx::query_as(
                    "INSERT INTO inbox (consumer, message_id, processed_at)
                     SELECT c, m, $3 FROM unnest($1::text[], $2::text[]) AS t (c, m)
                     ON CONFLICT DO NOTHING RETURNING consumer, message_id",
                )
                .bind(array_literal(consumers.iter()))
                .bind(array_literal(msgs.iter().map(|m| m.message_id)))
                .bind(&now)
                .fetch_all(&mut *tx)
                .await
            }
            Dialect::Sqlite => {
                let sql = format!(
                    "INSERT INTO inbox (consumer, message_id, processed_at) VALUES {}
                     ON CONFLICT DO NOTHING RETURNING consumer, message_id",
                    value_rows(msgs.len(), 3)
                );
                let mut q = sqlx::query_as(&sql);
                for (consumer, msg) in consumers.iter().zip(msgs) {
                    q = q.bind(*consumer).bind(msg.message_id.to_string()).bind(&now);
                }
                q.fetch_all(&mut *tx).await
            }
        }
        .map_err(DbError::from)?;
        let fresh: HashSet<(String, String)> = recorded.into_iter().collect();
        let mut handled = HashSet::with_capacity(fresh.len());
        let mut duplicates = 0u64;
        let mut new = Vec::with_capacity(fresh.len());
        let mut spans = Vec::with_capacity(fresh.len());
        for (consumer, msg) in consumers.iter().zip(msgs) {
            let seen = (consumer.to_string(), msg.message_id.to_string());
            // A duplicate delivery, or the same message twice in this batch.
            if !fresh.contains(&seen) || !handled.insert(seen) {
                tracing::debug!(message_id = %msg.message_id, "duplicate delivery ignored");
                duplicates += 1;
                continue;
            }
            let (span, copy) = traced_one(consumer, msg);
            spans.push(span);
            new.push(copy);
        }
        let traced: Vec<&Envelope> = new.iter().collect();
        let span = tracing::info_span!("consume_batch", consumer = %self.consumer, messages = new.len());
        self.handler.handle_all(&mut tx, &traced).instrument(span).await?;
        tx.commit().await.map_err(DbError::from)?;
        drop(spans);
        self.db
            .tally()
            .duplicates
            .fetch_add(duplicates, std::sync::atomic::Ordering::Relaxed);
        // The handler may have written outbox rows of its own.
        self.db.outbox_written();
        self.handler.committed(msgs);
        Ok(())
    }
}

#[async_trait::async_trait]
impl<H: MessageHandler> BatchHandler for Inbox<H> {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        let consumers = vec![self.consumer.as_str(); batch.len()];
        let msgs: Vec<&Envelope> = batch.iter().collect();
        self.apply(&consumers, &msgs).await
    }

    /// Kept beside the service's data, named after the queue.
    async fn dead_lettered(&self, letter: &DeadLetter) -> Result<(), HandleError> {
        crate::dead_letters::keep(&self.db, &self.consumer, letter)
            .await
            .map_err(HandleError::from)
    }
}
