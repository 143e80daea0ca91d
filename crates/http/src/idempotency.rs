//! `Idempotency-Key` on mutating POSTs: a retry with the same key and body
//! gets the first answer again and has no second effect; the same key with a
//! different body is refused with 422. Keys are scoped to the caller, and a
//! 5xx answer is not kept, so a failed attempt can be retried.
//!
//! The key is claimed in its own commit before the request runs. A process
//! killed in between leaves the claim without an answer: a retry gets 409
//! "in progress" until the claim is [`STALE_CLAIM`] old, then runs the
//! request afresh. Where running twice must never happen, the service keeps
//! the key in its own rows, in the same transaction as the effect (booking
//! creation does; those paths are exempt from this middleware).

use axum::{
    body::{to_bytes, Body},
    extract::{Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ticketer_db::{idempotency, Db};

use crate::{auth::bearer_from_headers, ApiError, TokenVerifier};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Request and stored-response bodies above this are not accepted here.
const MAX_BODY: usize = 1024 * 1024;

/// A key claimed by a request that never stored its answer (its process
/// was killed mid-request) is taken over by a retry once the claim is this
/// old: far longer than any request here runs, so a live request is never
/// run twice, yet a client is not refused with 409 for the key's lifetime.
pub const STALE_CLAIM: std::time::Duration = std::time::Duration::from_secs(60);

/// A hex SHA-256 of `parts`, each length-prefixed so that no two different
/// lists of parts digest alike: tells a retried request from another one.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The request's `Idempotency-Key`, if it sent one; 400 when it is not 1 to
/// 255 visible ASCII characters.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let b = v.as_bytes();
    if !b.is_empty() && b.len() <= 255 && b.iter().all(|c| c.is_ascii_graphic()) {
        Ok(Some(String::from_utf8_lossy(b).into_owned()))
    } else {
        Err(ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ))
    }
}

/// Who the key belongs to: the verified token's subject, else anonymous.
/// (The verifier remembers the token, so the handler's own check of the
/// caller does not repeat the signature check.)
async fn scope(headers: &HeaderMap, verifier: Option<TokenVerifier>) -> String {
    match (bearer_from_headers(headers), verifier) {
        (Some(token), Some(v)) => match v.verify(token).await {
            Ok(claims) => format!("user:{}", claims.sub),
            Err(_) => "anonymous".into(),
        },
        _ => "anonymous".into(),
    }
}

fn replay(status: i64, content_type: Option<String>, body: Option<String>) -> Response {
    let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
    let mut resp = (status, body.unwrap_or_default()).into_response();
    if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

pub async fn idempotent(
    State((db, native)): State<(Db, &'static [&'static str])>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::POST || native.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let key = match key_of(req.headers()) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(req).await,
        Err(e) => return e.into_response(),
    };
    let (parts, body) = req.into_parts();
    let scope = scope(&parts.headers, parts.extensions.get::<TokenVerifier>().cloned()).await;
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return ApiError::PayloadTooLarge("the request body is too large".into()).into_response();
    };
    let hash = digest(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        &bytes,
    ]);

    let claimed = match idempotency::claim(&db, &scope, &key, &hash).await {
        Ok(claimed) => claimed,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    if !claimed {
        match idempotency::take_over_stale(&db, &scope, &key, &hash, STALE_CLAIM).await {
            Ok(true) => {
                tracing::warn!(
                    scope,
                    "an Idempotency-Key left claimed by an unfinished request was taken over"
                );
            }
            Ok(false) => return answer_repeat(&db, &scope, &key, &hash).await,
            Err(e) => return ApiError::internal(e).into_response(),
        }
    }

    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = resp.status();
    if status.is_server_error() {
        forget(&db, &scope, &key).await;
        return resp;
    }
    let (resp_parts, resp_body) = resp.into_parts();
    let Ok(resp_bytes) = to_bytes(resp_body, MAX_BODY).await else {
        forget(&db, &scope, &key).await;
        return ApiError::internal(anyhow::anyhow!("response too large to keep")).into_response();
    };
    let content_type = resp_parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let body = String::from_utf8_lossy(&resp_bytes);
    let stored = idempotency::store_answer(&db, &scope, &key, status.as_u16(), content_type, &body).await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not keep an idempotent response");
    }
    Response::from_parts(resp_parts, Body::from(resp_bytes))
}

