//! A consumer's span continues the producer's trace: the envelope carries
//! the W3C traceparent through the outbox and the bus.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use ticketer_bus::{Bus, Envelope, HandleError, Subscription};
use ticketer_db::{enqueue, AnyConnection, Inbox, MessageHandler, Outbound, OutboxRelay};
use ticketer_testkit::TestDatabase;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

struct SeeTrace(Arc<Mutex<Option<String>>>);

#[async_trait::async_trait]
impl MessageHandler for SeeTrace {
    async fn handle(&self, _: &mut AnyConnection, _: &Envelope) -> Result<(), HandleError> {
        *self.0.lock().unwrap() = ticketer_telemetry::current_traceparent();
        Ok(())
    }
}

#[tokio::test]
async fn consumer_spans_join_the_producer_trace() {
    let _guard = ticketer_telemetry::init("trace-test", ticketer_telemetry::LogFormat::Pretty).unwrap();
    let (pdb, cdb) = (TestDatabase::sqlite(), TestDatabase::sqlite());
    let (producer, consumer) = (pdb.connect().await.unwrap(), cdb.connect().await.unwrap());
    producer.migrate("p", &[]).await.unwrap();
    consumer.migrate("c", &[]).await.unwrap();
    let bus = Bus::in_process();
    let seen = Arc::new(Mutex::new(None));
    let shutdown = CancellationToken::new();
    let sub = Subscription::new("trace.q").bind("ticketer.events", "#");
    let handler = Inbox::new(consumer.clone(), "trace.q", SeeTrace(seen.clone()));
    bus.subscribe(sub, Arc::new(handler), shutdown.clone())
        .await
        .unwrap();

    let span = tracing::info_span!("request");
    let produced = async {
        let env = Envelope::new("ThingPublished", &1).unwrap();
        let mut tx = producer.begin().await.unwrap();
        enqueue(&mut tx, &[Outbound::raw("ticketer.events", env.clone())])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        env.traceparent.clone().expect("the envelope carries the trace")
    }
    .instrument(span)
    .await;
    OutboxRelay::new(producer.clone(), bus, 10, Duration::from_millis(50))
        .publish_pending()
        .await
        .unwrap();

    let consumed = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the consumer ran inside a trace");
    let trace = |tp: &str| ticketer_telemetry::parse_trace_id(tp).unwrap();
    assert_eq!(trace(&consumed), trace(&produced));
    assert_ne!(consumed, produced, "the consumer has a span of its own");
    shutdown.cancel();
}
