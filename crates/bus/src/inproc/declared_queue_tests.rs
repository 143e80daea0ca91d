use std::time::Duration;

use super::*;
use crate::{topology::TICKET_INVENTORY, Bus, HandleError};

struct Count(Mutex<usize>);

#[async_trait::async_trait]
impl BatchHandler for Count {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        *self.0.lock().unwrap() += batch.len();
        Ok(())
    }
}

#[tokio::test]
async fn messages_wait_in_a_declared_queue_until_its_consumer_starts() {
    let bus = Bus::in_process();
    let msg = Outgoing::new("ticketer.events", &Envelope::new("EventPublished", &1).unwrap());
    // Nobody here consumes the queue yet: the message is kept, not dropped.
    bus.publish(&[msg]).await.unwrap();
    let count = Arc::new(Count(Mutex::new(0)));
    let shutdown = CancellationToken::new();
    bus.subscribe(TICKET_INVENTORY.subscription(), count.clone(), shutdown.clone())
        .await
        .unwrap();
    for _ in 0..100 {
        if *count.0.lock().unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*count.0.lock().unwrap(), 1);
    shutdown.cancel();
}

#[tokio::test]
async fn a_queue_nobody_consumes_holds_a_bounded_number_of_messages() {
    let bus = Bus::in_process();
    let batch: Vec<Outgoing> = (0..QUEUE_CAPACITY + 50)
        .map(|n| Outgoing::new("ticketer.events", &Envelope::new("EventPublished", &n).unwrap()))
        .collect();
    bus.publish(&batch).await.unwrap();
    let Bus::InProcess(inner) = &bus else {
        unreachable!("an in-process bus")
    };
    let queues = inner.queues.lock().unwrap();
    let held = queues[TICKET_INVENTORY.name].tx.max_capacity() - queues[TICKET_INVENTORY.name].tx.capacity();
    assert_eq!(held, QUEUE_CAPACITY, "the rest were dropped, not kept");
}

#[tokio::test]
async fn a_gated_bus_publishes_only_once_opened() {
    let bus = Bus::in_process_gated();
    let msg = Outgoing::new("ticketer.events", &Envelope::new("EventPublished", &1).unwrap());
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish(&[msg]).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!publisher.is_finished(), "published before the bus was opened");
    let count = Arc::new(Count(Mutex::new(0)));
    let shutdown = CancellationToken::new();
    bus.subscribe(TICKET_INVENTORY.subscription(), count.clone(), shutdown.clone())
        .await
        .unwrap();
    bus.open();
    publisher.await.unwrap().unwrap();
    // Consumed queue: the publish returned after the consumer settled it.
    assert_eq!(*count.0.lock().unwrap(), 1);
    shutdown.cancel();
}
