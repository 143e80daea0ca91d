//! HTTP plumbing shared by every service.

pub mod auth;
mod error;
pub mod health;
pub mod idempotency;
mod json;
pub mod metrics;
mod pagination;
pub mod process;
mod server;
pub mod tls;

pub use auth::{AuthUser, Claims, MaybeAuthUser, Role, TokenVerifier};
pub use error::{not_found, ApiError, ApiResult, FieldError, Problem};
pub use health::Readiness;
pub use json::{parse_json, Json, Query};
pub use metrics::Metrics;
pub use pagination::{Page, PageQuery, PageRequest, MAX_PAGE_SIZE};
pub use server::{
    assemble, bind, empty_openapi, launch, launch_with, trace_request, Idempotency, Plumbing, ServiceApp,
    ServiceParts, REQUEST_ID,
};

/// Collects field errors and fails with all of them at once.
#[derive(Debug, Default)]
pub struct Validator(Vec<FieldError>);

impl Validator {
    pub fn check(&mut self, ok: bool, field: &str, message: &str) -> &mut Self {
        if !ok {
            self.0.push(FieldError::new(field, message));
        }
        self
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) -> &mut Self {
        self.0.push(FieldError::new(field, message));
        self
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}
