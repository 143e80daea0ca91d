//! A dead letter survives a restart of its consumer and replays once: on
//! SQLite with the in-process bus (kept in the consumer's database) always,
//! and on PostgreSQL with RabbitMQ (kept in `<queue>.dlq`) when the servers
//! are set.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use ticketer_bus::{Bus, Envelope, HandleError, Subscription};
use ticketer_db::{
    dead_letters, enqueue, AnyConnection, Db, Inbox, MessageHandler, Migration, Outbound, OutboxRelay,
};
use ticketer_testkit::TestDatabase;
use ticketer_testkit::TestVhost;
use tokio_util::sync::CancellationToken;

const EXCHANGE: &str = "ticketer.events";
const QUEUE: &str = "test.dead_letters";

const CONSUMER_SCHEMA: &[Migration] = &[Migration::portable(
    1,
    "applied",
    "CREATE TABLE applied (message_id TEXT NOT NULL)",
)];

/// Refuses every message for good until cured (a fixed deploy), then
/// records what it applies.
struct Curable(Arc<AtomicBool>);

#[async_trait::async_trait]
impl MessageHandler for Curable {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        if !self.0.load(Ordering::SeqCst) {
            return Err(HandleError::Permanent("this version cannot apply it".into()));
        }
        sqlx::query("INSERT INTO applied (message_id) VALUES ($1)")
            .bind(msg.message_id.to_string())
            .execute(tx)
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))?;
        Ok(())
    }
}

async fn subscribe(bus: &Bus, consumer: &Db, cured: &Arc<AtomicBool>, shutdown: &CancellationToken) {
    let sub = Subscription::new(QUEUE)
        .bind(EXCHANGE, "Unfixable")
        .retries(2, Duration::from_millis(5));
    let inbox = Inbox::new(consumer.clone(), QUEUE, Curable(cured.clone()));
    bus.subscribe(sub, Arc::new(inbox), shutdown.clone())
        .await
        .unwrap();
}

fn relay(db: &Db, bus: &Bus, shutdown: &CancellationToken) {
    let relay = OutboxRelay::new(db.clone(), bus.clone(), 100, Duration::from_millis(20));
    tokio::spawn(relay.run(shutdown.clone()));
}

async fn applied(consumer: &Db) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM applied")
        .fetch_one(consumer.pool())
        .await
        .unwrap();
    n
}

/// Dead letters of the queue not replayed yet: RabbitMQ's, or those kept
/// in the consumer's database.
async fn waiting(real: bool, bus: &Bus, consumer: &Db) -> usize {
    if real {
        bus.peek_dead_letters(QUEUE).await.unwrap().len()
    } else {
        dead_letters::waiting(consumer, QUEUE).await.unwrap().len()
    }
}

async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A producer's and a consumer's databases, migrated, on SQLite with the
/// in-process bus, or on PostgreSQL with a fresh RabbitMQ vhost (None when
/// those servers are not set).
struct Pair {
    producer: Db,
    consumer: Db,
    consumer_db: TestDatabase,
    vhost: Option<TestVhost>,
    _producer_db: TestDatabase,
}

impl Pair {
    async fn start(real: bool, label: &str) -> Option<Pair> {
        let (producer_db, consumer_db, vhost) = if real {
            let (Some(pg), Some(amqp)) = (ticketer_testkit::postgres_url(), ticketer_testkit::amqp_url())
            else {
                ticketer_testkit::skip_test(
                    "PostgreSQL/RabbitMQ dead-letter test",
                    "TICKETER_TEST_POSTGRES_URL and TICKETER_TEST_AMQP_URL",
                );
                return None;
            };
            (
                TestDatabase::postgres(&pg, &format!("{label}_producer"))
                    .await
                    .unwrap(),
                TestDatabase::postgres(&pg, &format!("{label}_consumer"))
                    .await
                    .unwrap(),
                Some(TestVhost::create(&amqp).expect("vhost")),
            )
        } else {
            (TestDatabase::sqlite(), TestDatabase::sqlite(), None)
        };
        let producer = producer_db.connect().await.unwrap();
        producer.migrate("producer", &[]).await.unwrap();
        let consumer = consumer_db.connect().await.unwrap();
        consumer.migrate("consumer", CONSUMER_SCHEMA).await.unwrap();
        Some(Pair {
            producer,
            consumer,
            consumer_db,
            vhost,
            _producer_db: producer_db,
        })
    }

    /// A bus connection: to the vhost, or a fresh in-process bus.
    async fn bus(&self) -> Bus {
        match &self.vhost {
            Some(v) => Bus::connect(Some(&v.url)).await.unwrap(),
            None => Bus::in_process(),
        }
    }
}

