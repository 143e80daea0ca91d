//! One buyer of the flash sale: books once, retrying errors with the same
//! Idempotency-Key as a real client would, then follows the booking until it
//! is settled, noting when its seats were held.

use std::{
    sync::atomic::AtomicUsize,
    time::{Duration, Instant, SystemTime},
};

use serde_json::{json, Value};

use super::client::{Client, Patience};

/// One buyer's outcome.
pub(crate) struct Outcome {
    pub(crate) booking_id: Option<String>,
    /// CONFIRMED, FAILED, PENDING (never settled), REFUSED (sold out before
    /// a booking was made), REJECTED (another 4xx) or ERROR (gave up).
    pub(crate) status: String,
    pub(crate) reason: String,
    pub(crate) ticket_ids: Vec<String>,
    /// From the first request to the final answer.
    pub(crate) latency_ms: f64,
    /// From the first request to the seats being held, if they were.
    pub(crate) hold_ms: Option<f64>,
    /// From the first request to the booking's row being made (the
    /// booking service's clock), if one was.
    pub(crate) created_ms: Option<f64>,
    /// From the first request to the booking's final step, if it had one.
    pub(crate) final_ms: Option<f64>,
    /// When the first request went out, from the start of the sale.
    pub(crate) started_s: f64,
    /// When the final answer came, from the start of the sale.
    pub(crate) done_s: f64,
}

/// Milliseconds from `start` to the RFC 3339 instant `at`.
pub(crate) fn ms_since(start: SystemTime, at: &str) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let start: chrono::DateTime<chrono::Utc> = start.into();
    Some((at.with_timezone(&chrono::Utc) - start).num_microseconds()? as f64 / 1000.0)
}

/// One buyer: books once (retrying errors with the same Idempotency-Key),
/// then follows the booking until it is settled.
pub(crate) async fn buy(
    client: &Client,
    token: &str,
    event_id: i64,
    tickets: i64,
    payment_token: &str,
    errors: &AtomicUsize,
    sale_started: Instant,
) -> Outcome {
    let t0 = Instant::now();
    let started_s = sale_started.elapsed().as_secs_f64();
    let t0_wall = SystemTime::now();
    let give_up = t0 + Duration::from_secs(120);
    let patience = Patience {
        errors,
        deadline: give_up,
    };
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"event_id": event_id, "number_of_tickets": tickets, "payment_token": payment_token});
    let finish = |booking_id: Option<String>, status: &str, b: &Value| {
        let held_at = b["held_at"].as_str();
        let settled = matches!(status, "CONFIRMED" | "FAILED");
        Outcome {
            booking_id,
            status: status.to_string(),
            reason: b["failure_reason"].as_str().unwrap_or_default().to_string(),
            ticket_ids: b["ticket_ids"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
            hold_ms: held_at.and_then(|at| ms_since(t0_wall, at)),
            created_ms: b["created_at"].as_str().and_then(|at| ms_since(t0_wall, at)),
            final_ms: b["updated_at"]
                .as_str()
                .filter(|_| settled)
                .and_then(|at| ms_since(t0_wall, at)),
            started_s,
            done_s: sale_started.elapsed().as_secs_f64(),
        }
    };
    let answer = client
        .answer(
            reqwest::Method::POST,
            "/api/v1/bookings",
            Some(token),
            Some(&body),
            &[("prefer", "wait=30"), ("idempotency-key", &key)],
            patience,
        )
        .await;
    let mut b = match answer {
        None => return finish(None, "ERROR", &Value::Null),
        Some((409, b)) if b["type"].as_str().is_some_and(|t| t.ends_with("/sold-out")) => {
            return finish(None, "REFUSED", &json!({"failure_reason": "SOLD_OUT"}))
        }
        Some((status, b)) if status >= 300 => return finish(None, "REJECTED", &b),
        Some((_, b)) => b,
    };
    let id = b["booking_id"].as_str().unwrap_or_default().to_string();
    // Still pending after the wait: follow it up.
    while b["status"] == "PENDING" && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match client
            .answer(
                reqwest::Method::GET,
                &format!("/api/v1/bookings/{id}"),
                Some(token),
                None,
                &[],
                patience,
            )
            .await
        {
            Some((200, next)) => b = next,
            _ => break,
        }
    }
    let status = b["status"].as_str().unwrap_or("PENDING").to_string();
    finish(Some(id), &status, &b)
}
