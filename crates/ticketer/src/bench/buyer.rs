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
    /// From the first booking request to the final answer.
    pub(crate) latency_ms: f64,
    /// From the first booking request to the seats being held, if they were.
    pub(crate) hold_ms: Option<f64>,
    /// From the first booking request to the booking's row being made (the
    /// booking service's clock), if one was.
    pub(crate) created_ms: Option<f64>,
    /// From the first booking request to the booking's final step, if it had one.
    pub(crate) final_ms: Option<f64>,
    /// Through a waiting room: from joining it to being admitted (or told
    /// the sale sold out).
    pub(crate) queued_ms: Option<f64>,
    /// When the first request (to join the room, or to book) went out,
    /// from the start of the sale.
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

/// A refusal as sold out (problem type `sold-out`).
fn sold_out(problem: &Value) -> bool {
    problem["type"].as_str().is_some_and(|t| t.ends_with("/sold-out"))
}

/// What a buyer asks for, and how patient they are.
pub(crate) struct Wants<'a> {
    pub(crate) tickets: i64,
    pub(crate) payment_token: &'a str,
    /// Times they come back when told to (sold out while seats are held).
    pub(crate) comes_back: u32,
    /// The event sells through a waiting room: join it and book once admitted.
    pub(crate) via_room: bool,
}

/// How a buyer's wait in a room ended.
enum Turn {
    Admitted,
    SoldOut,
    /// No answer but errors, or one that was not a place.
    Failed(Option<Value>),
}

/// Joins the event's waiting room and waits to be admitted.
async fn await_turn(client: &Client, token: &str, event_id: i64, patience: Patience<'_>) -> Turn {
    let room = format!("/api/v1/bookings/waiting-rooms/{event_id}/places");
    let mine = format!("{room}/mine");
    let (mut method, mut path) = (reqwest::Method::POST, &room);
    loop {
        let Some((status, place, _)) = client
            .answer(
                method,
                path,
                Some(token),
                None,
                &[("prefer", "wait=30")],
                patience,
            )
            .await
        else {
            return Turn::Failed(None);
        };
        match (status, place["state"].as_str()) {
            (200, Some("ADMITTED")) => return Turn::Admitted,
            (200, Some("SOLD_OUT")) => return Turn::SoldOut,
            (200, Some("WAITING")) => (method, path) = (reqwest::Method::GET, &mine),
            // Lapsed (never in a benchmark: it books at once) or gone: join again.
            (200 | 404, _) => (method, path) = (reqwest::Method::POST, &room),
            _ => return Turn::Failed(Some(place)),
        }
    }
}

/// One buyer: books once (retrying errors with the same Idempotency-Key,
/// and coming back when told to, as often as they would), then follows the
/// booking until it is settled.
pub(crate) async fn buy(
    client: &Client,
    token: &str,
    event_id: i64,
    wants: Wants<'_>,
    errors: &AtomicUsize,
    sale_started: Instant,
) -> Outcome {
    let Wants {
        tickets,
        payment_token,
        comes_back,
        via_room,
    } = wants;
    let joined = Instant::now();
    let started_s = sale_started.elapsed().as_secs_f64();
    let give_up = joined + Duration::from_secs(120);
    let patience = Patience {
        errors,
        deadline: give_up,
    };
    let turn = if via_room {
        Some(await_turn(client, token, event_id, patience).await)
    } else {
        None
    };
    // What is measured from the request is measured from the booking's.
    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    let queued_ms = turn.as_ref().map(|_| (t0 - joined).as_secs_f64() * 1000.0);
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
            queued_ms,
            started_s,
            done_s: sale_started.elapsed().as_secs_f64(),
        }
    };
    match turn {
        Some(Turn::SoldOut) => return finish(None, "REFUSED", &json!({"failure_reason": "SOLD_OUT"})),
        Some(Turn::Failed(None)) => return finish(None, "ERROR", &Value::Null),
        Some(Turn::Failed(Some(answer))) => return finish(None, "REJECTED", &answer),
        Some(Turn::Admitted) | None => {}
    }
    // Told to come back (sold out while seats are only held), a buyer who
    // may does, with the same key: nothing was booked.
    let mut returns = comes_back;
    let answer = loop {
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
        match answer {
            Some((409, ref b, Some(later)))
                if sold_out(b) && returns > 0 && Instant::now() + later < give_up =>
            {
                returns -= 1;
                tokio::time::sleep(later).await;
            }
            answer => break answer.map(|(status, b, _)| (status, b)),
        }
    };
    let mut b = match answer {
        None => return finish(None, "ERROR", &Value::Null),
        Some((409, b)) if sold_out(&b) => {
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
            Some((200, next, _)) => b = next,
            _ => break,
        }
    }
    let status = b["status"].as_str().unwrap_or("PENDING").to_string();
    finish(Some(id), &status, &b)
}

#[cfg(test)]
mod tests {
    use std::sync::{atomic::Ordering, Arc};

    use axum::{http::StatusCode, response::IntoResponse, routing::post, Json, Router};

    use super::*;

    /// A booking service that says "sold out for now, come back in a
    /// second" to the first request and books the next.
    async fn sold_out_for_a_moment() -> String {
        let asked = Arc::new(AtomicUsize::new(0));
        let book = move || {
            let asked = asked.clone();
            async move {
                if asked.fetch_add(1, Ordering::SeqCst) == 0 {
                    let refusal = json!({"type": "https://ticketer.dev/problems/sold-out", "status": 409});
                    (StatusCode::CONFLICT, [("retry-after", "1")], Json(refusal)).into_response()
                } else {
                    let booked = json!({"booking_id": "b-1", "status": "CONFIRMED", "ticket_ids": ["t-1"]});
                    (StatusCode::CREATED, Json(booked)).into_response()
                }
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route("/api/v1/bookings", post(book));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    async fn buying(comes_back: u32) -> Outcome {
        let client = Client {
            http: reqwest::Client::new(),
            base: sold_out_for_a_moment().await,
            sent: AtomicUsize::new(0),
        };
        let wants = Wants {
            tickets: 1,
            payment_token: "tok_visa",
            comes_back,
            via_room: false,
        };
        let errors = AtomicUsize::new(0);
        buy(&client, "token", 1, wants, &errors, Instant::now()).await
    }

    #[tokio::test]
    async fn a_buyer_told_to_come_back_does_if_they_would() {
        let patient = buying(1).await;
        assert_eq!(
            (patient.status.as_str(), patient.booking_id.as_deref()),
            ("CONFIRMED", Some("b-1"))
        );
        let impatient = buying(0).await;
        assert_eq!(
            (impatient.status.as_str(), impatient.reason.as_str()),
            ("REFUSED", "SOLD_OUT")
        );
    }
}
