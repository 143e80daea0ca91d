//! The RabbitMQ transport survives the broker connection going away: a TCP
//! proxy between the bus and the broker cuts every connection, and both the
//! publisher and the consumer carry on once the broker is reachable again.
//! And a batch handed to RabbitMQ is confirmed as a whole and reaches its
//! queue in the order it was written (the outbox's order), however many
//! messages it holds; a replay of dead letters moves each once.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ticketer_bus::{BatchHandler, Bus, Envelope, HandleError, Outgoing, Subscription};
use ticketer_testkit::{address_of, TcpProxy, TestVhost};
use tokio_util::sync::CancellationToken;

struct Collect(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl BatchHandler for Collect {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        self.0
            .lock()
            .unwrap()
            .extend(batch.iter().map(|m| m.kind.clone()));
        Ok(())
    }
}

async fn publish_until_accepted(bus: &Bus, kind: &str) {
    let msg = Outgoing::new("ticketer.events", &Envelope::new(kind, &1).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = bus.publish(std::slice::from_ref(&msg)).await {
        assert!(Instant::now() < deadline, "publishing never recovered: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(handler: &Collect, kind: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !handler.0.lock().unwrap().iter().any(|k| k == kind) {
        assert!(Instant::now() < deadline, "{kind} never consumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh vhost; None (and `what` said skipped) without a broker.
fn fresh_vhost(what: &str) -> Option<TestVhost> {
    let Some(amqp) = ticketer_testkit::amqp_url() else {
        ticketer_testkit::skip_test(what, "TICKETER_TEST_AMQP_URL");
        return None;
    };
    Some(TestVhost::create(&amqp).unwrap())
}

/// A fresh vhost, the proxy in front of its broker, and the vhost's URL
/// through the proxy; None (and the test said skipped) without a broker.
async fn vhost_behind_proxy() -> Option<(TestVhost, TcpProxy, String)> {
    let vhost = fresh_vhost("RabbitMQ reconnection test")?;
    let proxy = TcpProxy::start(&address_of(&vhost.url)).await.unwrap();
    let url = proxy.url_through(&vhost.url);
    Some((vhost, proxy, url))
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn publisher_and_consumer_recover_after_the_connection_drops() {
    let Some((_vhost, proxy, url)) = vhost_behind_proxy().await else {
        return;
    };

    let bus = Bus::connect(Some(&url)).await.unwrap();
    let handler = Arc::new(Collect(Mutex::default()));
    let shutdown = CancellationToken::new();
    let sub = Subscription::new("reconnect.test")
        .bind("ticketer.events", "#")
        .tuned(10, 1, 10);
    bus.subscribe(sub, handler.clone(), shutdown.clone())
        .await
        .unwrap();

    publish_until_accepted(&bus, "Before").await;
    wait_for(&handler, "Before").await;

    proxy.cut();
    publish_until_accepted(&bus, "After").await;
    wait_for(&handler, "After").await;
    shutdown.cancel();
}

/// Holds every batch with a `Slow` message until released, as a consumer
/// busy with its database would be.
struct HeldUp {
    seen: Mutex<Vec<String>>,
    started: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl BatchHandler for HeldUp {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        if batch.iter().any(|m| m.kind == "Slow") {
            self.started.notify_one();
            let _ = self.release.acquire().await.map(|p| p.forget());
        }
        self.seen
            .lock()
            .unwrap()
            .extend(batch.iter().map(|m| m.kind.clone()));
        Ok(())
    }
}

/// The connection dies while a batch is being applied (the broker
/// restarted, or the process was paused past its heartbeat): the ack
/// fails, and the worker must let go of the dead channel and consume again
/// rather than wait on it forever. The batch comes again (at least once).
#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn a_consumer_whose_connection_died_mid_batch_consumes_again() {
    let Some((vhost, proxy, url)) = vhost_behind_proxy().await else {
        return;
    };
    // Published straight to the broker, so that only the consumer's
    // connection goes through the proxy.
    let publisher = Bus::connect(Some(&vhost.url)).await.unwrap();
    let consumer = Bus::connect(Some(&url)).await.unwrap();
    let handler = Arc::new(HeldUp {
        seen: Mutex::default(),
        started: tokio::sync::Notify::new(),
        release: tokio::sync::Semaphore::new(0),
    });
    let shutdown = CancellationToken::new();
    let sub = Subscription::new("midbatch.test")
        .bind("ticketer.events", "#")
        .tuned(10, 1, 10);
    consumer
        .subscribe(sub, handler.clone(), shutdown.clone())
        .await
        .unwrap();

    publish_until_accepted(&publisher, "Slow").await;
    tokio::time::timeout(Duration::from_secs(20), handler.started.notified())
        .await
        .expect("the batch never reached the handler");
    proxy.cut();
    // Let the worker find out about the cut before the batch finishes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    handler.release.add_permits(1_000);

    publish_until_accepted(&publisher, "After").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = handler.seen.lock().unwrap().clone();
        if seen.iter().any(|k| k == "After") {
            assert!(seen.iter().filter(|k| *k == "Slow").count() >= 1, "{seen:?}");
            break;
        }
        assert!(Instant::now() < deadline, "never consumed again: {seen:?}");
        drop(seen);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
}

/// Seven services starting together on a fresh vhost each declare the
/// whole topology at once; every one of them starts (RabbitMQ may refuse
/// a queue another is still declaring: it is declared again).
#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn services_starting_together_all_declare_the_topology() {
    let Some(amqp) = ticketer_testkit::amqp_url() else {
        ticketer_testkit::skip_test("RabbitMQ concurrent start-up test", "TICKETER_TEST_AMQP_URL");
        return;
    };
    for _ in 0..3 {
        let vhost = TestVhost::create(&amqp).expect("vhost");
        let starts: Vec<_> = (0..7)
            .map(|_| {
                let url = vhost.url.clone();
                tokio::spawn(async move { Bus::connect(Some(&url)).await.map(|_| ()) })
            })
            .collect();
        for start in starts {
            start
                .await
                .unwrap()
                .expect("a service could not declare the topology");
        }
    }
}

/// A batch is confirmed as a whole and arrives in its order, whatever its
/// size.
#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn a_batch_arrives_in_the_order_it_was_written() {
    let Some(vhost) = fresh_vhost("RabbitMQ publishing test") else {
        return;
    };
    let bus = Bus::connect(Some(&vhost.url)).await.unwrap();
    let handler = Arc::new(Collect(Mutex::default()));
    let shutdown = CancellationToken::new();
    let sub = Subscription::new("order.test")
        .bind("ticketer.events", "#")
        .tuned(1_000, 1, 1_000);
    bus.subscribe(sub, handler.clone(), shutdown.clone())
        .await
        .unwrap();

    // Sizes on both sides of where futures' join_all changes strategy (30).
    let mut written = Vec::new();
    for size in [1, 29, 31, 400] {
        let batch: Vec<Outgoing> = (0..size)
            .map(|i| {
                let kind = format!("M{}", written.len() + i);
                Outgoing::new("ticketer.events", &Envelope::new(&kind, &i).unwrap())
            })
            .collect();
        written.extend(batch.iter().map(|m| m.routing_key.clone()));
        bus.publish(&batch).await.expect("every message confirmed");
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = handler.0.lock().unwrap().clone();
        if seen.len() >= written.len() {
            assert_eq!(seen, written);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} arrived",
            seen.len(),
            written.len()
        );
        drop(seen);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
}

/// Keeps the size of every batch it is handed.
struct Sizes(Mutex<Vec<usize>>);

#[async_trait::async_trait]
impl BatchHandler for Sizes {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        self.0.lock().unwrap().push(batch.len());
        Ok(())
    }
}

/// A queue whose effects may wait gathers what arrives for a while into
/// one batch (one transaction); one on a buyer's path applies each
/// delivery as it comes.
#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn a_queue_that_may_wait_gathers_its_batches() {
    let Some(vhost) = fresh_vhost("RabbitMQ batching test") else {
        return;
    };
    let bus = Bus::connect(Some(&vhost.url)).await.unwrap();
    let shutdown = CancellationToken::new();
    let mut handlers = Vec::new();
    for (queue, wait) in [
        ("gathering.test", Duration::from_secs(3)),
        ("eager.test", Duration::ZERO),
    ] {
        let handler = Arc::new(Sizes(Mutex::default()));
        let sub = Subscription {
            batch_wait: wait,
            // One worker: two would share the deliveries between them.
            ..Subscription::new(queue)
                .bind("ticketer.events", "#")
                .tuned(100, 1, 100)
        };
        bus.subscribe(sub, handler.clone(), shutdown.clone())
            .await
            .unwrap();
        handlers.push(handler);
    }
    for i in 0..3 {
        let msg = Outgoing::new("ticketer.events", &Envelope::new("Spaced", &i).unwrap());
        bus.publish(&[msg]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let sizes = |h: &Sizes| h.0.lock().unwrap().clone();
    while handlers.iter().any(|h| sizes(h).iter().sum::<usize>() < 3) {
        assert!(Instant::now() < deadline, "not every message arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sizes(&handlers[0]), [3], "the three gathered in one batch");
    assert_eq!(sizes(&handlers[1]), [1, 1, 1], "each applied as it came");
    shutdown.cancel();
}

/// Gives up on everything at once, as on a poison message.
struct Refuse;

#[async_trait::async_trait]
impl BatchHandler for Refuse {
    async fn handle_batch(&self, _batch: &[Envelope]) -> Result<(), HandleError> {
        Err(HandleError::Permanent("refused".into()))
    }
}

/// A replay moves back what was waiting in the dead-letter queue when it
/// was asked, each message once, though the consumer gives up on them
/// again (and they land back there) while the replay is still going.
#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn a_replay_moves_each_waiting_dead_letter_once() {
    let Some(vhost) = fresh_vhost("RabbitMQ dead-letter replay test") else {
        return;
    };
    let bus = Bus::connect(Some(&vhost.url)).await.unwrap();
    let shutdown = CancellationToken::new();
    let sub = Subscription::new("replay.test")
        .bind("ticketer.events", "#")
        .tuned(100, 1, 100);
    bus.subscribe(sub, Arc::new(Refuse), shutdown.clone())
        .await
        .unwrap();
    const POISON: u32 = 40;
    let batch: Vec<Outgoing> = (0..POISON)
        .map(|i| Outgoing::new("ticketer.events", &Envelope::new("Poison", &i).unwrap()))
        .collect();
    bus.publish(&batch).await.unwrap();
    let settled = |want: u32| {
        let bus = bus.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let n = bus.dead_letter_count("replay.test").await.unwrap();
                if n == want {
                    return;
                }
                assert!(Instant::now() < deadline, "{n} dead letters, not {want}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    settled(POISON).await;
    for _ in 0..3 {
        assert_eq!(
            bus.replay_dead_letters("replay.test").await.unwrap(),
            POISON as usize
        );
        settled(POISON).await;
    }
    shutdown.cancel();
}
