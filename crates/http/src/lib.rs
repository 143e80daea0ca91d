//! HTTP plumbing shared by every service.

pub mod auth;
mod error;
mod guards;
pub mod health;
pub mod idempotency;
mod json;
pub mod metrics;
mod pagination;
pub mod process;
mod serve;
mod server;
pub mod tls;

pub use auth::{AuthUser, Bearer, Claims, MaybeAuthUser, Role, TokenVerifier};
pub use error::{not_found, positive_id, retry_after_secs, ApiError, ApiResult, FieldError, Problem};
pub use guards::same_secret;
pub use health::Readiness;
pub use json::{parse_json, Json, Query};
pub use metrics::Metrics;
pub use pagination::{Page, PageQuery, PageRequest, MAX_PAGE_SIZE};
pub use server::{
    assemble, bind, empty_openapi, trace_request, Idempotency, MetricsAccess, Plumbing, ServiceApp,
    MAX_URI_LENGTH, REQUEST_ID,
};

/// The first character of `text` that no name, email or event text may
/// hold: NUL and other control characters (line breaks and tabs allowed
/// where `multiline`), and the Unicode text-direction controls that make a
/// string display differently from what it is (U+202A-U+202E,
/// U+2066-U+2069, U+200E, U+200F, U+061C).
pub fn forbidden_char(text: &str, multiline: bool) -> Option<char> {
    text.chars().find(|&c| {
        let direction = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}');
        let allowed_break = multiline && matches!(c, '\n' | '\r' | '\t');
        direction || (c.is_control() && !allowed_break)
    })
}

/// What a field with a [`forbidden_char`] is told.
pub const FORBIDDEN_CHAR: &str = "must not contain control or text-direction characters";

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

#[cfg(test)]
mod tests {
    use super::forbidden_char;

    #[test]
    fn text_that_hides_what_it_is_is_refused() {
        for bad in [
            "a\u{0}b",
            "bell\u{7}",
            "evil\u{202E}gpj.exe",
            "x\u{2066}y",
            "esc\u{1b}[31m",
            "a\u{85}b",
        ] {
            assert!(forbidden_char(bad, true).is_some(), "{bad:?}");
        }
        assert_eq!(forbidden_char("two\nlines\tand a tab", true), None);
        assert_eq!(forbidden_char("two\nlines", false), Some('\n'));
        for good in ["Zoë Ólafsdóttir", "東京ドーム", "مرحبا", "Rock & Roll — Live!"] {
            assert_eq!(forbidden_char(good, false), None, "{good}");
        }
    }
}
