//! The pages' only way to the data: the same public API a client uses,
//! sent straight to the service that owns the path (the gateway's routing
//! table), with the visitor's own token. Every rule (roles, ownership,
//! validation, prices) stays in the services.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::Value;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `/api/v1/{segment}/...` -> the owning service's base URL.
    routes: Arc<HashMap<&'static str, String>>,
}

/// A refusal or failure, as the service explained it (RFC 7807).
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: u16,
    /// The problem's `type` URI; its last segment names the kind.
    pub kind: String,
    pub title: String,
    pub detail: String,
    /// `(field, message)` for validation errors.
    pub fields: Vec<(String, String)>,
    /// When to try again (Retry-After, in seconds), if the service said.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem {
            status: 503,
            kind: String::new(),
            title: "Service unavailable".into(),
            detail: detail.into(),
            fields: Vec::new(),
            retry_after: None,
        }
    }

    pub fn is(&self, kind: &str) -> bool {
        self.kind.rsplit('/').next() == Some(kind)
    }

    /// The message for one form field, if the service named it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, m)| m.as_str())
    }

    fn from_answer(status: u16, body: &Value) -> Self {
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
        let fields = body["errors"]
            .as_array()
            .map(|errs| {
                errs.iter()
                    .map(|e| {
                        (
                            e["field"].as_str().unwrap_or_default().to_string(),
                            e["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Problem {
            status,
            kind: text("type"),
            title: text("title"),
            detail: text("detail"),
            fields,
            retry_after: None,
        }
    }
}

/// One call: a method and path, optionally a token, body and extra headers.
pub struct Call<'a> {
    pub method: reqwest::Method,
    pub path: String,
    pub token: Option<&'a str>,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
}

impl<'a> Call<'a> {
    pub fn get(path: impl Into<String>) -> Self {
        Call {
            method: reqwest::Method::GET,
            path: path.into(),
            token: None,
            body: None,
            headers: Vec::new(),
        }
    }

    pub fn post(path: impl Into<String>, body: Option<Value>) -> Self {
        Call {
            method: reqwest::Method::POST,
            body,
            ..Call::get(path)
        }
    }

    pub fn patch(path: impl Into<String>, body: Value) -> Self {
        Call {
            method: reqwest::Method::PATCH,
            body: Some(body),
            ..Call::get(path)
        }
    }

    pub fn by(mut self, token: Option<&'a str>) -> Self {
        self.token = token;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl Api {
    pub fn new(routes: HashMap<&'static str, String>) -> Self {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(35))
                .build()
                .expect("HTTP client"),
            routes: Arc::new(routes),
        }
    }

    fn url(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix("/api/v1/")?;
        let segment = rest.split(['/', '?']).next()?;
        let base = self.routes.get(segment)?;
        Some(format!("{}{path}", base.trim_end_matches('/')))
    }

    /// The answer's JSON (null for 204) on 2xx; the service's problem
    /// otherwise; 503 when the service did not answer.
    pub async fn send(&self, call: Call<'_>) -> Result<Value, Problem> {
        let url = self
            .url(&call.path)
            .ok_or_else(|| Problem::unavailable(format!("no service answers {}", call.path)))?;
        let mut req = self.http.request(call.method, url);
        if let Some(t) = call.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in &call.headers {
            req = req.header(*k, v);
        }
        if let Some(b) = &call.body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            tracing::warn!(error = %e, "web: a service did not answer");
            Problem::unavailable("a service did not answer; try again in a moment")
        })?;
        let status = resp.status().as_u16();
        let retry_after = ticketer_http::retry_after_secs(resp.headers());
        let body = resp.bytes().await.unwrap_or_default();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            Err(Problem {
                retry_after,
                ..Problem::from_answer(status, &json)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_to_the_service_that_owns_them() {
        let api = Api::new(HashMap::from([
            ("events", "http://127.0.0.1:5002/".to_string()),
            ("bookings", "http://127.0.0.1:5004".to_string()),
        ]));
        assert_eq!(
            api.url("/api/v1/events?q=jazz").as_deref(),
            Some("http://127.0.0.1:5002/api/v1/events?q=jazz")
        );
        assert_eq!(
            api.url("/api/v1/bookings/mine").as_deref(),
            Some("http://127.0.0.1:5004/api/v1/bookings/mine")
        );
        assert_eq!(api.url("/api/v1/tickets/mine"), None);
        assert_eq!(api.url("/metrics"), None);
    }

    #[test]
    fn problems_keep_the_fields_the_service_named() {
        let body = serde_json::json!({"title": "Bad Request", "detail": "invalid input",
            "errors": [{"field": "ticket_capacity", "message": "must be between 1 and 1000000"}]});
        let p = Problem::from_answer(400, &body);
        assert_eq!(p.field("ticket_capacity"), Some("must be between 1 and 1000000"));
        assert_eq!(p.field("event_name"), None);
        assert_eq!(p.detail, "invalid input");
    }
}
