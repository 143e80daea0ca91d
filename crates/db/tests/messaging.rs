//! The delivery guarantees, end to end through a real database and a real
//! transport: on SQLite with the in-process bus always, and on PostgreSQL
//! with RabbitMQ when `TICKETER_TEST_POSTGRES_URL` and `TICKETER_TEST_AMQP_URL`
//! are set.

use std::{sync::Arc, time::Duration};

use ticketer_bus::{Bus, Envelope, HandleError, Subscription};
use ticketer_db::{enqueue, AnyConnection, Db, Inbox, MessageHandler, Migration, Outbound, OutboxRelay};
use ticketer_testkit::TestDatabase;
use ticketer_testkit::TestVhost;
use tokio_util::sync::CancellationToken;

// Message types no queue of the real topology is bound to, so that only
// this test's queue receives them.
const EXCHANGE: &str = "ticketer.events";
const QUEUE: &str = "test.consumer";

const CONSUMER_SCHEMA: &[Migration] = &[Migration {
    version: 1,
    name: "applied",
    postgres: "CREATE TABLE applied (message_id TEXT NOT NULL, kind TEXT NOT NULL)",
    sqlite: "CREATE TABLE applied (message_id TEXT NOT NULL, kind TEXT NOT NULL)",
}];

/// Records every message it applies; refuses kind "Poison" for good.
struct Recorder;

#[async_trait::async_trait]
impl MessageHandler for Recorder {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        if msg.kind == "Poison" {
            return Err(HandleError::Permanent("cannot apply poison".into()));
        }
        sqlx::query("INSERT INTO applied (message_id, kind) VALUES ($1, $2)")
            .bind(msg.message_id.to_string())
            .bind(&msg.kind)
            .execute(tx)
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))?;
        Ok(())
    }
}

struct Rig {
    producer_db: TestDatabase,
    producer: Db,
    consumer: Db,
    bus: Bus,
    shutdown: CancellationToken,
    _consumer_db: TestDatabase,
    _vhost: Option<TestVhost>,
}

impl Rig {
    async fn start(real: bool) -> Option<Rig> {
        let (producer_db, consumer_db, bus, vhost) = if real {
            let (Some(pg), Some(amqp)) = (ticketer_testkit::postgres_url(), ticketer_testkit::amqp_url())
            else {
                ticketer_testkit::skip_test(
                    "PostgreSQL/RabbitMQ messaging test",
                    "TICKETER_TEST_POSTGRES_URL and TICKETER_TEST_AMQP_URL",
                );
                return None;
            };
            let vhost = TestVhost::create(&amqp).expect("vhost");
            let bus = Bus::connect(Some(&vhost.url)).await.expect("rabbitmq");
            (
                TestDatabase::postgres(&pg, "producer").await.unwrap(),
                TestDatabase::postgres(&pg, "consumer").await.unwrap(),
                bus,
                Some(vhost),
            )
        } else {
            (
                TestDatabase::sqlite(),
                TestDatabase::sqlite(),
                Bus::in_process(),
                None,
            )
        };
        let producer = producer_db.connect().await.unwrap();
        producer.migrate("producer", &[]).await.unwrap();
        let consumer = consumer_db.connect().await.unwrap();
        consumer.migrate("consumer", CONSUMER_SCHEMA).await.unwrap();
        let shutdown = CancellationToken::new();
        let sub = Subscription::new(QUEUE)
            .bind(EXCHANGE, "#")
            .tuned(50, 1, 50)
            .retries(3, Duration::from_millis(10));
        bus.subscribe(
            sub,
            Arc::new(Inbox::new(consumer.clone(), QUEUE, Recorder)),
            shutdown.clone(),
        )
        .await
        .unwrap();
        Some(Rig {
            producer_db,
            producer,
            consumer,
            bus,
            shutdown,
            _consumer_db: consumer_db,
            _vhost: vhost,
        })
    }

    /// A state change and its message, committed together.
    async fn commit_message(&self, kind: &str) -> Envelope {
        let env = Envelope::new(kind, &serde_json::json!({"n": 1})).unwrap();
        let mut tx = self.producer.begin().await.unwrap();
        enqueue(&mut tx, &[Outbound::raw(EXCHANGE, env.clone())])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        env
    }

    fn relay(&self) -> OutboxRelay {
        OutboxRelay::new(
            self.producer.clone(),
            self.bus.clone(),
            100,
            Duration::from_millis(50),
        )
    }

    async fn applied(&self, env: &Envelope) -> i64 {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM applied WHERE message_id = $1")
            .bind(env.message_id.to_string())
            .fetch_one(self.consumer.pool())
            .await
            .unwrap();
        n
    }

