//! After the sale: the buyers' outcomes checked against the services' own
//! records, for seats sold twice or beyond the capacity and for money taken
//! for bookings that did not get their seats.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::AtomicUsize,
    time::{Duration, Instant},
};

use anyhow::bail;

use super::{
    buyer::Outcome,
    client::{Client, Patience},
};

/// What the records say went wrong.
pub(super) struct Audit {
    /// Seats given beyond the capacity, seats given to two bookings, and
    /// seats the ticket service records sold beyond the capacity.
    pub(super) oversold: i64,
    /// Bookings not confirmed whose payment stands as taken.
    pub(super) double_charged: usize,
}

pub(super) async fn audit(
    client: &Client,
    tickets: i64,
    availability: &str,
    outcomes: &[Outcome],
    tokens: &[String],
) -> anyhow::Result<Audit> {
    let confirmed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == "CONFIRMED").collect();
    let mut owners: HashMap<&str, usize> = HashMap::new();
    for o in &confirmed {
        for t in &o.ticket_ids {
            *owners.entry(t.as_str()).or_default() += 1;
        }
    }
    let seats_given: i64 = confirmed.iter().map(|o| o.ticket_ids.len() as i64).sum();
    let shared_seats = owners.values().filter(|n| **n > 1).count() as i64;
    // A booking is confirmed once paid with its seats held; the ticket
    // service records the sale a moment later. Give it that moment.
    let recorded_by = Instant::now() + Duration::from_secs(10);
    let sold_on_record = loop {
        let avail = client
            .expect(reqwest::Method::GET, availability, None, None, 200)
            .await?;
        let sold = avail["sold"].as_i64().unwrap_or(0);
        if sold >= seats_given || Instant::now() >= recorded_by {
            break sold;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let oversold = (seats_given - tickets).max(0) + shared_seats + (sold_on_record - tickets).max(0);
    if sold_on_record != seats_given {
        eprintln!("bench: warning: the ticket service records {sold_on_record} seats sold, bookings hold {seats_given}");
    }
    let tokens_by_booking: HashMap<&str, &String> = outcomes
        .iter()
        .zip(tokens.iter())
        .filter_map(|(o, t)| o.booking_id.as_deref().map(|b| (b, t)))
        .collect();
    let mut double_charged = 0;
    let not_confirmed: HashSet<&str> = outcomes
        .iter()
        .filter(|o| o.status != "CONFIRMED")
        .filter_map(|o| o.booking_id.as_deref())
        .collect();
    let check_errors = AtomicUsize::new(0);
    for booking in not_confirmed {
        let token = tokens_by_booking[booking];
        let answer = client
            .answer(
                reqwest::Method::GET,
                &format!("/api/v1/payments/booking/{booking}"),
                Some(token),
                None,
                &[],
                Patience {
                    errors: &check_errors,
                    deadline: Instant::now() + Duration::from_secs(30),
                },
            )
            .await;
        match answer {
            Some((200, p, _)) if p["status"] == "SUCCEEDED" => double_charged += 1,
            Some(_) => {}
            None => bail!("could not read the payment of booking {booking}"),
        }
    }
    Ok(Audit {
        oversold,
        double_charged,
    })
}
