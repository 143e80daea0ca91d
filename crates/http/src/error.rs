//! RFC 7807 problem+json, the one shape every error takes on the wire.

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

/// One invalid input field.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Errors as the HTTP edge reports them. Service error types convert into
/// this; internal causes are logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    /// Well-formed, but these fields cannot be used (422), each named.
    #[error("unprocessable fields")]
    UnprocessableFields(Vec<FieldError>),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Nothing left to sell (409, problem type `sold-out`).
    #[error("{0}")]
    SoldOut(String),
    /// Nothing left to sell now, but seats held for other buyers may come
    /// back: sold out (409) with a Retry-After.
    #[error("{detail}")]
    SoldOutForNow { detail: String, retry_after_secs: u64 },
    /// The event's sale is behind a waiting room, and the caller has not
    /// been admitted (403, problem type `waiting-room`).
    #[error("{0}")]
    NotAdmitted(String),
    /// Slow down: try again after `retry_after_secs` (429).
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// Too busy right now: try again after `retry_after_secs`.
    #[error("{detail}")]
    Overloaded { detail: String, retry_after_secs: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// An id given as text (a path segment, a query value) that must be a
/// positive integer; 400 naming `field` otherwise.
pub fn positive_id(raw: &str, field: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::field(field, "must be a positive integer"))
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::NotAdmitted(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::SoldOut(_) | ApiError::SoldOutForNow { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::Unprocessable(_) | ApiError::UnprocessableFields(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation-error",
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotAdmitted(_) => "waiting-room",
            ApiError::NotFound(_) => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::SoldOut(_) | ApiError::SoldOutForNow { .. } => "sold-out",
            ApiError::Unprocessable(_) | ApiError::UnprocessableFields(_) => "unprocessable",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::PayloadTooLarge(_) => "payload-too-large",
            ApiError::UriTooLong(_) => "uri-too-long",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::TooManyRequests { .. } => "rate-limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let (detail, errors) = match self {
            ApiError::Validation(errors) | ApiError::UnprocessableFields(errors) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                (format!("invalid fields: {}", fields.join(", ")), errors.clone())
            }
            ApiError::Internal(_) => ("an internal error occurred".to_string(), Vec::new()),
            other => (other.to_string(), Vec::new()),
        };
        Problem {
            kind: format!("https://ticketer.dev/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = ?e, "internal error");
        }
        let problem = self.to_problem();
        let mut resp = (self.status(), axum::Json(problem)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::TooManyRequests { retry_after_secs, .. }
            | ApiError::Overloaded { retry_after_secs, .. }
            | ApiError::SoldOutForNow { retry_after_secs, .. } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unauthorized(_) => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

/// The seconds an answer's Retry-After asks a client to wait, as
/// [`ApiError`] writes it; None without one (or with a date, which no
/// service sends).
pub fn retry_after_secs(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl From<ticketer_db::DbError> for ApiError {
    fn from(e: ticketer_db::DbError) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<ticketer_db::SqlxError> for ApiError {
    fn from(e: ticketer_db::SqlxError) -> Self {
        ApiError::Internal(e.into())
    }
}

/// Handlers return this.
pub type ApiResult<T> = Result<T, ApiError>;

/// 404 problem for paths no route matches.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

/// 405 problem for a path that exists, asked with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this resource does not take that method".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_back_as_written() {
        let come_back = ApiError::SoldOutForNow {
            detail: "held".into(),
            retry_after_secs: 5,
        };
        assert_eq!(retry_after_secs(come_back.into_response().headers()), Some(5));
        let sold = ApiError::SoldOut("gone".into()).into_response();
        assert_eq!(retry_after_secs(sold.headers()), None);
        let mut dated = HeaderMap::new();
        dated.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_secs(&dated), None);
    }
}
