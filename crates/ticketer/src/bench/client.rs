//! The bench's HTTP client: every call retried as a real client would
//! (same request, same Idempotency-Key) on 5xx, 429, connection failures and
//! 409 "still in progress", until its patience runs out.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::bail;
use serde_json::{json, Value};

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    /// Requests sent, retries included.
    pub(crate) sent: AtomicUsize,
}

/// How long a caller keeps retrying, and where it counts the errors.
#[derive(Clone, Copy)]
pub(crate) struct Patience<'a> {
    pub(crate) errors: &'a AtomicUsize,
    pub(crate) deadline: Instant,
}

/// An answer, or why there was none worth keeping.
pub(crate) enum Reply {
    /// An answer, and when it said to come back (Retry-After), if it did:
    /// a sold-out refusal while seats are only held says so.
    Answer(u16, Value, Option<Duration>),
    /// Worth retrying after the given pause (5xx, 429, 409 in progress,
    /// connection failures).
    Retry(Duration),
}

impl Client {
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(_) => return Reply::Retry(Duration::ZERO),
        };
        let status = resp.status().as_u16();
        let pause = ticketer_http::retry_after_secs(resp.headers()).map(Duration::from_secs);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let in_progress = status == 409
            && body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("in progress") || d.contains("retry the request"));
        if status >= 500 || status == 429 || in_progress {
            return Reply::Retry(pause.unwrap_or(Duration::ZERO));
        }
        Reply::Answer(status, body, pause)
    }

    /// Sends until there is an answer, backing off between errors; counts
    /// the errors in `patience.errors`. The answer's status, its body, and
    /// when it said to come back, if it did; None when the deadline passed
    /// first.
    pub(crate) async fn answer(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        patience: Patience<'_>,
    ) -> Option<(u16, Value, Option<Duration>)> {
        let Patience { errors, deadline } = patience;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.send(method.clone(), path, token, body, headers).await {
                Reply::Answer(status, body, later) => return Some((status, body, later)),
                Reply::Retry(pause) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() + pause.max(backoff) > deadline {
                        return None;
                    }
                    tokio::time::sleep(pause.max(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Setup calls: errors are retried for up to 60 s like any call; any
    /// answer but `want` is fatal.
    pub(crate) async fn expect(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let errors = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        match self
            .answer(
                method,
                path,
                token,
                body.as_ref(),
                &[],
                Patience {
                    errors: &errors,
                    deadline,
                },
            )
            .await
        {
            Some((status, body, _)) if status == want => Ok(body),
            Some((status, body, _)) => bail!("{path}: {status} {body}"),
            None => bail!("{path}: no answer but errors for 60 s"),
        }
    }

    /// Registers and logs in one account through the API.
    pub(crate) async fn user(&self, role: &str, email: &str) -> anyhow::Result<String> {
        let password = "bench-password";
        let body = json!({"email": email, "password": password, "first_name": "Bench", "last_name": role, "role": role});
        self.expect(
            reqwest::Method::POST,
            "/api/v1/auth/register",
            None,
            Some(body),
            201,
        )
        .await?;
        let body = json!({"email": email, "password": password});
        let reply = self
            .expect(reqwest::Method::POST, "/api/v1/auth/login", None, Some(body), 200)
            .await?;
        Ok(reply["access_token"].as_str().unwrap_or_default().to_string())
    }
}
