use std::time::Duration;

use super::*;
use crate::{Bus, HandleError};

struct Collect(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl BatchHandler for Collect {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        if batch.iter().any(|m| m.kind == "Poison") {
            return Err(HandleError::Permanent("poison".into()));
        }
        self.0
            .lock()
            .unwrap()
            .extend(batch.iter().map(|m| m.kind.clone()));
        Ok(())
    }
}

#[tokio::test]
async fn publish_waits_for_consumers_and_routes_by_topic() {
    let bus = Bus::in_process();
    let handler = Arc::new(Collect(Mutex::default()));
    let shutdown = CancellationToken::new();
    let sub = Subscription::new("q")
        .bind("ex", "Wanted")
        .retries(2, Duration::from_millis(1));
    bus.subscribe(sub, handler.clone(), shutdown.clone())
        .await
        .unwrap();

    let msgs = [
        Envelope::new("Wanted", &1).unwrap(),
        Envelope::new("Other", &2).unwrap(),
        Envelope::new("Wanted", &3).unwrap(),
    ];
    let out: Vec<_> = msgs.iter().map(|m| Outgoing::new("ex", m)).collect();
    bus.publish(&out).await.unwrap();
    // publish returned, so the handler has already run.
    assert_eq!(*handler.0.lock().unwrap(), vec!["Wanted", "Wanted"]);
    shutdown.cancel();
}

#[tokio::test]
async fn poison_and_garbage_end_in_the_dead_letter_store() {
    let bus = InProcessBus::default();
    let handler = Arc::new(Collect(Mutex::default()));
    let shutdown = CancellationToken::new();
    bus.subscribe(
        Subscription::new("q").bind("ex", "#"),
        handler.clone(),
        shutdown.clone(),
    );
    let poison = Outgoing::new("ex", &Envelope::new("Poison", &1).unwrap());
    let mut garbage = Outgoing::new("ex", &Envelope::new("Fine", &1).unwrap());
    garbage.body = b"not json".to_vec();
    bus.publish(&[
        poison,
        garbage,
        Outgoing::new("ex", &Envelope::new("Fine", &2).unwrap()),
    ])
    .await
    .unwrap();
    let dead = bus.dead_letters("q");
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().any(|d| d.reason == "poison"), "{dead:?}");
    assert!(dead.iter().any(|d| d.body == b"not json"), "{dead:?}");
    assert_eq!(*handler.0.lock().unwrap(), vec!["Fine"]);
    shutdown.cancel();
}

#[tokio::test]
async fn publish_fails_when_a_consumer_stops_before_settling() {
    struct Slow;
    #[async_trait::async_trait]
    impl BatchHandler for Slow {
        async fn handle_batch(&self, _: &[Envelope]) -> Result<(), HandleError> {
            Err(HandleError::Transient("db down".into()))
        }
    }
    let bus = InProcessBus::default();
    let shutdown = CancellationToken::new();
    let sub = Subscription::new("q")
        .bind("ex", "#")
        .retries(100, Duration::from_millis(20));
    bus.subscribe(sub, Arc::new(Slow), shutdown.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
    });
    let res = bus
        .publish(&[Outgoing::new("ex", &Envelope::new("X", &1).unwrap())])
        .await;
    assert!(matches!(res, Err(BusError::NotSettled(_))), "{res:?}");
}

/// A queue whose consumers have stopped (the process is shutting down)
/// refuses a publish at once: the sender's outbox keeps the message, and the
/// shutdown does not wait out the settle timeout.
#[tokio::test]
async fn publish_to_a_stopped_consumer_fails_at_once() {
    let bus = InProcessBus::default();
    let shutdown = CancellationToken::new();
    let workers = bus.subscribe(
        Subscription::new("q").bind("ex", "#"),
        Arc::new(Collect(Mutex::default())),
        shutdown.clone(),
    );
    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let started = std::time::Instant::now();
    let res = bus
        .publish(&[Outgoing::new("ex", &Envelope::new("X", &1).unwrap())])
        .await;
    assert!(matches!(res, Err(BusError::NotSettled(_))), "{res:?}");
    assert!(
        started.elapsed() < SETTLE_TIMEOUT / 2,
        "waited {:?}",
        started.elapsed()
    );
}
