//! The RabbitMQ transport (lapin on the tokio runtime).
//!
//! The connection is re-established on demand: a publish after the broker
//! went away reconnects (the outbox relay retries failed batches), and each
//! consumer worker re-opens its channel and re-declares its queue until it is
//! shut down. Deliveries that were in flight when the connection dropped are
//! redelivered by the broker; the inbox makes that harmless.

use std::{sync::Arc, time::Duration};

use lapin::{
    options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    processing::BatchHandler,
    topology::{dead_letter_queue, DEAD_LETTER_EXCHANGE, TOPIC_EXCHANGES},
    BusError, Outgoing, Subscription,
};

mod consume;
mod dead_letters;

use consume::{consume, START_TIMEOUT};

/// Confirm-mode channels each process publishes on. Several batches can be
/// awaiting their confirms at once (the pipelined outbox relay sends the
/// next batch meanwhile), and the broker serves each channel separately.
const PUBLISH_CHANNELS: usize = 2;

struct Live {
    conn: Arc<Connection>,
    /// Confirm-mode channels for publishing; confirms are awaited per batch.
    publishers: Vec<Channel>,
}

pub struct RabbitBus {
    url: String,
    live: Mutex<Option<Live>>,
    /// Which publishing channel the next batch takes.
    next: std::sync::atomic::AtomicUsize,
}

