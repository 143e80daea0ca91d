//! The RabbitMQ transport survives the broker connection going away: a TCP
//! proxy between the bus and the broker cuts every connection, and both the
//! publisher and the consumer carry on once the broker is reachable again.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ticketer_bus::{testing::TestVhost, BatchHandler, Bus, Envelope, HandleError, Outgoing, Subscription};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Forwards connections to the broker; `cut` drops all current ones.
struct Proxy {
    port: u16,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let registry = pipes.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut broker) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
                registry.lock().unwrap().push(pipe);
            }
        });
        Proxy {
            port,
            pipes,
            _accept: accept,
        }
    }

    fn cut(&self) {
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }
}

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
    let proxy = Proxy::start(broker.clone()).await;
    let url = vhost.url.replace(&broker, &format!("127.0.0.1:{}", proxy.port));

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
