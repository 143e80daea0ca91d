//! One trace per booking: `ticketer dev` exports its spans over OTLP/HTTP to
//! a receiver this test runs, and the spans of one booking form one tree
//! rooted at the gateway's request, with every service's work and every
//! message hop (the outbox relay's publish, the consumer's consume) beneath
//! it in the order the saga caused them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{routing::post, Router};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as AnyValue,
};
use prost::Message;
use serde_json::json;

use crate::harness::{
    call_gateway as call, dev_env, event_on_sale_at, signed_up, spawn_ticketer, terminate, wait_ok,
};

#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    fields: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps every span exported to it.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut kept = kept.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        for s in scope.spans {
                            let fields = s
                                .attributes
                                .iter()
                                .filter_map(|a| match a.value.as_ref()?.value.as_ref()? {
                                    AnyValue::StringValue(v) => Some((a.key.clone(), v.clone())),
                                    _ => None,
                                })
                                .collect();
                            kept.push(Span {
                                trace: hex(&s.trace_id),
                                id: hex(&s.span_id),
                                parent: hex(&s.parent_span_id),
                                name: s.name,
                                fields,
                            });
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

#[tokio::test]
async fn a_booking_is_one_trace_rooted_at_the_gateway() {
    let (collector, spans) = receiver().await;
    let data = tempfile::tempdir().unwrap();
    // Spans are recorded at info. The booking's first steps are asked for
    // directly (the secret named, as an operator would).
    let (env, gateway) = dev_env(
        data.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("RUST_LOG", "info"),
            ("SERVICE_TOKEN", "trace-test-secret"),
        ],
    );
    let mut dev = spawn_ticketer(&["dev"], &env);
    wait_ok(&format!("{gateway}/health")).await;
    let http = reqwest::Client::new();

    let (organizer, _) = signed_up(&http, &gateway, "ORGANIZER", "s3cret-pass").await;
    let id = event_on_sale_at(&http, &gateway, &organizer, 5).await;
    let (customer, _) = signed_up(&http, &gateway, "CUSTOMER", "s3cret-pass").await;
    let booking = json!({"event_id": id, "number_of_tickets": 1, "payment_token": "tok_visa"});
    let booked = call(
        &http,
        reqwest::Method::POST,
        format!("{gateway}/api/v1/bookings"),
        Some(&customer),
        Some(booking),
    )
    .await;
    assert_eq!(booked["status"], "CONFIRMED", "{booked}");
    // Until the customer has been told: the saga's last hop.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mine = call(
            &http,
            reqwest::Method::GET,
            format!("{gateway}/api/v1/notifications/mine"),
            Some(&customer),
            None,
        )
        .await;
        if mine.to_string().contains("BOOKING_CONFIRMED") {
            break;
        }
        assert!(Instant::now() < deadline, "never told: {mine}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopping flushes the exporter.
    assert_eq!(terminate(&mut dev).await, Some(0));

    let spans = spans.lock().unwrap().clone();
    let field = |s: &Span, k: &str| s.fields.get(k).cloned().unwrap_or_default();
    let booking_request = spans
        .iter()
        .find(|s| {
            s.name == "http"
                && field(s, "service") == "booking"
                && field(s, "path") == "/api/v1/bookings"
                && field(s, "method") == "POST"
        })
        .expect("the booking service's request span");
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace == booking_request.trace)
        .collect();
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.id.as_str(), *s)).collect();
    let roots: Vec<&&Span> = trace
        .iter()
        .filter(|s| !by_id.contains_key(s.parent.as_str()))
        .collect();
    assert_eq!(roots.len(), 1, "one tree: {roots:#?}");
    let root = roots[0];
    assert_eq!(
        (root.name.as_str(), field(root, "service").as_str()),
        ("http", "gateway"),
        "{root:?}"
    );
    assert!(
        root.parent.chars().all(|c| c == '0') || root.parent.is_empty(),
        "the gateway's span has no parent: {root:?}"
    );

    let hop = |consumer: &str, kind: &str| -> &Span {
        trace
            .iter()
            .find(|s| s.name == "consume" && field(s, "consumer") == consumer && field(s, "kind") == kind)
            .unwrap_or_else(|| {
                panic!("no {kind} consumed from {consumer} in the booking's trace: {trace:#?}")
            })
    };
    let descends = |child: &Span, ancestor: &Span| {
        let mut at = child;
        while let Some(parent) = by_id.get(at.parent.as_str()) {
            if parent.id == ancestor.id {
                return true;
            }
            at = parent;
        }
        false
    };
    // The saga's path, each hop beneath the one that caused it: the hold
    // asked of the ticket service directly, the payment service charging
    // on the hold's news, the saga recording the hold and the payment
    // (in either order: the confirmation is beneath the later one).
    let paid = hop("booking.payments", "PaymentSucceeded");
    let heard = hop("ticket.operations", "TicketsHeld");
    let confirmed = hop("booking.notifications", "BookingConfirmed");
    let last = if descends(confirmed, paid) { paid } else { heard };
    let path = [
        booking_request,
        hop("ticket.holds", "HoldTickets"),
        hop("payment.commands", "TicketsHeld"),
        paid,
    ];
    let confirmation = [last, confirmed];
    for pair in path.windows(2).chain([&confirmation[..]]) {
        assert!(
            descends(pair[1], pair[0]),
            "{:?} is not beneath {:?}",
            pair[1],
            pair[0]
        );
        // The outbox relay's publish is the hop between them, but for the
        // hold and its news, asked and answered over HTTP only, and for the
        // payment's news, also answered over HTTP and applied whichever way
        // comes first (the other is skipped, with no span).
        let kind = field(pair[1], "kind");
        let published = trace
            .iter()
            .find(|s| s.name == "publish" && field(s, "kind") == kind);
        match kind.as_str() {
            "HoldTickets" | "TicketsHeld" => {
                assert!(
                    published.is_none(),
                    "a hold asked directly is not also published: {kind}"
                )
            }
            "PaymentSucceeded" => {}
            _ => {
                let published = published.unwrap_or_else(|| panic!("no publish span for {kind}"));
                assert!(
                    descends(published, pair[0]) && descends(pair[1], published),
                    "{kind}: {published:?}"
                );
            }
        }
    }
    // The ticket service sold the seats on the same payment's news, and
    // the saga heard of the hold beside the charge.
    let sold = hop("ticket.commands", "PaymentSucceeded");
    assert!(
        descends(sold, path[2]),
        "the sale is beneath the charge: {sold:?}"
    );
    assert!(
        descends(heard, path[1]),
        "the saga's news of the hold is beneath the hold: {heard:?}"
    );
    assert!(descends(booking_request, root));
}
