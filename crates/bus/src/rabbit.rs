//! The RabbitMQ transport (lapin on the tokio runtime).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    processing::{apply, BatchHandler, Outcome},
    topology::{dead_letter_queue, DEAD_LETTER_EXCHANGE, TOPIC_EXCHANGES},
    BusError, Envelope, Outgoing, Subscription,
};

pub struct RabbitBus {
    conn: Connection,
    /// One confirm-mode channel for publishing; confirms are awaited per batch.
    publisher: Mutex<Channel>,
}

impl RabbitBus {
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name("ticketer".into());
        let conn = Connection::connect(url, props).await?;
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for exchange in TOPIC_EXCHANGES {
            channel
                .exchange_declare(exchange, ExchangeKind::Topic, durable, FieldTable::default())
                .await?;
        }
        channel
            .exchange_declare(
                DEAD_LETTER_EXCHANGE,
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        Ok(RabbitBus {
            conn,
            publisher: Mutex::new(channel),
        })
    }

    pub(crate) fn ping(&self) -> Result<(), BusError> {
        if self.conn.status().connected() {
            Ok(())
        } else {
            Err(BusError::Disconnected)
        }
    }

    pub(crate) async fn publish(&self, batch: &[Outgoing]) -> Result<(), BusError> {
        let channel = self.publisher.lock().await;
        let mut confirms = Vec::with_capacity(batch.len());
        for msg in batch {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(msg.message_id.to_string()))
                .with_type(ShortString::from(msg.routing_key.clone()));
            let confirm = channel
                .basic_publish(
                    &msg.exchange,
                    &msg.routing_key,
                    BasicPublishOptions::default(),
                    &msg.body,
                    props,
                )
                .await?;
            confirms.push((msg.message_id, confirm));
        }
        for (id, confirm) in confirms {
            if !confirm.await?.is_ack() {
                return Err(BusError::Nacked(id));
            }
        }
        Ok(())
    }

    async fn declare(&self, channel: &Channel, sub: &Subscription) -> Result<(), BusError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let dlq = dead_letter_queue(&sub.queue);
        channel
            .queue_declare(&dlq, durable, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                &dlq,
                DEAD_LETTER_EXCHANGE,
                &sub.queue,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from(DEAD_LETTER_EXCHANGE)),
        );
        args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(LongString::from(sub.queue.as_str())),
        );
        channel.queue_declare(&sub.queue, durable, args).await?;
        for (exchange, pattern) in &sub.bindings {
            channel
                .queue_bind(
                    &sub.queue,
                    exchange,
                    pattern,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn subscribe(
        &self,
        sub: Subscription,
        handler: Arc<dyn BatchHandler>,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BusError> {
        let setup = self.conn.create_channel().await?;
        self.declare(&setup, &sub).await?;
        let _ = setup.close(200, "declared").await;
        let sub = Arc::new(sub);
        let mut workers = Vec::with_capacity(sub.concurrency);
        for n in 0..sub.concurrency {
            let channel = self.conn.create_channel().await?;
            channel
                .basic_qos(sub.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    &sub.queue,
                    &format!("{}-{}-{n}", sub.queue, uuid::Uuid::new_v4().simple()),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let (sub, handler, shutdown) = (sub.clone(), handler.clone(), shutdown.clone());
            workers.push(tokio::spawn(async move {
                consume(channel, consumer, sub, handler, shutdown).await;
            }));
        }
        Ok(workers)
    }

    pub(crate) async fn queue_depth(&self, queue: &str) -> Result<u32, BusError> {
        let channel = self.conn.create_channel().await?;
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = channel.queue_declare(queue, opts, FieldTable::default()).await?;
        let _ = channel.close(200, "inspected").await;
        Ok(q.message_count())
    }
}

async fn consume(
    channel: Channel,
    mut consumer: lapin::Consumer,
    sub: Arc<Subscription>,
    handler: Arc<dyn BatchHandler>,
    shutdown: CancellationToken,
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
                tracing::error!(queue = %sub.queue, error = %e, "consumer failed");
                break;
            }
            None => break,
        };
        // Take whatever else has already arrived, without waiting for it.
        while batch.len() < sub.batch_size {
            match tokio::time::timeout(Duration::from_millis(1), consumer.next()).await {
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
        let outcomes = apply(handler.as_ref(), &parsed, &sub, &shutdown).await;
        for (d, outcome) in owners.into_iter().zip(outcomes) {
            let sent = match outcome {
                Outcome::Applied => d.acker.ack(BasicAckOptions::default()).await,
                // The queue's dead-letter exchange routes it to `<queue>.dlq`.
                Outcome::DeadLettered(_) => d.acker.nack(nack(false)).await,
                Outcome::Abandoned => d.acker.nack(nack(true)).await,
            };
            if let Err(e) = sent {
                tracing::error!(queue = %sub.queue, error = %e, "could not settle delivery");
                break 'outer;
            }
        }
    }
    // Closing the channel hands every unacked delivery back to the queue.
    let _ = channel.close(200, "consumer stopped").await;
}