    /// Waits until `env` has been applied (RabbitMQ delivers asynchronously).
    async fn wait_applied(&self, env: &Envelope) -> i64 {
        for _ in 0..200 {
            let n = self.applied(env).await;
            if n > 0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        0
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn redelivery_has_no_second_effect(real: bool) {
    let Some(rig) = Rig::start(real).await else { return };
    let first = rig.commit_message("ThingPublished").await;
    let row: (String, String, String, String, String) =
        sqlx::query_as("SELECT message_id, exchange, routing_key, body, created_at FROM outbox")
            .fetch_one(rig.producer.pool())
            .await
            .unwrap();
    assert_eq!(rig.relay().publish_pending().await.unwrap(), 1);
    assert_eq!(rig.wait_applied(&first).await, 1);
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(rig.producer.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "a confirmed message's row is deleted");

    // The relay crashed after the broker confirmed but before deleting the
    // row: the same message goes out again.
    sqlx::query("INSERT INTO outbox (message_id, exchange, routing_key, body, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(row.0)
        .bind(row.1)
        .bind(row.2)
        .bind(row.3)
        .bind(row.4)
        .execute(rig.producer.pool())
        .await
        .unwrap();
    assert_eq!(rig.relay().publish_pending().await.unwrap(), 1);
    // A later message on the same queue is applied after the duplicate.
    let later = rig.commit_message("ThingUpdated").await;
    rig.relay().publish_pending().await.unwrap();
    assert_eq!(rig.wait_applied(&later).await, 1);
    assert_eq!(
        rig.applied(&first).await,
        1,
        "the duplicate delivery was applied again"
    );
    // Both databases keep count for /metrics: three rows published (one of
    // them twice), one delivery skipped as a duplicate.
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(rig.producer.tally().published.load(Relaxed), 3);
    assert_eq!(rig.consumer.tally().duplicates.load(Relaxed), 1);
}

async fn poison_goes_to_the_dead_letter_queue(real: bool) {
    let Some(rig) = Rig::start(real).await else { return };
    let poison = rig.commit_message("Poison").await;
    let good = rig.commit_message("ThingCreated").await;
    rig.relay().publish_pending().await.unwrap();
    assert_eq!(
        rig.wait_applied(&good).await,
        1,
        "poison held back the next message"
    );
    let mut dead = 0;
    for _ in 0..100 {
        dead = rig.bus.dead_letter_count(QUEUE).await.unwrap();
        if dead > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(dead, 1);
    assert_eq!(rig.applied(&poison).await, 0);
}

async fn crash_before_publish_loses_nothing(real: bool) {
    let Some(mut rig) = Rig::start(real).await else {
        return;
    };
    // Committed, then the process died before the relay ran.
    let env = rig.commit_message("ThingCancelled").await;
    rig.producer.close().await;

    // After the restart a new relay finds the row and publishes it.
    rig.producer = rig.producer_db.connect().await.unwrap();
    rig.producer.migrate("producer", &[]).await.unwrap();
    let relay = rig.relay();
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));
    assert_eq!(rig.wait_applied(&env).await, 1);
    stop.cancel();
    running.await.unwrap();
    let (pending,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(rig.producer.pool())
        .await
        .unwrap();
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn embedded_redelivery_has_no_second_effect() {
    redelivery_has_no_second_effect(false).await;
}

#[tokio::test]
async fn embedded_poison_goes_to_the_dead_letter_queue() {
    poison_goes_to_the_dead_letter_queue(false).await;
}

#[tokio::test]
async fn embedded_crash_before_publish_loses_nothing() {
    crash_before_publish_loses_nothing(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_redelivery_has_no_second_effect() {
    redelivery_has_no_second_effect(true).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_poison_goes_to_the_dead_letter_queue() {
    poison_goes_to_the_dead_letter_queue(true).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_crash_before_publish_loses_nothing() {
    crash_before_publish_loses_nothing(true).await;
}

/// Messages heard another way than their queue (a service's direct answer)
/// are applied in one transaction, each recorded under the queue it would
/// have come on: the same message on that queue later is a duplicate, and
/// one listed twice in the batch is applied once.
async fn messages_applied_beside_their_queues_are_not_applied_again(real: bool) {
    let Some(rig) = Rig::start(real).await else { return };
    let direct = Inbox::new(rig.consumer.clone(), "direct", Recorder);
    let ours = Envelope::new("ThingReserved", &serde_json::json!({"n": 1})).unwrap();
    let other = Envelope::new("ThingReserved", &serde_json::json!({"n": 2})).unwrap();
    direct
        .handle_from(&[
            (QUEUE, ours.clone()),
            ("elsewhere", other.clone()),
            (QUEUE, ours.clone()),
        ])
        .await
        .unwrap();
    assert_eq!((rig.applied(&ours).await, rig.applied(&other).await), (1, 1));

    // The same two arrive on the queue afterwards: only the one recorded
    // under another queue's name is new to it.
    let mut tx = rig.producer.begin().await.unwrap();
    let sent = [
        Outbound::raw(EXCHANGE, ours.clone()),
        Outbound::raw(EXCHANGE, other.clone()),
    ];
    enqueue(&mut tx, &sent).await.unwrap();
    tx.commit().await.unwrap();
    rig.relay().publish_pending().await.unwrap();
    let marker = rig.commit_message("ThingUpdated").await;
    rig.relay().publish_pending().await.unwrap();
    assert_eq!(rig.wait_applied(&marker).await, 1);
    assert_eq!((rig.applied(&ours).await, rig.applied(&other).await), (1, 2));
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(rig.consumer.tally().duplicates.load(Relaxed), 2);
}

#[tokio::test]
async fn embedded_messages_applied_beside_their_queues_are_not_applied_again() {
    messages_applied_beside_their_queues_are_not_applied_again(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_messages_applied_beside_their_queues_are_not_applied_again() {
    messages_applied_beside_their_queues_are_not_applied_again(true).await;
}

/// What a service writes while it answers over HTTP with some of it: those
/// kinds come back to it and go out under their answered routing key,
/// which reaches a queue bound to `<kind>.#` and not one bound to the kind
/// alone; the rest go out as always and are not given back.
#[tokio::test]
async fn messages_given_in_an_answer_are_routed_apart() {
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("producer", &[]).await.unwrap();
    let bus = Bus::in_process();
    let shutdown = CancellationToken::new();
    let mut heard = Vec::new();
    for (queue, pattern) in [("asker.test", "ThingPaid"), ("others.test", "ThingPaid.#")] {
        let kinds = Arc::new(ticketer_testkit::Heard::default());
        let sub = Subscription::new(queue)
            .bind(EXCHANGE, pattern)
            .bind(EXCHANGE, "ThingNoted");
        bus.subscribe(sub, kinds.clone(), shutdown.clone()).await.unwrap();
        heard.push(kinds);
    }
    let paid = Envelope::new("ThingPaid", &serde_json::json!({"n": 1})).unwrap();
    let noted = Envelope::new("ThingNoted", &serde_json::json!({"n": 2})).unwrap();
    let sent = [
        Outbound::raw(EXCHANGE, paid.clone()),
        Outbound::raw(EXCHANGE, noted),
    ];
    let ((), told) = ticketer_db::answering(&["ThingPaid"], async {
        let mut tx = db.begin().await.unwrap();
        enqueue(&mut tx, &sent).await.unwrap();
        tx.commit().await.unwrap();
    })
    .await;
    assert_eq!(
        told.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        [paid.message_id]
    );
    let relay = OutboxRelay::new(db.clone(), bus.clone(), 100, Duration::from_millis(50));
    assert_eq!(relay.publish_pending().await.unwrap(), 2);
    let kinds = |i: usize| heard[i].all().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(kinds(0), ["ThingNoted"], "the asker's queue got what it was told");
    assert_eq!(kinds(1), ["ThingPaid", "ThingNoted"]);
    shutdown.cancel();
}

/// Rows stamped published (by versions that kept them) go once old;
/// unpublished rows never.
async fn janitor_prunes_only_what_is_old(real: bool) {
    use ticketer_db::janitor::{prune, Retention};
    let Some(rig) = Rig::start(real).await else { return };
    let old = "2020-01-01T00:00:00.000000Z";
    let db = &rig.producer;
    let now = ticketer_db::time::now();
    for (id, published) in [
        ("old", Some(old)),
        ("recent", Some(now.as_str())),
        ("pending", None),
    ] {
        sqlx::query(
            "INSERT INTO outbox (message_id, exchange, routing_key, body, created_at, published_at)
             VALUES ($1, 'x', 'y', '{}', $2, $3)",
        )
        .bind(id)
        .bind(old)
        .bind(published)
        .execute(db.pool())
        .await
        .unwrap();
    }
    for (id, at) in [("old", old), ("recent", now.as_str())] {
        sqlx::query("INSERT INTO inbox (consumer, message_id, processed_at) VALUES ('c', $1, $2)")
            .bind(id)
            .bind(at)
            .execute(db.pool())
            .await
            .unwrap();
    }
    for (key, status, at) in [
        ("done-old", Some(201i64), old),
        ("claim-old", None, old),
        ("fresh", None, now.as_str()),
    ] {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, created_at) VALUES ('s', $1, 'h', $2, $3)",
        )
        .bind(key)
        .bind(status)
        .bind(at)
        .execute(db.pool())
        .await
        .unwrap();
    }
    let pruned = prune(db, &Retention::default()).await.unwrap();
    assert_eq!((pruned.outbox, pruned.inbox, pruned.idempotency), (1, 1, 2));
    let left: Vec<(String,)> = sqlx::query_as("SELECT message_id FROM outbox ORDER BY message_id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    // Unpublished rows are never pruned, however old.
    assert_eq!(left, vec![("pending".to_string(),), ("recent".to_string(),)]);
}

#[tokio::test]
async fn embedded_janitor_prunes_only_what_is_old() {
    janitor_prunes_only_what_is_old(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_janitor_prunes_only_what_is_old() {
    janitor_prunes_only_what_is_old(true).await;
}

/// A transaction that took its outbox id first but commits last is still
/// relayed (ids are handed out at insert, commits come in any order), once,
/// and promptly, though the relay started on an outbox emptied by earlier
/// publishing (its cursor then follows the id sequence).
#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_late_commit_below_the_cursor_is_relayed() {
    let Some(rig) = Rig::start(true).await else {
        return;
    };
    let mut earlier = Vec::new();
    for _ in 0..3 {
        earlier.push(rig.commit_message("Earlier").await);
    }
    assert_eq!(rig.relay().publish_pending().await.unwrap(), 3);
    for env in &earlier {
        assert_eq!(rig.wait_applied(env).await, 1);
    }
    let early = Envelope::new("LateCommit", &serde_json::json!({"n": 1})).unwrap();
    let mut slow = rig.producer.begin().await.unwrap();
    enqueue(&mut slow, &[Outbound::raw(EXCHANGE, early.clone())])
        .await
        .unwrap();
    tokio::spawn(rig.relay().run(rig.shutdown.clone()));
    let later = rig.commit_message("CommittedFirst").await;
    assert_eq!(rig.wait_applied(&later).await, 1);
    slow.commit().await.unwrap();
    rig.producer.outbox_written();
    // Well before the sweep (every 5 s) would find it.
    let started = std::time::Instant::now();
    assert_eq!(rig.wait_applied(&early).await, 1, "the late commit was relayed");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    rig.shutdown.cancel();
}

/// A replica starting up (and migrating) while another relays must not
/// wait for the relay: they hold different locks.
#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_migrating_while_the_relay_leads() {
    let Some(rig) = Rig::start(true).await else {
        return;
    };
    tokio::spawn(rig.relay().run(rig.shutdown.clone()));
    let env = rig.commit_message("Leading").await;
    assert_eq!(rig.wait_applied(&env).await, 1, "the relay leads");
    let migrated = tokio::time::timeout(Duration::from_secs(30), rig.producer.migrate("producer", &[])).await;
    assert!(
        matches!(migrated, Ok(Ok(()))),
        "migration waited on the relay: {migrated:?}"
    );
    rig.shutdown.cancel();
}

/// A message whose payload has no JSON form (map keys that are not
/// strings): a bug in its producer, which must fail loudly.
#[derive(serde::Serialize, serde::Deserialize)]
struct Unencodable(std::collections::BTreeMap<(u8, u8), u8>);

impl ticketer_contract::Message for Unencodable {
    const KIND: &'static str = "Unencodable";
    const EXCHANGE: &'static str = EXCHANGE;
}

#[tokio::test]
async fn a_message_without_a_json_form_fails_its_transaction_instead_of_going_out_empty() {
    let db = TestDatabase::sqlite();
    let producer = db.connect().await.unwrap();
    producer.migrate("producer", &[]).await.unwrap();
    let fine = Outbound::raw(EXCHANGE, Envelope::new("Fine", &1).unwrap());
    let broken = Outbound::new(&Unencodable([((1, 2), 3)].into_iter().collect()));
    let mut tx = producer.begin().await.unwrap();
    let err = enqueue(&mut tx, &[fine, broken]).await.unwrap_err();
    assert!(matches!(err, ticketer_db::DbError::Encode(_)), "{err}");
    assert!(err.to_string().contains("Unencodable"), "{err}");
    // A consumer that met it would dead-letter the message, not retry it.
    assert!(matches!(HandleError::from(err), HandleError::Permanent(_)));
    drop(tx);
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(producer.pool())
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing of the batch was written");
}
