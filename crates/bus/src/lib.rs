//! The message bus.
//!
//! Two transports behind one [`Bus`]: RabbitMQ in production (durable topic
//! exchanges, a dead-letter queue per queue, publisher confirms, manual acks)
//! and an in-process bus for the embedded mode. Both deliver at least once and
//! hand consumers batches, so that a consumer can apply a whole batch in one
//! database transaction and ack it after the commit.
//!
//! Publishing goes through the outbox relay in `ticketer-db`, never directly
//! from request handlers.

mod envelope;
mod inproc;
mod processing;
mod rabbit;
pub mod topology;

use std::sync::Arc;

pub use envelope::{Envelope, Outgoing};
pub use inproc::InProcessBus;
pub use processing::{BatchHandler, DeadLetter, HandleError};
pub use rabbit::RabbitBus;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
pub use topology::Subscription;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused message {0}")]
    Nacked(uuid::Uuid),
    #[error("message {0} was not settled by every consumer")]
    NotSettled(uuid::Uuid),
    #[error("the broker connection is down")]
    Disconnected,
    #[error("not on this bus: {0}")]
    Unsupported(&'static str),
    #[error("the broker did not answer in time: {0}")]
    Timeout(&'static str),
}

/// The wait for a sent batch's confirms.
pub type Confirms = futures::future::BoxFuture<'static, Result<(), BusError>>;

/// A connected bus; cheap to clone.
#[derive(Clone)]
pub enum Bus {
    InProcess(Arc<InProcessBus>),
    Rabbit(Arc<RabbitBus>),
}

impl Bus {
    /// RabbitMQ when `amqp_url` is set, else a fresh in-process bus.
    pub async fn connect(amqp_url: Option<&str>) -> Result<Bus, BusError> {
        match amqp_url {
            Some(url) => Ok(Bus::Rabbit(Arc::new(RabbitBus::connect(url).await?))),
            None => Ok(Bus::in_process()),
        }
    }

    /// Like [`Bus::connect`], but an in-process bus starts gated.
    pub async fn connect_gated(amqp_url: Option<&str>) -> Result<Bus, BusError> {
        match amqp_url {
            Some(url) => Ok(Bus::Rabbit(Arc::new(RabbitBus::connect(url).await?))),
            None => Ok(Bus::in_process_gated()),
        }
    }

    pub fn in_process() -> Bus {
        Self::with_topology(InProcessBus::default())
    }

    /// An in-process bus that holds every publish until [`Bus::open`].
    pub fn in_process_gated() -> Bus {
        Self::with_topology(InProcessBus::gated())
    }

    /// Lets a gated in-process bus publish; nothing for RabbitMQ.
    pub fn open(&self) {
        if let Bus::InProcess(bus) = self {
            bus.open();
        }
    }

    fn with_topology(bus: InProcessBus) -> Bus {
        for spec in topology::QUEUES {
            bus.declare(spec.name, &spec.subscription().bindings);
        }
        Bus::InProcess(Arc::new(bus))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Bus::InProcess(_) => "in-process",
            Bus::Rabbit(_) => "rabbitmq",
        }
    }

    /// Publishes a batch; returns once every message is safely accepted
    /// (broker confirms, or in-process: every bound consumer has settled it).
    pub async fn publish(&self, batch: &[Outgoing]) -> Result<(), BusError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            Bus::InProcess(bus) => bus.publish(batch).await,
            Bus::Rabbit(bus) => bus.publish(batch).await,
        }
    }

    /// Hands a batch over and returns the wait for it to be safely accepted,
    /// so the next batch can go meanwhile. RabbitMQ: the messages are sent
    /// now, the confirms awaited later. In process: everything happens in
    /// the returned wait.
    pub async fn send(&self, batch: Vec<Outgoing>) -> Result<Confirms, BusError> {
        match self {
            Bus::InProcess(bus) => {
                let bus = bus.clone();
                Ok(Box::pin(async move {
                    if batch.is_empty() {
                        return Ok(());
                    }
                    bus.publish(&batch).await
                }))
            }
            Bus::Rabbit(bus) => bus.send(&batch).await,
        }
    }

    /// Declares the queue (and its dead-letter queue), binds it and starts
    /// `sub.concurrency` workers feeding `handler` until `shutdown`.
    pub async fn subscribe(
        &self,
        sub: Subscription,
        handler: Arc<dyn BatchHandler>,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BusError> {
        match self {
            Bus::InProcess(bus) => Ok(bus.subscribe(sub, handler, shutdown)),
            Bus::Rabbit(bus) => bus.subscribe(sub, handler, shutdown).await,
        }
    }

    /// Messages waiting in `queue`'s dead-letter queue.
    pub async fn dead_letter_count(&self, queue: &str) -> Result<u32, BusError> {
        match self {
            Bus::InProcess(bus) => Ok(bus.dead_letters(queue).len() as u32),
            Bus::Rabbit(bus) => bus.queue_depth(&topology::dead_letter_queue(queue)).await,
        }
    }

    /// Messages ready in `queue` (not those delivered and not yet acked);
    /// the in-process bus keeps none once its consumer took them.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BusError> {
        match self {
            Bus::InProcess(bus) => Ok(bus.queued(queue) as u32),
            Bus::Rabbit(bus) => bus.queue_depth(queue).await,
        }
    }

    /// The dead letters of `queue` still waiting: RabbitMQ's `<queue>.dlq`,
    /// left in place; in process, those seen since start (the consumer's
    /// database keeps them for good: `ticketer_db::dead_letters`).
    pub async fn peek_dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>, BusError> {
        match self {
            Bus::InProcess(bus) => Ok(bus.dead_letters(queue)),
            Bus::Rabbit(bus) => bus.peek_dead_letters(queue).await,
        }
    }

    /// Sends `queue`'s dead letters back to it, once each; how many. Only
    /// RabbitMQ holds them itself; in process they are replayed from the
    /// consumer's database (`ticketer_db::dead_letters::replay`).
    pub async fn replay_dead_letters(&self, queue: &str) -> Result<usize, BusError> {
        match self {
            Bus::InProcess(_) => Err(BusError::Unsupported(
                "the in-process bus keeps dead letters in the consuming service's database",
            )),
            Bus::Rabbit(bus) => bus.replay_dead_letters(queue).await,
        }
    }

    pub async fn ping(&self) -> Result<(), BusError> {
        match self {
            Bus::InProcess(_) => Ok(()),
            Bus::Rabbit(bus) => bus.ping().await,
        }
    }
}
