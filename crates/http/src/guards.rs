//! The checks and headers every server puts around its routes: who may
//! read `/metrics`, how long a request target may be, and the headers
//! every answer carries.

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{not_found, ApiError};

/// Who may read `/metrics`.
#[derive(Debug, Clone)]
pub enum MetricsAccess {
    /// Whoever reaches the port: a service's own port, private to the
    /// gateway and the operators' network.
    Open,
    /// Only with `Authorization: Bearer <token>` (the gateway, whose port is
    /// public); None: nobody, and the route answers 404 like any unknown one.
    Bearer(Option<String>),
}

/// The longest request target served; longer ones get 414 problem+json.
pub const MAX_URI_LENGTH: usize = 8 * 1024;

/// Headers every answer carries: no content sniffing, never framed by
/// another site (clickjacking), no referrer leaked to other sites.
pub(crate) fn secure_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
    ] {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
}

/// `/metrics` behind a bearer token, compared in constant time.
pub(crate) async fn metrics_guard(
    State(token): State<std::sync::Arc<Option<String>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = token.as_deref() else {
        return not_found().await.into_response();
    };
    let given = crate::auth::bearer_from_headers(req.headers()).unwrap_or_default();
    if !same_secret(given, token) {
        return ApiError::Unauthorized("the metrics token is required".into()).into_response();
    }
    next.run(req).await
}

/// Whether `given` is `secret`, in time that does not depend on where they
/// differ: the digests are compared, every byte of them.
pub fn same_secret(given: &str, secret: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let (a, b) = (digest(given), digest(secret));
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The 414 problem+json for a request target longer than
/// [`MAX_URI_LENGTH`], refused before any handler parses it. (Targets
/// longer than the HTTP parser's own buffer never get this far and get a
/// bare 414/431.)
pub(crate) fn uri_too_long(req: &Request) -> Option<Response> {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    (len > MAX_URI_LENGTH).then(|| {
        ApiError::UriTooLong(format!(
            "the request target is {len} bytes; at most {MAX_URI_LENGTH} are accepted"
        ))
        .into_response()
    })
}