async fn answer_repeat(db: &Db, scope: &str, key: &str, hash: &str) -> Response {
    let kept = match idempotency::find(db, scope, key).await {
        Ok(Some(kept)) => kept,
        // Deleted in between (the first attempt failed): ask for a retry.
        Ok(None) => return ApiError::Conflict("retry the request".into()).into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    if kept.request_hash != hash {
        return ApiError::Unprocessable("this Idempotency-Key was used for a different request".into())
            .into_response();
    }
    match kept.status {
        Some(status) => replay(status, kept.content_type, kept.body),
        None => ApiError::Conflict("a request with this Idempotency-Key is still in progress".into())
            .into_response(),
    }
}

async fn forget(db: &Db, scope: &str, key: &str) {
    if let Err(e) = idempotency::forget(db, scope, key).await {
        tracing::warn!(error = %e, "could not drop the claim of a failed idempotent request");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use axum::{routing::post, Router};
    use ticketer_db::time;
    use ticketer_testkit::TestDatabase;
    use tower::ServiceExt;

    use super::*;

    /// A service with one idempotent POST that counts its runs.
    fn app(db: Db, runs: Arc<AtomicUsize>) -> Router {
        Router::new()
            .route(
                "/things",
                post(move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::CREATED, "made")
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                (db, &[] as &'static [&'static str]),
                idempotent,
            ))
    }

    async fn post_with_key(app: &Router, key: &str) -> StatusCode {
        let req = Request::post("/things")
            .header(IDEMPOTENCY_KEY, key)
            .body(Body::from("{}"))
            .unwrap();
        app.clone().oneshot(req).await.unwrap().status()
    }

    /// A claim left by a request whose process died before it answered,
    /// `age` ago.
    async fn orphan_claim(db: &Db, key: &str, age: chrono::Duration) {
        let hash = digest(&[b"POST", b"/things", b"{}"]);
        sqlx::query("INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind("anonymous")
            .bind(key)
            .bind(hash)
            .bind(time::format(chrono::Utc::now() - age))
            .execute(db.pool())
            .await
            .unwrap();
    }

    async fn a_claim_left_by_a_killed_request_is_taken_over_once_stale(postgres: bool) {
        let tdb = if postgres {
            let Some(url) = ticketer_testkit::postgres_url() else {
                return;
            };
            TestDatabase::postgres(&url, "idem").await.unwrap()
        } else {
            TestDatabase::sqlite()
        };
        let db = tdb.connect().await.unwrap();
        db.migrate("test", &[]).await.unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let app = app(db.clone(), runs.clone());

        // Claimed a moment ago: that request may still be running.
        orphan_claim(&db, "fresh", chrono::Duration::seconds(1)).await;
        assert_eq!(post_with_key(&app, "fresh").await, StatusCode::CONFLICT);
        assert_eq!(runs.load(Ordering::SeqCst), 0);

        // Claimed long ago and never answered: the retry runs, once, and
        // its answer is what later retries get.
        let stale = chrono::Duration::from_std(STALE_CLAIM).unwrap() + chrono::Duration::seconds(5);
        orphan_claim(&db, "orphaned", stale).await;
        assert_eq!(post_with_key(&app, "orphaned").await, StatusCode::CREATED);
        assert_eq!(post_with_key(&app, "orphaned").await, StatusCode::CREATED);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the replay did not run it again");
    }

    #[tokio::test]
    async fn sqlite_a_claim_left_by_a_killed_request_is_taken_over_once_stale() {
        a_claim_left_by_a_killed_request_is_taken_over_once_stale(false).await;
    }

    #[tokio::test]
    #[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
    async fn postgres_a_claim_left_by_a_killed_request_is_taken_over_once_stale() {
        a_claim_left_by_a_killed_request_is_taken_over_once_stale(true).await;
    }
}
