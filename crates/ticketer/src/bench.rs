//! `ticketer bench flash-sale`: a load generator that plays a flash sale
//! through the gateway the way real buyers would (every buyer books once,
//! retrying errors with the same Idempotency-Key), then checks the
//! services' own records for oversold seats, double charges and lost
//! bookings, and reads every server process's peak memory from /metrics.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use ticketer_config::{Env, InfraConfig, Service};
use tokio::sync::Semaphore;

mod audit;
pub(crate) mod buyer;
pub(crate) mod client;
mod probe;
mod progress;
pub mod search;
pub(crate) mod setup;

use audit::{audit, Audit};
use buyer::{buy, Outcome, Wants};
use client::Client;
use probe::{backend, cpu_between, cpu_used, peak_memory};
use progress::progress;
use setup::event_on_sale;

/// The presets the contract names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// pretix's published scenario: 1,000 tickets, 5,000 buyers, 64 at once.
    Pretix,
    /// 10,000 tickets, 40,000 buyers, 500 at once.
    Standard,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pretix => "pretix",
            Scenario::Standard => "standard",
        }
    }

    /// Tickets, buyers, concurrency.
    pub fn sizes(self) -> (i64, usize, usize) {
        match self {
            Scenario::Pretix => (1_000, 5_000, 64),
            Scenario::Standard => (10_000, 40_000, 500),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FlashSale {
    pub gateway: String,
    /// `pretix`, `standard` or `custom`.
    pub scenario: &'static str,
    pub tickets: i64,
    pub buyers: usize,
    pub concurrency: usize,
    pub tickets_per_booking: i64,
    /// Every server process's base URL by name, for /metrics and /health/ready.
    pub services: Vec<(String, String)>,
    /// The gateway's scrape token (GATEWAY_METRICS_TOKEN): without it the
    /// gateway's memory and CPU are not reported.
    pub metrics_token: Option<String>,
    /// Where to write every buyer's outcome as CSV, if anywhere.
    pub outcomes: Option<std::path::PathBuf>,
    /// Sell through a waiting room admitting this many buyers at once.
    pub waiting_room: Option<u32>,
}

/// Where the buyers come from.
pub enum Buyers {
    /// Registered and logged in through the API during setup.
    Api,
    /// Made beforehand (operator tooling): their access tokens, and how
    /// long making them took (counted in the setup time).
    Provisioned { tokens: Vec<String>, took: Duration },
}

/// The report's last line, as the contract fixes it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub backend: String,
    pub tickets: i64,
    pub buyers: usize,
    pub concurrency: usize,
    pub confirmed: usize,
    /// Bookings that ended FAILED.
    pub failed: usize,
    /// Buyers turned away because nothing was left: FAILED with SOLD_OUT,
    /// or refused before a booking was made.
    pub sold_out: usize,
    /// Requests refused as sold out before a booking was made.
    pub refused: usize,
    pub oversold: i64,
    pub double_charged: usize,
    /// Bookings the services accepted that never reached a final state.
    pub lost: usize,
    /// Answers that were errors (5xx, 429, connection failures), each
    /// retried with the same Idempotency-Key.
    pub errors: usize,
    /// Buyers who never got an answer but errors before giving up.
    pub gave_up: usize,
    pub bookings_per_s: f64,
    pub sellout_s: f64,
    pub confirmed_per_s: f64,
    pub hold_p50_ms: f64,
    pub hold_p99_ms: f64,
    pub booking_p50_ms: f64,
    pub booking_p99_ms: f64,
    /// The waiting room the sale went through (buyers admitted at once),
    /// if any. Then `hold_*` and `booking_*` run from the booking request,
    /// made once admitted; `queue_*` from joining the room to being
    /// admitted, for the buyers who booked; and `p50_ms`..`p99_ms` over the
    /// whole way, from joining to the final answer.
    pub waiting_room: Option<u32>,
    pub queue_p50_ms: f64,
    pub queue_p99_ms: f64,
    /// From the buyer's first request to the final answer.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub setup_s: f64,
    pub elapsed_s: f64,
    pub peak_rss_mb: f64,
    pub peak_rss_mb_by_service: HashMap<String, f64>,
    /// CPU seconds each process spent from the first booking request to
    /// the last answer: every server process driven (from its /metrics),
    /// this load generator, and PostgreSQL, RabbitMQ and Redis when they
    /// run on this machine (from /proc). Where the sale's time goes.
    pub cpu_s_during_sale: HashMap<String, f64>,
    /// Where a confirmed booking's time went, from its own timestamps.
    pub stages_ms: Stages,
    /// Requests refused as sold out before the last seat was confirmed:
    /// while seats were held but not yet sold, they shared the cores with
    /// the sale.
    pub refused_before_sellout: usize,
}

/// A confirmed booking's way through the services, p50 and p99 of each
/// step in milliseconds: the request reaching the booking service (its
/// row made), the ticket service holding the seats, and the final step.
/// The service's clocks against the client's: exact on one machine.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Stages {
    pub request_to_created: [f64; 2],
    pub created_to_held: [f64; 2],
    pub held_to_final: [f64; 2],
}

