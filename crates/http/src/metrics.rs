//! Prometheus metrics, one registry per service so that an embedded process
//! running all seven still reports each service's figures on its own port.

use std::{
    sync::{Arc, RwLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{header, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Metric, Registry},
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// A service's metric registry plus the HTTP request metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    requests: Family<HttpLabels, Counter>,
    latency: Family<HttpLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("service"),
                std::borrow::Cow::Owned(service.to_string()),
            )]
            .into_iter(),
        );
        let requests = Family::<HttpLabels, Counter>::default();
        let latency =
            Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "ticketer_http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "ticketer_http_request_duration_seconds",
            "HTTP request latency by route and status",
            latency.clone(),
        );
        Metrics {
            registry: Arc::new(RwLock::new(registry)),
            requests,
            latency,
        }
    }

    /// Adds a service's own metric (business counters, queue depths...).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .write()
            .expect("registry lock")
            .register(name, help, metric);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry.read().expect("registry lock")).expect("writing to a String");
        // The process figures go before the OpenMetrics end marker.
        let body_end = out.rfind("# EOF").unwrap_or(out.len());
        out.insert_str(body_end, &crate::process::render());
        out
    }
}

/// Route middleware recording count and latency by matched route.
pub async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let labels = HttpLabels {
        method,
        route,
        status: resp.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}

pub async fn render(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics.render(),
    )
}
