use ticketer_http::{ApiError, FieldError};

/// Everything the auth service can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("an account with this email already exists")]
    DuplicateEmail,
    #[error("invalid email or password")]
    BadCredentials,
    #[error("invalid refresh token")]
    BadRefreshToken,
    #[error("refresh token expired")]
    RefreshExpired,
    #[error("refresh token reuse detected; the session has been revoked")]
    RefreshReused,
    #[error("too many sign-ins at once; try again shortly")]
    Busy,
    #[error("too many failed sign-ins; try again later")]
    Throttled { retry_after_secs: u64 },
    #[error("user not found")]
    UserNotFound,
    #[error(transparent)]
    Db(#[from] ticketer_db::DbError),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid(errors) => ApiError::Validation(errors),
            AuthError::DuplicateEmail => ApiError::Conflict(e.to_string()),
            AuthError::BadCredentials
            | AuthError::BadRefreshToken
            | AuthError::RefreshExpired
            | AuthError::RefreshReused => ApiError::Unauthorized(e.to_string()),
            AuthError::UserNotFound => ApiError::NotFound(e.to_string()),
            AuthError::Throttled { retry_after_secs } => ApiError::TooManyRequests {
                detail: e.to_string(),
                retry_after_secs,
            },
            AuthError::Busy => ApiError::Overloaded {
                detail: e.to_string(),
                retry_after_secs: 1,
            },
            AuthError::Db(e) => ApiError::internal(e),
            AuthError::Sqlx(e) => ApiError::internal(e),
            AuthError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl axum::response::IntoResponse for AuthError {
    fn into_response(self) -> axum::response::Response {
        ApiError::from(self).into_response()
    }
}
