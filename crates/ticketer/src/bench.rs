//! `ticketer bench flash-sale`: a load generator that plays a flash sale
//! through the gateway, then checks the services' own records for
//! oversold seats, double charges and lost bookings.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct FlashSale {
    pub gateway: String,
    pub tickets: i64,
    pub buyers: usize,
    pub concurrency: usize,
    pub tickets_per_booking: i64,
}

/// The report's last line, as the contract fixes it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub tickets: i64,
    pub buyers: usize,
    pub concurrency: usize,
    pub confirmed: usize,
    pub failed: usize,
    pub sold_out: usize,
    pub oversold: i64,
    pub double_charged: usize,
    pub lost: usize,
    pub bookings_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub elapsed_s: f64,
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        wait: bool,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if wait {
            req = req.header("prefer", "wait=30");
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("calling {path}"))?;
        let status = resp.status().as_u16();
        if status == 429 {
            bail!("the gateway rate-limited the benchmark; start it with GATEWAY_RATE_LIMIT_PER_MINUTE=0");
        }
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn user(&self, role: &str, run: &str, n: usize) -> anyhow::Result<String> {
        let email = format!("bench-{run}-{role}-{n}@example.com").to_lowercase();
        let body = json!({"email": email, "password": "bench-password", "first_name": "Bench", "last_name": role, "role": role});
        let (status, reply) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/auth/register",
                None,
                Some(body),
                false,
            )
            .await?;
        if status != 201 {
            bail!("registering {email}: {status} {reply}");
        }
        let body = json!({"email": email, "password": "bench-password"});
        let (status, reply) = self
            .send(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                Some(body),
                false,
            )
            .await?;
        if status != 200 {
            bail!("logging in {email}: {status} {reply}");
        }
        Ok(reply["access_token"].as_str().unwrap_or_default().to_string())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// One buyer's outcome.
struct Outcome {
    booking_id: Option<String>,
    status: String,
    reason: String,
    ticket_ids: Vec<String>,
    latency_ms: f64,
}

pub async fn run(cfg: FlashSale) -> anyhow::Result<Report> {
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .build()?,
        base: cfg.gateway.trim_end_matches('/').to_string(),
    });
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

    // The organizer and the event.
    let organizer = client.user("ORGANIZER", &run, 0).await?;
    let event = json!({
        "event_name": format!("Flash sale {run}"), "description": "benchmark", "category": "Benchmark",
        "location": "Loopback", "event_date": "2035-01-01", "start_time": "20:00", "end_time": "23:00",
        "ticket_capacity": cfg.tickets, "ticket_price": "10.00"
    });
    let (status, created) = client
        .send(
            reqwest::Method::POST,
            "/api/v1/events",
            Some(&organizer),
            Some(event),
            false,
        )
        .await?;
    if status != 201 {
        bail!("creating the event: {status} {created}");
    }
    let event_id = created["id"].as_i64().context("event id")?;
    client
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/events/{event_id}/publish"),
            Some(&organizer),
            None,
            false,
        )
        .await?;
    let availability = format!("/api/v1/tickets/availability/{event_id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .send(reqwest::Method::GET, &availability, None, None, false)
        .await?
        .0
        != 200
    {
        if Instant::now() > deadline {
            bail!("the event never went on sale");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "bench: event {event_id} on sale with {} tickets; registering {} buyers",
        cfg.tickets, cfg.buyers
    );

    // The buyers.
    let gate = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut registering = Vec::with_capacity(cfg.buyers);
    for n in 0..cfg.buyers {
        let (client, gate, run) = (client.clone(), gate.clone(), run.clone());
        registering.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            client.user("CUSTOMER", &run, n + 1).await
        }));
    }
    let mut tokens = Vec::with_capacity(cfg.buyers);
    for r in registering {
        tokens.push(r.await??);
    }
    eprintln!("bench: {} buyers ready; selling", tokens.len());

    // The sale: everyone at once, `concurrency` requests in flight.
    let started = Instant::now();
    let mut buying = Vec::with_capacity(tokens.len());
    for token in tokens.clone() {
        let (client, gate) = (client.clone(), gate.clone());
        let k = cfg.tickets_per_booking;
        buying.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            let t0 = Instant::now();
            let body = json!({"event_id": event_id, "number_of_tickets": k, "payment_token": "tok_visa"});
            let (status, mut b) = client
                .send(
                    reqwest::Method::POST,
                    "/api/v1/bookings",
                    Some(&token),
                    Some(body),
                    true,
                )
                .await?;
            let id = b["booking_id"].as_str().map(str::to_string);
            // Still pending after the wait: follow it up.
            while status < 300 && b["status"] == "PENDING" && t0.elapsed() < Duration::from_secs(90) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let path = format!("/api/v1/bookings/{}", id.as_deref().unwrap_or_default());
                b = client
                    .send(reqwest::Method::GET, &path, Some(&token), None, false)
                    .await?
                    .1;
            }
            let ticket_ids = b["ticket_ids"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
                .unwrap_or_default();
            Ok::<_, anyhow::Error>(Outcome {
                booking_id: id,
                status: b["status"].as_str().unwrap_or("ERROR").to_string(),
                reason: b["failure_reason"].as_str().unwrap_or_default().to_string(),
                ticket_ids,
                latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
            })
        }));
    }
    let mut outcomes = Vec::with_capacity(buying.len());
    for b in buying {
        outcomes.push(b.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("bench: sale over in {elapsed:.2} s; checking the records");

    // Check against the services' own records.
    let confirmed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == "CONFIRMED").collect();
    let failed = outcomes.iter().filter(|o| o.status == "FAILED").count();
    let sold_out = outcomes.iter().filter(|o| o.reason == "SOLD_OUT").count();
    let lost = outcomes
        .iter()
        .filter(|o| o.booking_id.is_none() || !matches!(o.status.as_str(), "CONFIRMED" | "FAILED"))
        .count();
    let mut owners: HashMap<&str, usize> = HashMap::new();
    for o in &confirmed {
        for t in &o.ticket_ids {
            *owners.entry(t.as_str()).or_default() += 1;
        }
    }
    let seats_given: i64 = confirmed.iter().map(|o| o.ticket_ids.len() as i64).sum();
    let shared_seats = owners.values().filter(|n| **n > 1).count() as i64;
    let (_, avail) = client
        .send(reqwest::Method::GET, &availability, None, None, false)
        .await?;
    let sold_on_record = avail["sold"].as_i64().unwrap_or(0);
    let oversold = (seats_given - cfg.tickets).max(0) + shared_seats + (sold_on_record - cfg.tickets).max(0);
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
    for booking in not_confirmed {
        let token = tokens_by_booking[booking];
        let (status, p) = client
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/payments/booking/{booking}"),
                Some(token),
                None,
                false,
            )
            .await?;
        if status == 200 && p["status"] == "SUCCEEDED" {
            double_charged += 1;
        }
    }
    let mut latencies: Vec<f64> = outcomes.iter().map(|o| o.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    Ok(Report {
        scenario: "flash-sale",
        tickets: cfg.tickets,
        buyers: cfg.buyers,
        concurrency: cfg.concurrency,
        confirmed: confirmed.len(),
        failed,
        sold_out,
        oversold,
        double_charged,
        lost,
        bookings_per_s: outcomes.len() as f64 / elapsed.max(f64::EPSILON),
        p50_ms: percentile(&latencies, 50.0),
        p95_ms: percentile(&latencies, 95.0),
        p99_ms: percentile(&latencies, 99.0),
        elapsed_s: elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
