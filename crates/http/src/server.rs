//! The pieces every service's HTTP server shares, and its run loop.

use std::{io, time::Instant};

use axum::{
    extract::{Request, State},
    http::{HeaderName, HeaderValue},
    middleware::{from_fn_with_state, Next},
    response::Response,
    routing::get,
    serve::ListenerExt,
    Extension, Router,
};
use ticketer_config::HttpLimits;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use crate::guards::{MetricsAccess, MAX_URI_LENGTH};
use crate::{
    guards::{metrics_guard, secure_headers, uri_too_long},
    health, metrics, not_found, Metrics, Readiness, TokenVerifier,
};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What a service hands over for the standard routes and layers.
pub struct Plumbing {
    pub service: &'static str,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub verifier: Option<TokenVerifier>,
    pub openapi: Option<utoipa::openapi::OpenApi>,
    /// Where `Idempotency-Key` responses are kept, and which POSTs honour
    /// the key through the shared middleware; None turns it off.
    pub idempotency: Option<(ticketer_db::Db, Idempotency)>,
    pub metrics_access: MetricsAccess,
}

/// Which POSTs of a service honour `Idempotency-Key` through the shared
/// middleware.
#[derive(Debug, Clone, Copy)]
pub enum Idempotency {
    /// Every POST but these paths, whose handlers keep the key themselves,
    /// atomically with their effect.
    AllPostsExcept(&'static [&'static str]),
    /// None: a replayed answer would be wrong or would store a secret (auth:
    /// token pairs, refresh tokens that rotate).
    Off,
}

/// Adds `/health/live`, `/health/ready`, `/metrics`, `/openapi.json`, the
/// problem+json 404, request metrics, request ids and trace context to `api`.
pub fn assemble(api: Router, p: Plumbing) -> Router {
    let mut ops = Router::new()
        .route("/health/live", get(health::live))
        .merge(
            Router::new()
                .route("/health/ready", get(health::ready))
                .with_state(p.readiness),
        )
        .merge({
            let metrics = Router::new()
                .route("/metrics", get(metrics::render))
                .with_state(p.metrics.clone());
            match p.metrics_access {
                MetricsAccess::Open => metrics,
                MetricsAccess::Bearer(token) => {
                    metrics.route_layer(from_fn_with_state(std::sync::Arc::new(token), metrics_guard))
                }
            }
        });
    if let Some(doc) = p.openapi {
        let doc = std::sync::Arc::new(doc);
        ops = ops.route(
            "/openapi.json",
            get(move || async move { axum::Json((*doc).clone()) }),
        );
    }
    let api = match p.idempotency {
        Some((db, Idempotency::AllPostsExcept(native))) => {
            api.layer(from_fn_with_state((db, native), crate::idempotency::idempotent))
        }
        Some((_, Idempotency::Off)) | None => api,
    };
    let mut app = api
        .merge(ops)
        .route_layer(from_fn_with_state(p.metrics, metrics::track))
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .fallback(not_found);
    if let Some(verifier) = p.verifier {
        app = app.layer(Extension(verifier));
    }
    app.layer(from_fn_with_state(p.service, trace_request))
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Gives every request an id (kept if the caller sent a sane one), a span
/// joined to the caller's trace, and one log line when it completes;
/// refuses a request target that is too long; puts the security headers
/// on every answer. One layer: as three, each nesting and boxing the
/// request's future again, they cost about 7 µs of CPU a request at the
/// gateway and 8 µs at the booking service (docs/benchmarks.md,
/// eighteenth session).
pub async fn trace_request(State(service): State<&'static str>, mut req: Request, next: Next) -> Response {
    let request_id = match req.headers().get(&REQUEST_ID).filter(|v| valid_request_id(v)) {
        Some(v) => v.clone(),
        None => {
            let v = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("uuid is ASCII");
            req.headers_mut().insert(REQUEST_ID, v.clone());
            v
        }
    };
    let traceparent = req
        .headers()
        .get(ticketer_telemetry::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let span = tracing::info_span!(
        "http",
        service,
        method = %req.method(),
        path = %req.uri().path(),
        request_id = request_id.to_str().unwrap_or_default(),
        trace_id = tracing::field::Empty,
    );
    ticketer_telemetry::set_remote_parent(&span, traceparent.as_deref());
    if let Some(id) = ticketer_telemetry::trace_id_of(&span, traceparent.as_deref()) {
        span.record("trace_id", id);
    }
    let start = Instant::now();
    let answer = async move {
        let mut resp = match uri_too_long(&req) {
            Some(refused) => refused,
            None => next.run(req).await,
        };
        secure_headers(resp.headers_mut());
        resp
    };
    let mut resp = answer.instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, latency_ms, "request failed");
        } else {
            tracing::info!(status, latency_ms, "request served");
        }
    });
    resp.headers_mut().insert(REQUEST_ID, request_id);
    resp
}

/// A built service: bound listener, router, and the background tasks
/// (outbox relay, consumers) that stop with it.
pub struct ServiceApp {
    pub name: &'static str,
    listener: TcpListener,
    router: Router,
    tasks: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    limits: HttpLimits,
}

impl ServiceApp {
    pub fn new(
        name: &'static str,
        listener: TcpListener,
        router: Router,
        shutdown: CancellationToken,
    ) -> Self {
        ServiceApp {
            name,
            listener,
            router,
            tasks: Vec::new(),
            shutdown,
            tls: None,
            limits: HttpLimits::default(),
        }
    }

    /// Timeouts and the connection cap (defaults otherwise).
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves HTTPS instead of HTTP.
    pub fn with_tls(mut self, config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    pub fn with_tasks(mut self, tasks: impl IntoIterator<Item = JoinHandle<()>>) -> Self {
        self.tasks.extend(tasks);
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until the shutdown token fires, lets in-flight requests
    /// finish, then waits for the background tasks to stop.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let token = self.shutdown.clone();
        let stopped = async move { token.cancelled().await };
        let tls = self.tls.is_some();
        tracing::info!(service = self.name, port = self.port(), tls, "listening");
        let limits = self.limits;
        let router = self.router;
        match self.tls {
            Some(config) => {
                let listener = crate::tls::TlsListener::new(
                    self.listener,
                    config,
                    limits.header_read,
                    limits.max_connections,
                )?;
                crate::serve::serve(listener, router, limits, stopped).await;
            }
            None => {
                // Answers go out as soon as they are written, not held back
                // by Nagle's algorithm until the last segment is acknowledged.
                let listener = self.listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                crate::serve::serve(listener, router, limits, stopped).await
            }
        }
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!(service = self.name, "stopped");
        Ok(())
    }
}

/// The API document of a service that has no routes of its own yet.
pub fn empty_openapi(name: &str) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{InfoBuilder, OpenApiBuilder};
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(format!("Ticketer {name}"))
                .version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .build()
}

/// Binds `host:port`; port 0 picks a free port (tests).
pub async fn bind(host: &str, port: u16) -> io::Result<TcpListener> {
    TcpListener::bind((host, port)).await
}
