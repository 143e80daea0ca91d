//! Request extractors whose failures are problem+json naming the field.

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{ApiError, FieldError};

/// Like `axum::Json`, but a malformed body, a missing field or a value of the
/// wrong type is a 400 problem that names the field.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or(""));
        if content_type.is_some_and(|ct| !is_json(ct)) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body (Content-Type: application/json)".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("the request body is too large".into())
            } else {
                ApiError::BadRequest(format!("could not read the body: {e}"))
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Whether a Content-Type names JSON: `application/json` or a
/// `application/<something>+json` type, parameters (charset) allowed.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .and_then(|sub| sub.strip_suffix("+json"))
            .is_some_and(|sub| !sub.is_empty() && !sub.contains('/'))
}

/// Deserializes `bytes`, turning serde's message into a field error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = strip_position(&inner.to_string());
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadRequest(format!("malformed JSON: {message}"));
        }
        // "missing field `x`" is reported at the parent object.
        let field = match message.split('`').nth(1) {
            Some(name) if message.starts_with("missing field") => join_path(&path, name),
            _ if path == "." => "body".to_string(),
            _ => path,
        };
        ApiError::Validation(vec![FieldError::new(field, message)])
    })
}

fn join_path(parent: &str, name: &str) -> String {
    if parent == "." || parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Like `axum::extract::Query`, with problem+json rejections.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                let text = e.body_text();
                let field = text.split('`').nth(1).unwrap_or("query").to_string();
                ApiError::Validation(vec![FieldError::new(field, text)])
            })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_content_types() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
        ] {
            assert!(super::is_json(ct), "{ct}");
        }
        for ct in [
            "application/jsonfoo",
            "text/plain",
            "application/+json",
            "application/x/y+json",
            "",
            "json",
        ] {
            assert!(!super::is_json(ct), "{ct}");
        }
    }

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u32,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        when: String,
    }

    fn field_of(json: &str) -> String {
        match parse_json::<Body>(json.as_bytes()).unwrap_err() {
            ApiError::Validation(errs) => errs[0].field.clone(),
            other => format!("not a validation error: {other}"),
        }
    }

    #[test]
    fn names_the_missing_field() {
        assert_eq!(field_of(r#"{"name": "x"}"#), "count");
        assert_eq!(
            field_of(r#"{"name": "x", "count": 1, "inner": {}}"#),
            "inner.when"
        );
    }

    #[test]
    fn names_the_mistyped_field() {
        assert_eq!(field_of(r#"{"name": "x", "count": "many"}"#), "count");
        assert_eq!(field_of(r#"{"name": 5, "count": 1}"#), "name");
    }

    #[test]
    fn malformed_json_is_a_plain_bad_request() {
        assert!(matches!(
            parse_json::<Body>(b"{\"name\": "),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_json::<Body>(b"not json"),
            Err(ApiError::BadRequest(_))
        ));
    }
}
