//! Before the sale: an organizer's event with the sale's seats, published
//! and on sale at the ticket service.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use super::client::{Client, Reply};

/// A waiting room in front of the sale.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    pub(crate) at_once: u32,
    /// How long an admitted buyer keeps their turn (the service's default
    /// if not given).
    pub(crate) claim_seconds: Option<u64>,
}

/// The event's id and the path of its availability figure, once on sale
/// (behind a waiting room, if given).
pub(crate) async fn event_on_sale(
    client: &Client,
    run: &str,
    tickets: i64,
    room: Option<Room>,
) -> anyhow::Result<(i64, String)> {
    let organizer = client
        .user("ORGANIZER", &format!("bench-{run}-organizer@example.com"))
        .await?;
    let event = json!({
        "event_name": format!("Flash sale {run}"), "description": "benchmark", "category": "Benchmark",
        "location": "Loopback", "event_date": "2035-01-01", "start_time": "20:00", "end_time": "23:00",
        "ticket_capacity": tickets, "ticket_price": "10.00"
    });
    let created = client
        .expect(
            reqwest::Method::POST,
            "/api/v1/events",
            Some(&organizer),
            Some(event),
            201,
        )
        .await?;
    let event_id = created["id"].as_i64().context("event id")?;
    client
        .expect(
            reqwest::Method::POST,
            &format!("/api/v1/events/{event_id}/publish"),
            Some(&organizer),
            None,
            200,
        )
        .await?;
    let availability = format!("/api/v1/tickets/availability/{event_id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Reply::Answer(200, ..) = client
            .send(reqwest::Method::GET, &availability, None, None, &[])
            .await
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the event never went on sale");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(room) = room {
        // The booking service learns of the event from the events
        // service's news: a moment after it is published.
        let mut settings = json!({"admitted_at_once": room.at_once});
        if let Some(claim) = room.claim_seconds {
            settings["claim_seconds"] = json!(claim);
        }
        let path = format!("/api/v1/bookings/waiting-rooms/{event_id}");
        loop {
            match client
                .send(
                    reqwest::Method::PUT,
                    &path,
                    Some(&organizer),
                    Some(&settings),
                    &[],
                )
                .await
            {
                Reply::Answer(200, ..) => break,
                Reply::Answer(404, ..) | Reply::Retry(_) if Instant::now() < deadline => {}
                Reply::Answer(status, body, _) => bail!("opening the waiting room: {status} {body}"),
                Reply::Retry(_) => bail!("opening the waiting room: no answer"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    Ok((event_id, availability))
}
