//! The API gateway: the one address clients use.

mod breaker;
mod config;
mod docs;
mod filters;
mod health;
mod kept;
mod proxy;
mod reads;

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    http::{header, HeaderName, HeaderValue, Method},
    middleware::from_fn_with_state,
    routing::{any, get},
    Router,
};
pub use config::GatewayConfig;
use ticketer_cache::Cache;
use ticketer_http::{Metrics, MetricsAccess, Readiness, ServiceApp, TokenVerifier};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Shared state of the gateway's handlers, behind one pointer: every
/// middleware layer and handler takes its own copy of the state for every
/// request, and copying a dozen shared fields one by one showed in a flash
/// sale's profile (about 1 % of the machine, the gateway's largest own cost
/// after token checks).
#[derive(Clone)]
pub struct Gateway(Arc<Parts>);

impl std::ops::Deref for Gateway {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

pub struct Parts {
    config: Arc<GatewayConfig>,
    /// API segment (`events`) to service base URL.
    routes: Arc<HashMap<&'static str, String>>,
    client: proxy::HttpClient,
    http: reqwest::Client,
    cache: Cache,
    verifier: TokenVerifier,
    reads: Arc<reads::ReadCache>,
    /// The last `/health` and `/openapi.json` answers, briefly.
    health: Arc<kept::Kept<(axum::http::StatusCode, serde_json::Value)>>,
    openapi: Arc<kept::Kept<serde_json::Value>>,
    /// One circuit breaker per API segment's service.
    breakers: Arc<HashMap<&'static str, std::sync::Mutex<breaker::Breaker>>>,
    web: ticketer_web::Web,
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("prefer"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// `routes` behind the per-client rate limit, if one is configured. A
/// filter that is not configured is not installed (nor is the IP filter
/// without lists): every layer nests and boxes each request's future once
/// more, which costs CPU on every request even when the filter lets it
/// straight through.
fn limited<S: Clone + Send + Sync + 'static>(gw: &Gateway, routes: Router<S>) -> Router<S> {
    match gw.config.rate_limit_per_minute {
        0 => routes,
        _ => routes.route_layer(from_fn_with_state(gw.clone(), filters::rate_limit)),
    }
}

pub fn router(gw: Gateway, metrics: Metrics) -> Router {
    let api = limited(&gw, Router::new().route("/api/v1/{*rest}", any(proxy::forward)));
    // The web pages count against the same per-client limit as the API.
    let web = limited(&gw, ticketer_web::router(gw.web.clone()));
    let mut app = Router::new()
        .merge(api)
        .route("/health", get(health::aggregate))
        .route("/openapi.json", get(docs::openapi))
        .route("/docs", get(docs::docs_root))
        .route("/docs/", get(docs::docs_index))
        .route("/docs/{*tail}", get(docs::docs_file))
        .with_state(gw.clone())
        .merge(web);
    if !gw.config.ip_allow.is_empty() || !gw.config.ip_deny.is_empty() {
        app = app.layer(from_fn_with_state(gw.clone(), filters::ip_filter));
    }
    if let Some(cors) = cors(&gw.config.cors_origins) {
        app = app.layer(cors);
    }
    if gw.config.tls.is_some() {
        app = app.layer(axum::middleware::from_fn(strict_transport));
    }
    // Adds the operational routes, metrics, and request ids (outermost, so
    // refusals carry one too).
    ticketer_http::assemble(
        app,
        ticketer_http::Plumbing {
            service: "gateway",
            metrics,
            readiness: Readiness {
                db: None,
                bus: None,
                cache: Some(gw.cache.clone()),
            },
            verifier: None,
            openapi: None,
            idempotency: None,
            metrics_access: MetricsAccess::Bearer(gw.config.metrics_token.clone()),
        },
    )
}

/// Browsers that reached the gateway over HTTPS keep to HTTPS for a year.
async fn strict_transport(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    resp
}

pub fn build(
    config: GatewayConfig,
    cache: Cache,
    verifier: TokenVerifier,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(ticketer_http::tls::server_config(cert, key)?),
        None => None,
    };
    let routes: HashMap<&'static str, String> = config
        .services
        .iter()
        .filter_map(|(svc, url)| svc.api_segment().map(|seg| (seg, url.clone())))
        .collect();
    let breakers = routes.keys().map(|k| (*k, Default::default())).collect();
    let reads = reads::ReadCache::new(config.read_cache_ttl, config.read_cache_entries);
    // The services share the gateway's HTTP_HEADER_READ_TIMEOUT_SECONDS
    // unless set apart: half of it, at most 10 s, stays well inside.
    let pool_idle = (config.http.header_read / 2).min(Duration::from_secs(10));
    let web = ticketer_web::Web::new(
        ticketer_web::Api::new(routes.clone()),
        verifier.clone(),
        config.secure_cookies,
    );
    let gw = Gateway(Arc::new(Parts {
        web,
        reads,
        config: Arc::new(config),
        routes: Arc::new(routes),
        client: proxy::client(pool_idle),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client"),
        cache,
        verifier,
        health: Arc::new(kept::Kept::new(Duration::from_secs(1))),
        openapi: Arc::new(kept::Kept::new(Duration::from_secs(10))),
        breakers: Arc::new(breakers),
    }));
    let limits = gw.config.http;
    let app = ServiceApp::new("gateway", listener, router(gw, Metrics::new("gateway")), shutdown)
        .with_limits(limits);
    Ok(match tls {
        Some(config) => app.with_tls(config),
        None => app,
    })
}
