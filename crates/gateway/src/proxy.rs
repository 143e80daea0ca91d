//! The reverse proxy: `/api/v1/<segment>/**` to the owning service, bodies
//! streamed both ways, hop-by-hop headers dropped, trace context and request
//! id passed on.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, Uri},
    response::{IntoResponse, Response},
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use ticketer_http::ApiError;

use crate::Gateway;

pub type HttpClient = Client<HttpConnector, Body>;

/// A pooled connection is given up after `idle`: it must be shorter than
/// the time the services keep an idle connection open (their header-read
/// timeout), or the gateway would send requests down connections the
/// service is closing.
pub fn client(idle: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(512)
        .build(connector)
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// The largest request body any service takes (axum's default limit,
/// which every service keeps): a larger one is refused here, before it
/// travels, as the client's error (413) rather than half-sent upstream and
/// reported as an upstream failure.
const MAX_BODY_BYTES: u64 = 2 * 1024 * 1024;

pub async fn forward(State(gw): State<Gateway>, req: Request) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return ApiError::PayloadTooLarge("the request body is too large".into()).into_response();
    }
    let path = req.uri().path();
    let segment = path
        .strip_prefix("/api/v1/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    let Some(base) = gw.routes.get(segment.as_str()) else {
        return ApiError::NotFound("no such API".into()).into_response();
    };
    let path_and_query = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let uri: Uri = match format!("{base}{path_and_query}").parse() {
        Ok(u) => u,
        Err(_) => return ApiError::BadRequest("malformed request path".into()).into_response(),
    };
    let timeout = Duration::from_secs(gw.config.upstream_timeout_secs);
    let fill = match gw.reads.lookup(&req, timeout).await {
        crate::reads::Lookup::Hit(resp) => return resp,
        crate::reads::Lookup::Fill(fill) => Some(fill),
        crate::reads::Lookup::Pass => None,
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (mut parts, body) = req.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    if let Some(ip) = peer {
        // What a client writes in X-Forwarded-For itself is passed on only
        // behind a proxy we trust; otherwise the services behind us (auth
        // throttles failed sign-ins by address) would believe it.
        let prev = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        let forwarded = match prev {
            Some(prev) if gw.config.trust_forwarded_for => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            parts.headers.insert("x-forwarded-for", v);
        }
    }
    if let Some(host) = original_host {
        parts.headers.insert("x-forwarded-host", host);
    }
    // Continue the trace from the gateway's own span when tracing is on;
    // otherwise the caller's traceparent passes through untouched.
    if let Some(tp) = ticketer_telemetry::current_traceparent() {
        if let Ok(v) = HeaderValue::from_str(&tp) {
            parts.headers.insert(ticketer_telemetry::TRACEPARENT, v);
        }
    }
    parts.uri = uri;
    let upstream = Request::from_parts(parts, body);
    let breaker = gw.breakers.get(segment.as_str());
    if let Some(Err(wait)) = breaker.map(|b| b.lock().expect("breaker lock").admit(Instant::now())) {
        return ApiError::Overloaded {
            detail: format!("the {segment} service is unavailable; try again shortly"),
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
        .into_response();
    }
    let answer = tokio::time::timeout(timeout, gw.client.request(upstream)).await;
    if let Some(b) = breaker {
        let reached = matches!(answer, Ok(Ok(_)));
        let now = Instant::now();
        let mut b = b.lock().expect("breaker lock");
        b.record(reached, now);
        if !reached && b.is_open(now) {
            tracing::warn!(segment, "upstream failing; its breaker is open");
        }
    }
    match answer {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let resp = Response::from_parts(parts, Body::new(body));
            match fill {
                Some(fill) => fill.store(resp).await,
                None => resp,
            }
        }
        // Nothing was sent: the service is down or restarting.
        Ok(Err(e)) if e.is_connect() => {
            tracing::warn!(segment, error = %e, "upstream unavailable");
            ApiError::Overloaded {
                detail: format!("the {segment} service is unavailable; try again shortly"),
                retry_after_secs: 1,
            }
            .into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(segment, error = %e, "upstream failed mid-request");
            let mut resp =
                ApiError::Unavailable(format!("the {segment} service is unavailable")).into_response();
            *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
            resp
        }
        Err(_) => {
            tracing::warn!(segment, "upstream timed out");
            let mut resp = ApiError::Unavailable(format!("the {segment} service did not answer in time"))
                .into_response();
            *resp.status_mut() = http::StatusCode::GATEWAY_TIMEOUT;
            resp
        }
    }
}