async fn survives_a_restart_and_replays_once(real: bool) {
    let Some(pair) = Pair::start(real, "dlq").await else {
        return;
    };
    let (producer, consumer) = (&pair.producer, pair.consumer.clone());

    // The consumer gives up on a message.
    let cured = Arc::new(AtomicBool::new(false));
    let first_run = CancellationToken::new();
    let bus = pair.bus().await;
    subscribe(&bus, &consumer, &cured, &first_run).await;
    relay(producer, &bus, &first_run);
    let env = Envelope::new("Unfixable", &serde_json::json!({"n": 1})).unwrap();
    let mut tx = producer.begin().await.unwrap();
    enqueue(&mut tx, &[Outbound::raw(EXCHANGE, env.clone())])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    producer.outbox_written();
    eventually("dead-lettering", || async {
        waiting(real, &bus, &consumer).await == 1
    })
    .await;

    // Everything stops, and comes back (the consumer cured).
    first_run.cancel();
    drop(bus);
    consumer.close().await;
    let consumer = pair.consumer_db.connect().await.unwrap();
    let bus = pair.bus().await;
    let again = CancellationToken::new();
    cured.store(true, Ordering::SeqCst);
    subscribe(&bus, &consumer, &cured, &again).await;
    relay(&consumer, &bus, &again);

    // The dead letter is still there, as it was.
    let (kind, message_id) = if real {
        let letters = bus.peek_dead_letters(QUEUE).await.unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0].exchange, EXCHANGE);
        let id = Envelope::from_bytes(&letters[0].body)
            .unwrap()
            .message_id
            .to_string();
        (letters[0].routing_key.clone(), Some(id))
    } else {
        let kept = dead_letters::waiting(&consumer, QUEUE).await.unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].reason.contains("cannot apply"), "{kept:?}");
        (kept[0].kind.clone(), kept[0].message_id.clone())
    };
    assert_eq!(kind, "Unfixable");
    assert_eq!(message_id, Some(env.message_id.to_string()));
    assert_eq!(applied(&consumer).await, 0);

    // Replayed: applied once; nothing left to replay.
    let replayed = if real {
        bus.replay_dead_letters(QUEUE).await.unwrap()
    } else {
        dead_letters::replay(&consumer, QUEUE).await.unwrap()
    };
    assert_eq!(replayed, 1);
    eventually("the replayed message applied", || async {
        applied(&consumer).await == 1
    })
    .await;
    let again_replayed = if real {
        bus.replay_dead_letters(QUEUE).await.unwrap()
    } else {
        dead_letters::replay(&consumer, QUEUE).await.unwrap()
    };
    assert_eq!(again_replayed, 0);
    assert_eq!(waiting(real, &bus, &consumer).await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(applied(&consumer).await, 1, "applied twice");
    again.cancel();
}

#[tokio::test]
async fn embedded_a_dead_letter_survives_a_restart_and_replays_once() {
    survives_a_restart_and_replays_once(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_a_dead_letter_survives_a_restart_and_replays_once() {
    survives_a_restart_and_replays_once(true).await;
}

/// An outbox row that is not a message (hand-made, damaged) is not sent to
/// nobody and forgotten: it is kept with the producer's dead letters and
/// retired, and the messages around it still go out.
async fn an_undecodable_outbox_row_is_kept_not_dropped(real: bool) {
    let Some(pair) = Pair::start(real, "outbox").await else {
        return;
    };
    let bus = pair.bus().await;
    let (producer, consumer) = (pair.producer.clone(), pair.consumer.clone());
    let shutdown = CancellationToken::new();
    subscribe(&bus, &consumer, &Arc::new(AtomicBool::new(true)), &shutdown).await;

    let good = Envelope::new("Unfixable", &serde_json::json!({"n": 2})).unwrap();
    let mut tx = producer.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO outbox (message_id, exchange, routing_key, body, created_at)
         VALUES ('hand-made', $1, 'Unfixable', 'this is not JSON', '2026-01-01T00:00:00.000000Z')",
    )
    .bind(EXCHANGE)
    .execute(&mut *tx)
    .await
    .unwrap();
    enqueue(&mut tx, &[Outbound::raw(EXCHANGE, good)]).await.unwrap();
    tx.commit().await.unwrap();
    relay(&producer, &bus, &shutdown);

    eventually("the good message applied", || async {
        applied(&consumer).await == 1
    })
    .await;
    eventually("the outbox emptied", || async {
        ticketer_db::pending_count(&producer).await.unwrap() == 0
    })
    .await;
    let kept = dead_letters::waiting(&producer, ticketer_db::UNDECODABLE)
        .await
        .unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        (kept[0].kind.as_str(), kept[0].message_id.as_deref()),
        ("Unfixable", None)
    );
    assert!(kept[0].reason.starts_with("undecodable outbox row"), "{kept:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn embedded_an_undecodable_outbox_row_is_kept_not_dropped() {
    an_undecodable_outbox_row_is_kept_not_dropped(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_an_undecodable_outbox_row_is_kept_not_dropped() {
    an_undecodable_outbox_row_is_kept_not_dropped(true).await;
}
