//! The receiving end of a direct call between services: messages of one
//! kind a service would otherwise get from its queue, asked for over HTTP
//! by another service showing the shared `SERVICE_TOKEN`.

use axum::http::HeaderMap;
use ticketer_bus::{Envelope, HandleError};
use ticketer_config::ServiceToken;
use ticketer_contract::Message;
use ticketer_http::{same_secret, ApiError};

/// The messages a direct call asks about: only from a caller showing the
/// token (checked before the body is read), a JSON array of at most `max`
/// envelopes, every one of kind `M`.
pub fn asked<M: Message>(
    headers: &HeaderMap,
    body: &[u8],
    token: &ServiceToken,
    max: usize,
) -> Result<Vec<Envelope>, ApiError> {
    let given = ticketer_http::auth::bearer_from_headers(headers).unwrap_or_default();
    if !same_secret(given, token.secret()) {
        return Err(ApiError::Unauthorized("the service token is required".into()));
    }
    let msgs: Vec<Envelope> = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("expected a JSON array of message envelopes: {e}")))?;
    if msgs.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} messages at once; at most {max}",
            msgs.len()
        )));
    }
    if let Some(other) = msgs.iter().find(|e| e.kind != M::KIND) {
        return Err(ApiError::Unprocessable(format!(
            "only {} are taken here, not {}",
            M::KIND,
            other.kind
        )));
    }
    Ok(msgs)
}

/// Why messages asked for directly could not be applied, for the caller:
/// 422 if they never will be, 503 if they may later (it then leaves them
/// to the queue either way).
pub fn refusal(e: HandleError) -> ApiError {
    match e {
        HandleError::Permanent(reason) => ApiError::Unprocessable(reason),
        HandleError::Transient(reason) => ApiError::Unavailable(reason),
    }
}
