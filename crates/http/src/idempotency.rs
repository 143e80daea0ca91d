//! `Idempotency-Key` on mutating POSTs: a retry with the same key and body
//! gets the first answer again and has no second effect; the same key with a
//! different body is refused with 422. Keys are scoped to the caller, and a
//! 5xx answer is not kept, so a failed attempt can be retried.

use axum::{
    body::{to_bytes, Body},
    extract::{Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ticketer_db::{time, Db, Row};

use crate::{auth::bearer_from_headers, ApiError, TokenVerifier};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Request and stored-response bodies above this are not accepted here.
const MAX_BODY: usize = 1024 * 1024;

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
        return ApiError::BadRequest("request body too large".into()).into_response();
    };
    let hash = digest(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        &bytes,
    ]);

    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (scope, idem_key, request_hash, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(&scope)
    .bind(&key)
    .bind(&hash)
    .bind(time::now())
    .execute(db.pool())
    .await;
    match claimed {
        Err(e) => return ApiError::internal(e).into_response(),
        Ok(done) if done.rows_affected() == 0 => return answer_repeat(&db, &scope, &key, &hash).await,
        Ok(_) => {}
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
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let stored = sqlx::query(
        "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5 WHERE scope = $1 AND idem_key = $2",
    )
    .bind(&scope)
    .bind(&key)
    .bind(status.as_u16() as i64)
    .bind(content_type)
    .bind(String::from_utf8_lossy(&resp_bytes).into_owned())
    .execute(db.pool())
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not keep an idempotent response");
    }
    Response::from_parts(resp_parts, Body::from(resp_bytes))
}

async fn answer_repeat(db: &Db, scope: &str, key: &str, hash: &str) -> Response {
    let row = sqlx::query(
        "SELECT request_hash, status, content_type, body FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(db.pool())
    .await;
    let row = match row {
        Ok(Some(row)) => row,
        // Deleted in between (the first attempt failed): ask for a retry.
        Ok(None) => return ApiError::Conflict("retry the request".into()).into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let stored_hash: String = row.try_get("request_hash").unwrap_or_default();
    if stored_hash != hash {
        return ApiError::Unprocessable("this Idempotency-Key was used for a different request".into())
            .into_response();
    }
    match row.try_get::<Option<i64>, _>("status") {
        Ok(Some(status)) => replay(
            status,
            row.try_get("content_type").ok().flatten(),
            row.try_get("body").ok().flatten(),
        ),
        _ => ApiError::Conflict("a request with this Idempotency-Key is still in progress".into())
            .into_response(),
    }
}

async fn forget(db: &Db, scope: &str, key: &str) {
    let _ = sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
        .bind(scope)
        .bind(key)
        .execute(db.pool())
        .await;
}
