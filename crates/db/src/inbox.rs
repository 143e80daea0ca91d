//! The consumer side: a batch of messages applied in one transaction, each
//! recorded in the inbox with its effect so that redelivery does nothing.

use ticketer_bus::{BatchHandler, Envelope, HandleError};
use tracing::Instrument;

use std::collections::HashSet;

use crate::{time, value_rows, AnyConnection, Db};

/// What a service does with one message, inside the batch's transaction.
#[async_trait::async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError>;

    /// Called once the batch's transaction committed (for example to wake
    /// whoever waits for the changes); must not fail or block.
    fn committed(&self, _batch: &[Envelope]) {}
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

#[async_trait::async_trait]
impl<H: MessageHandler> BatchHandler for Inbox<H> {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await.map_err(HandleError::transient)?;
        // One statement records the whole batch; what it returns is what
        // had not been seen before.
        let sql = format!(
            "INSERT INTO inbox (consumer, message_id, processed_at) VALUES {}
             ON CONFLICT DO NOTHING RETURNING message_id",
            value_rows(batch.len(), 3)
        );
        let now = time::now();
        let mut q = sqlx::query_as::<_, (String,)>(&sql);
        for msg in batch {
            q = q.bind(&self.consumer).bind(msg.message_id.to_string()).bind(&now);
        }
        let fresh: HashSet<String> = q
            .fetch_all(&mut *tx)
            .await
            .map_err(HandleError::transient)?
            .into_iter()
            .map(|(id,)| id)
            .collect();
        let mut handled = HashSet::with_capacity(fresh.len());
        for msg in batch {
            let id = msg.message_id.to_string();
            // A duplicate delivery, or the same message twice in this batch.
            if !fresh.contains(&id) || !handled.insert(id) {
                tracing::debug!(message_id = %msg.message_id, "duplicate delivery ignored");
                continue;
            }
            let span = tracing::info_span!(
                "consume",
                consumer = %self.consumer,
                kind = %msg.kind,
                message_id = %msg.message_id,
                correlation_id = %msg.correlation_id,
            );
            ticketer_telemetry::set_remote_parent(&span, msg.traceparent.as_deref());
            self.handler.handle(&mut tx, msg).instrument(span).await?;
        }
        tx.commit().await.map_err(HandleError::transient)?;
        // The handler may have written outbox rows of its own.
        self.db.outbox_written();
        self.handler.committed(batch);
        Ok(())
    }
}
