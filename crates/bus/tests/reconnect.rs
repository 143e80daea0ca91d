//! The RabbitMQ transport survives the broker connection going away: a TCP
//! proxy between the bus and the broker cuts every connection, and both the
//! publisher and the consumer carry on once the broker is reachable again.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ticketer_bus::{
    testing::{TcpProxy, TestVhost},
    BatchHandler, Bus, Envelope, HandleError, Outgoing, Subscription,
};
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
    let msg = Outgoing::new("ticketer.events", &Envelope::new(kind, &1));
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

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn publisher_and_consumer_recover_after_the_connection_drops() {
    let Some(amqp) = ticketer_bus::testing::amqp_url() else {
        ticketer_config::skip_test("RabbitMQ reconnection test", "TICKETER_TEST_AMQP_URL");
        return;
    };
    let vhost = TestVhost::create(&amqp).unwrap();
    let broker = vhost
        .url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let proxy = TcpProxy::start(&broker).await.unwrap();
    let url = proxy.url_through(&vhost.url);

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