fn stages(outcomes: &[Outcome]) -> Stages {
    let (mut created, mut held, mut settled) = (Vec::new(), Vec::new(), Vec::new());
    for o in outcomes.iter().filter(|o| o.status == "CONFIRMED") {
        let (Some(c), Some(h), Some(f)) = (o.created_ms, o.hold_ms, o.final_ms) else {
            continue;
        };
        created.push(c);
        held.push(h - c);
        settled.push(f - h);
    }
    let p50_p99 = |v: Vec<f64>| {
        let v = percentiles(v);
        [percentile(&v, 50.0), percentile(&v, 99.0)]
    };
    Stages {
        request_to_created: p50_p99(created),
        created_to_held: p50_p99(held),
        held_to_final: p50_p99(settled),
    }
}

/// One CSV line per buyer; times in milliseconds from the sale's start
/// (the request's) or from the buyer's booking request (the rest; queued:
/// from joining the waiting room to being admitted), empty
/// where the booking never got that far.
fn write_outcomes(path: &std::path::Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
    let mut csv =
        String::from("started_ms,status,reason,created_ms,held_ms,final_ms,answered_ms,queued_ms\n");
    for o in outcomes {
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{},{},{:.1},{}",
            o.started_s * 1000.0,
            o.status,
            o.reason,
            ms(o.created_ms),
            ms(o.hold_ms),
            ms(o.final_ms),
            o.latency_ms,
            ms(o.queued_ms)
        );
    }
    std::fs::write(path, csv).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn percentiles(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Writes `n` customers straight into the auth database configured by `env`
/// and signs their tokens, as that auth service would.
pub async fn provision_buyers(
    env: &Env,
    data_dir: &std::path::Path,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let infra = InfraConfig::from_env(Service::Auth, env, data_dir.to_path_buf())?;
    let config = ticketer_auth::Config::from_env(env, data_dir)?;
    if let ticketer_auth::KeySource::File(path) = &config.key {
        anyhow::ensure!(
            path.exists(),
            "no signing key at {}: give the server's --data-dir (or AUTH_JWT_PRIVATE_KEY_FILE), or use --provision api",
            path.display()
        );
    }
    let db = crate::stack::connect_db(&infra).await?;
    let auth = ticketer_auth::offline(&config, &infra, db.clone()).await?;
    let label = format!("buyer-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let buyers = auth.provision_customers(&label, n).await?;
    db.close().await;
    Ok(buyers.into_iter().map(|b| b.access_token).collect())
}

/// `ticketer bench fan-out`: the notification service's cancellation
/// fan-out on a scratch database (`database_url`, else a new SQLite file),
/// sending over SMTP or to `.eml` files in a temporary directory, removed
/// afterwards.
pub async fn fan_out(
    recipients: usize,
    database_url: Option<&str>,
    smtp_url: Option<&str>,
) -> anyhow::Result<ticketer_notification::fanout::Report> {
    let scratch = std::env::temp_dir().join(format!("ticketer-fan-out-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&scratch)?;
    let url = match database_url {
        Some(url) => url.to_string(),
        None => format!("sqlite://{}?mode=rwc", scratch.join("notification.db").display()),
    };
    let db = ticketer_db::Db::connect(&url, 16).await?;
    let report =
        ticketer_notification::fanout::run(db.clone(), recipients, smtp_url, scratch.join("mail")).await;
    db.close().await;
    let _ = std::fs::remove_dir_all(&scratch);
    report
}

pub async fn run(cfg: FlashSale, buyers: Buyers) -> anyhow::Result<Report> {
    let setup_started = Instant::now();
    let provisioning = match &buyers {
        Buyers::Api => Duration::ZERO,
        Buyers::Provisioned { took, .. } => *took,
    };
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .timeout(Duration::from_secs(60))
            .build()?,
        base: cfg.gateway.trim_end_matches('/').to_string(),
        sent: AtomicUsize::new(0),
    });
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

    let (event_id, availability) = event_on_sale(
        &client,
        &run,
        cfg.tickets,
        cfg.waiting_room.map(|at_once| setup::Room {
            at_once,
            claim_seconds: None,
        }),
    )
    .await?;

    // The buyers exist before the sale opens.
    let gate = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let tokens: Vec<String> = match buyers {
        Buyers::Provisioned { tokens, .. } => {
            eprintln!(
                "bench: event {event_id} on sale with {} tickets; {} buyers provisioned in {:.1} s",
                cfg.tickets,
                tokens.len(),
                provisioning.as_secs_f64()
            );
            tokens
        }
        Buyers::Api => {
            eprintln!(
                "bench: event {event_id} on sale with {} tickets; registering {} buyers through the API",
                cfg.tickets, cfg.buyers
            );
            let mut registering = Vec::with_capacity(cfg.buyers);
            for n in 0..cfg.buyers {
                let (client, gate) = (client.clone(), gate.clone());
                let email = format!("bench-{run}-customer-{}@example.com", n + 1);
                registering.push(tokio::spawn(async move {
                    let _permit = gate.acquire().await;
                    client.user("CUSTOMER", &email).await
                }));
            }
            let mut tokens = Vec::with_capacity(cfg.buyers);
            for r in registering {
                tokens.push(r.await??);
            }
            tokens
        }
    };
    let setup_s = (setup_started.elapsed() + provisioning).as_secs_f64();
    eprintln!(
        "bench: {} buyers ready after {setup_s:.1} s; selling",
        tokens.len()
    );

    // The sale: everyone at once, `concurrency` requests in flight.
    let backend = backend(&client.http, &cfg.services).await;
    let one_process = backend.contains("in-process");
    let cpu_before = cpu_used(
        &client.http,
        &cfg.services,
        one_process,
        cfg.metrics_token.as_deref(),
    )
    .await;
    let started = Instant::now();
    let errors = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let confirmed_so_far = Arc::new(AtomicUsize::new(0));
    let bar = progress(
        tokens.len(),
        done.clone(),
        confirmed_so_far.clone(),
        errors.clone(),
    );
    let mut buying = Vec::with_capacity(tokens.len());
    for token in tokens.clone() {
        let (client, gate, errors, done, confirmed_so_far) = (
            client.clone(),
            gate.clone(),
            errors.clone(),
            done.clone(),
            confirmed_so_far.clone(),
        );
        let k = cfg.tickets_per_booking;
        let via_room = cfg.waiting_room.is_some();
        buying.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            // Buyers of the benchmark take sold out for an answer: what it
            // measures ends with the last seat sold.
            let wants = Wants {
                tickets: k,
                payment_token: "tok_visa",
                comes_back: 0,
                via_room,
            };
            let outcome = buy(&client, &token, event_id, wants, &errors, started).await;
            done.fetch_add(1, Ordering::Relaxed);
            if outcome.status == "CONFIRMED" {
                confirmed_so_far.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        }));
    }
    let mut outcomes = Vec::with_capacity(buying.len());
    for b in buying {
        outcomes.push(b.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_used(
        &client.http,
        &cfg.services,
        one_process,
        cfg.metrics_token.as_deref(),
    )
    .await;
    let cpu_s_during_sale = cpu_between(&cpu_before, &cpu_after);
    let _ = bar.await;
    eprintln!("bench: sale over in {elapsed:.2} s; checking the records");

    // Check against the services' own records.
    let confirmed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == "CONFIRMED").collect();
    let failed = outcomes.iter().filter(|o| o.status == "FAILED").count();
    let refused = outcomes.iter().filter(|o| o.status == "REFUSED").count();
    let sold_out = outcomes.iter().filter(|o| o.reason == "SOLD_OUT").count();
    let lost = outcomes
        .iter()
        .filter(|o| o.booking_id.is_some() && !matches!(o.status.as_str(), "CONFIRMED" | "FAILED"))
        .count();
    let gave_up = outcomes.iter().filter(|o| o.status == "ERROR").count();
    let Audit {
        oversold,
        double_charged,
    } = audit(&client, cfg.tickets, &availability, &outcomes, &tokens).await?;

    let latencies = percentiles(
        outcomes
            .iter()
            .map(|o| o.latency_ms + o.queued_ms.unwrap_or(0.0))
            .collect(),
    );
    let made = || {
        outcomes
            .iter()
            .filter(|o| matches!(o.status.as_str(), "CONFIRMED" | "FAILED"))
    };
    let booked = percentiles(made().map(|o| o.latency_ms).collect());
    let queued = percentiles(made().filter_map(|o| o.queued_ms).collect());
    let holds = percentiles(outcomes.iter().filter_map(|o| o.hold_ms).collect());
    let sellout_s = confirmed.iter().map(|o| o.done_s).fold(0.0, f64::max);
    let refused_before_sellout = outcomes
        .iter()
        .filter(|o| o.status == "REFUSED" && o.done_s < sellout_s)
        .count();
    if let Some(path) = &cfg.outcomes {
        write_outcomes(path, &outcomes)?;
    }
    let peaks = peak_memory(&client.http, &cfg.services, cfg.metrics_token.as_deref()).await;
    Ok(Report {
        scenario: cfg.scenario,
        backend,
        tickets: cfg.tickets,
        buyers: cfg.buyers,
        concurrency: cfg.concurrency,
        confirmed: confirmed.len(),
        failed,
        sold_out,
        refused,
        oversold,
        double_charged,
        lost,
        errors: errors.load(Ordering::Relaxed),
        gave_up,
        bookings_per_s: outcomes.len() as f64 / elapsed.max(f64::EPSILON),
        sellout_s,
        confirmed_per_s: confirmed.len() as f64 / sellout_s.max(f64::EPSILON),
        hold_p50_ms: percentile(&holds, 50.0),
        hold_p99_ms: percentile(&holds, 99.0),
        booking_p50_ms: percentile(&booked, 50.0),
        booking_p99_ms: percentile(&booked, 99.0),
        waiting_room: cfg.waiting_room,
        queue_p50_ms: percentile(&queued, 50.0),
        queue_p99_ms: percentile(&queued, 99.0),
        p50_ms: percentile(&latencies, 50.0),
        p95_ms: percentile(&latencies, 95.0),
        p99_ms: percentile(&latencies, 99.0),
        setup_s,
        elapsed_s: elapsed,
        peak_rss_mb: peaks.values().copied().fold(0.0, f64::max),
        peak_rss_mb_by_service: peaks,
        cpu_s_during_sale,
        stages_ms: stages(&outcomes),
        refused_before_sellout,
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::{buyer::ms_since, *};

    #[test]
    fn percentiles_pick_by_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn a_confirmed_bookings_time_is_split_at_its_own_timestamps() {
        let outcome = |status: &str, created: f64, held: Option<f64>, settled: f64| Outcome {
            booking_id: Some("b".into()),
            status: status.into(),
            reason: String::new(),
            ticket_ids: vec![],
            latency_ms: settled + 5.0,
            hold_ms: held,
            created_ms: Some(created),
            final_ms: Some(settled),
            queued_ms: None,
            started_s: 0.0,
            done_s: 1.0,
        };
        let mut sale: Vec<Outcome> = (1..=100)
            .map(|i| {
                let i = f64::from(i);
                outcome("CONFIRMED", i, Some(3.0 * i), 10.0 * i)
            })
            .collect();
        // Neither a failed booking nor one without a hold counts.
        sale.push(outcome("FAILED", 1000.0, Some(5000.0), 9000.0));
        sale.push(outcome("CONFIRMED", 1000.0, None, 9000.0));
        let s = stages(&sale);
        assert_eq!(s.request_to_created, [51.0, 99.0]);
        assert_eq!(s.created_to_held, [102.0, 198.0]);
        assert_eq!(s.held_to_final, [357.0, 693.0]);
        assert_eq!(stages(&[]), Stages::default());
    }

    #[test]
    fn hold_time_is_measured_from_the_request() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = chrono::DateTime::<chrono::Utc>::from(start + Duration::from_millis(42));
        let ms = ms_since(start, &at.to_rfc3339()).unwrap();
        assert!((ms - 42.0).abs() < 0.01, "{ms}");
        assert_eq!(ms_since(start, "not a time"), None);
    }
}