async fn open(url: &str) -> Result<Live, BusError> {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name("ticketer".into());
    let conn = Connection::connect(url, props).await?;
    let mut publishers = Vec::with_capacity(PUBLISH_CHANNELS);
    for _ in 0..PUBLISH_CHANNELS {
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        publishers.push(channel);
    }
    let publisher = &publishers[0];
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for exchange in TOPIC_EXCHANGES {
        publisher
            .exchange_declare(exchange, ExchangeKind::Topic, durable, FieldTable::default())
            .await?;
    }
    publisher
        .exchange_declare(
            DEAD_LETTER_EXCHANGE,
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    Ok(Live {
        conn: Arc::new(conn),
        publishers,
    })
}

fn usable(live: &Live) -> bool {
    live.conn.status().connected() && live.publishers.iter().all(|c| c.status().connected())
}

impl RabbitBus {
    /// Connects once, so that a wrong URL fails at start-up, and declares
    /// every queue of the topology.
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let mut attempt = 1;
        let live = loop {
            let live = open(url).await?;
            match declare_all(&live.publishers[0]).await {
                Ok(()) => break live,
                Err(e) if attempt < DECLARE_ATTEMPTS && declared_meanwhile(&e) => {
                    tracing::warn!(error = %e, attempt, "a queue was being declared by another process; declaring again");
                    let _ = live.conn.close(0, "declaring again").await;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt as u64)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(RabbitBus {
            url: url.to_string(),
            live: Mutex::new(Some(live)),
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The live connection, reconnecting first if it was lost.
    async fn connection(&self) -> Result<Arc<Connection>, BusError> {
        let mut live = self.live.lock().await;
        if !live.as_ref().is_some_and(usable) {
            tracing::info!("connecting to RabbitMQ");
            *live = Some(open(&self.url).await?);
        }
        Ok(live.as_ref().expect("just connected").conn.clone())
    }

    pub(crate) async fn ping(&self) -> Result<(), BusError> {
        self.connection().await.map(|_| ())
    }

    pub(crate) async fn publish(self: &Arc<Self>, batch: &[Outgoing]) -> Result<(), BusError> {
        self.send(batch).await?.await
    }

    /// Hands `batch` to the broker and returns the wait for its confirms,
    /// so that the caller can send the next batch meanwhile.
    pub(crate) async fn send(self: &Arc<Self>, batch: &[Outgoing]) -> Result<crate::Confirms, BusError> {
        // The lock covers choosing a channel, not waiting for confirms.
        let (conn, channel) = {
            let mut live = self.live.lock().await;
            if !live.as_ref().is_some_and(usable) {
                tracing::info!("reconnecting to RabbitMQ to publish");
                *live = Some(open(&self.url).await?);
            }
            let live = live.as_ref().expect("connected");
            let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (
                live.conn.clone(),
                live.publishers[n % live.publishers.len()].clone(),
            )
        };
        let sent = send_on(&channel, batch).await;
        let bus = self.clone();
        let confirmed = async move {
            let result = match sent {
                Ok(confirms) => {
                    let mut result = Ok(());
                    for (id, confirm) in confirms {
                        match confirm.await {
                            Ok(c) if c.is_ack() => {}
                            Ok(_) => result = Err(BusError::Nacked(id)),
                            Err(e) => result = Err(e.into()),
                        }
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
                Err(e) => Err(e),
            };
            if result.is_err() {
                // Start from a fresh connection next time, unless another
                // publisher already replaced this one.
                let mut live = bus.live.lock().await;
                if live.as_ref().is_some_and(|l| Arc::ptr_eq(&l.conn, &conn)) {
                    *live = None;
                }
            }
            result
        };
        Ok(Box::pin(confirmed))
    }

    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        sub: Subscription,
        handler: Arc<dyn BatchHandler>,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BusError> {
        // Declare now, so that a broken topology fails at start-up.
        let setup = self.connection().await?.create_channel().await?;
        declare(&setup, &sub).await?;
        let _ = setup.close(200, "declared").await;
        let sub = Arc::new(sub);
        Ok((0..sub.concurrency)
            .map(|n| {
                let (bus, sub, handler, shutdown) =
                    (self.clone(), sub.clone(), handler.clone(), shutdown.clone());
                tokio::spawn(async move { bus.supervise(n, sub, handler, shutdown).await })
            })
            .collect())
    }

    /// Keeps one consumer worker running until shutdown, reconnecting with
    /// backoff whenever its channel or connection is lost.
    async fn supervise(
        &self,
        n: usize,
        sub: Arc<Subscription>,
        handler: Arc<dyn BatchHandler>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let started = tokio::time::timeout(START_TIMEOUT, self.start_consumer(n, &sub)).await;
            match started.unwrap_or(Err(BusError::Timeout("starting a consumer"))) {
                Ok((channel, consumer)) => {
                    backoff = Duration::from_millis(200);
                    consume(channel, consumer, &sub, handler.as_ref(), &shutdown).await;
                }
                Err(e) => tracing::warn!(queue = %sub.queue, error = %e, "cannot consume yet; retrying"),
            }
            if shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    async fn start_consumer(
        &self,
        n: usize,
        sub: &Subscription,
    ) -> Result<(Channel, lapin::Consumer), BusError> {
        let channel = self.connection().await?.create_channel().await?;
        declare(&channel, sub).await?;
        channel
            .basic_qos(sub.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("{}-{}-{n}", sub.queue, uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                &sub.queue,
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    }

    pub(crate) async fn queue_depth(&self, queue: &str) -> Result<u32, BusError> {
        let channel = self.connection().await?.create_channel().await?;
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = channel.queue_declare(queue, opts, FieldTable::default()).await?;
        let _ = channel.close(200, "inspected").await;
        Ok(q.message_count())
    }
}

/// Sends every message of `batch` on `channel`; the confirms come later.
async fn send_on(
    channel: &Channel,
    batch: &[Outgoing],
) -> Result<Vec<(uuid::Uuid, lapin::publisher_confirm::PublisherConfirm)>, BusError> {
    // lapin queues a message's frames (and numbers it for its confirm) on a
    // publish's first poll, then waits for its I/O thread to write them.
    // Awaited one by one, every message took a hand-off to that thread and
    // back, and its own write to the socket. Polled together, in the
    // batch's order, the whole batch is queued first and leaves in one go.
    let mut sending: Vec<_> = batch
        .iter()
        .map(|msg| {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(msg.message_id.to_string()))
                .with_type(ShortString::from(msg.routing_key.clone()));
            Box::pin(channel.basic_publish(
                &msg.exchange,
                &msg.routing_key,
                BasicPublishOptions::default(),
                &msg.body,
                props,
            ))
        })
        .collect();
    let mut sent: Vec<Option<lapin::Result<lapin::publisher_confirm::PublisherConfirm>>> =
        batch.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        // Index order on every pass: the first pass queues the messages in
        // the batch's order (futures' join_all may poll a long list in any).
        for (publish, done) in sending.iter_mut().zip(sent.iter_mut()) {
            if done.is_none() {
                if let std::task::Poll::Ready(r) = std::future::Future::poll(publish.as_mut(), cx) {
                    *done = Some(r);
                }
            }
        }
        if sent.iter().all(Option::is_some) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    batch
        .iter()
        .zip(sent)
        .map(|(msg, r)| Ok((msg.message_id, r.expect("every publish finished")?)))
        .collect()
}

/// How often start-up declares the topology before giving up on a queue
/// that another process is declaring at the same time.
const DECLARE_ATTEMPTS: u32 = 5;

async fn declare_all(channel: &Channel) -> Result<(), BusError> {
    for spec in crate::topology::QUEUES {
        declare(channel, &spec.subscription()).await?;
    }
    Ok(())
}

/// RabbitMQ's answer when several processes declare the same durable queue
/// of a fresh vhost at once (seven services starting together): one may
/// hear NOT_FOUND ("home node ... is down or inaccessible") while another's
/// declaration is still starting the queue, and its channel is closed.
/// Declared again a moment later, on a new connection, the queue is there.
fn declared_meanwhile(e: &BusError) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        e,
        BusError::Broker(lapin::Error::ProtocolError(amqp))
            if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
    )
}

/// The queue, its dead-letter queue, and its bindings. Idempotent.
async fn declare(channel: &Channel, sub: &Subscription) -> Result<(), BusError> {
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

#[cfg(test)]
mod tests {
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};

    use super::*;

    fn refused(kind: AMQPSoftError) -> BusError {
        let message = "home node 'rabbit@localhost' of durable queue 'q.dlq' is down or inaccessible";
        BusError::Broker(lapin::Error::ProtocolError(AMQPError::new(
            AMQPErrorKind::Soft(kind),
            message.into(),
        )))
    }

    /// Only the broker's NOT_FOUND for a queue being declared elsewhere is
    /// worth declaring again; a refusal of access or a lost connection is
    /// reported at once.
    #[test]
    fn only_a_queue_declared_meanwhile_is_declared_again() {
        assert!(declared_meanwhile(&refused(AMQPSoftError::NOTFOUND)));
        assert!(!declared_meanwhile(&refused(AMQPSoftError::ACCESSREFUSED)));
        assert!(!declared_meanwhile(&refused(AMQPSoftError::PRECONDITIONFAILED)));
        assert!(!declared_meanwhile(&BusError::Disconnected));
    }
}
