//! `ticketer bench search`: anonymous event searches through the gateway
//! against a catalogue of published events, the way a crowd browsing before
//! a sale would: many different queries (words, places, categories, dates,
//! pages), so that a read cache answers only what really repeats.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use super::{
    client::{Client, Reply},
    percentile, percentiles,
};

/// Every seeded event carries this category, so a run finds what an
/// earlier run on the same stack already wrote.
const CATEGORY: &str = "Searchbench";

const WORDS: [&str; 48] = [
    "rock",
    "jazz",
    "night",
    "festival",
    "summer",
    "winter",
    "acoustic",
    "orchestra",
    "comedy",
    "theatre",
    "opera",
    "dance",
    "electronic",
    "folk",
    "classic",
    "live",
    "session",
    "tour",
    "premiere",
    "gala",
    "market",
    "food",
    "wine",
    "craft",
    "beer",
    "film",
    "science",
    "poetry",
    "lecture",
    "workshop",
    "kids",
    "family",
    "garden",
    "harbour",
    "river",
    "mountain",
    "city",
    "old",
    "new",
    "grand",
    "little",
    "open",
    "air",
    "hall",
    "club",
    "stage",
    "sunset",
    "midnight",
];

const PLACES: [&str; 16] = [
    "Lisbon", "Porto", "Berlin", "Hamburg", "Vienna", "Prague", "Warsaw", "Oslo", "Dublin", "Lyon", "Madrid",
    "Seville", "Milan", "Turin", "Ghent", "Utrecht",
];

pub struct SearchBench {
    pub gateway: String,
    pub events: usize,
    pub concurrency: usize,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct SearchReport {
    pub events: i64,
    /// Events this run had to create (0 when an earlier run left them).
    pub seeded: usize,
    pub setup_s: f64,
    pub concurrency: usize,
    pub seconds: f64,
    pub searches: usize,
    pub searches_per_s: f64,
    /// Different query strings among those sent.
    pub distinct_queries: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers other than 200, and requests that got no answer.
    pub errors: usize,
}

/// A small deterministic generator: the same seed sends the same queries.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The `i`th seeded event: names and descriptions from the word list, one
/// in 500 with the longest description allowed (an organizer's worst case
/// for the search index).
fn event(i: usize) -> Value {
    let mut dice = Dice(i as u64 * 2 + 1);
    let name = format!(
        "{} {} {}",
        dice.pick(&WORDS),
        dice.pick(&WORDS),
        dice.pick(&WORDS)
    );
    let mut description = String::new();
    if i % 500 == 499 {
        // As long as the events service accepts (5,000 characters).
        loop {
            let w = dice.pick(&WORDS);
            if description.len() + w.len() + 1 > 5_000 {
                break;
            }
            description.push_str(w);
            description.push(' ');
        }
    } else {
        for _ in 0..10 + dice.below(51) {
            description.push_str(dice.pick(&WORDS));
            description.push(' ');
        }
    }
    let description = description.trim_end();
    let day =
        chrono::NaiveDate::from_ymd_opt(2030, 1, 1).expect("a date") + chrono::Days::new((i % 1_500) as u64);
    json!({
        "event_name": name, "description": description, "category": CATEGORY,
        "location": PLACES[i % PLACES.len()], "event_date": day.format("%Y-%m-%d").to_string(),
        "start_time": "19:00", "end_time": "22:00", "ticket_capacity": 5, "ticket_price": "25.00"
    })
}

/// One search as a browsing visitor would send it.
fn query(dice: &mut Dice) -> String {
    let base = "/api/v1/events";
    match dice.below(8) {
        0 => format!("{base}?q={}", dice.pick(&WORDS)),
        1 => format!("{base}?q={}+{}", dice.pick(&WORDS), dice.pick(&WORDS)),
        2 => format!(
            "{base}?q={}+{}+{}",
            dice.pick(&WORDS),
            dice.pick(&WORDS),
            dice.pick(&WORDS)
        ),
        3 => format!("{base}?q={}&location={}", dice.pick(&WORDS), dice.pick(&PLACES)),
        4 => format!("{base}?category={CATEGORY}&page={}", 1 + dice.below(20)),
        5 => {
            let from = 1 + dice.below(12);
            format!("{base}?from=2031-{from:02}-01&to=2031-{from:02}-28")
        }
        6 => format!("{base}?q={}&page={}", dice.pick(&WORDS), 2 + dice.below(4)),
        // A word nothing matches, and a long one.
        _ => format!(
            "{base}?q={}{}",
            dice.pick(&WORDS),
            "x".repeat(1 + dice.below(190) as usize)
        ),
    }
}

/// Whether the `n`th seeded event (1-based) exists: page `n` of one.
async fn has(client: &Client, n: i64) -> anyhow::Result<bool> {
    let page = client
        .expect(
            reqwest::Method::GET,
            &format!("/api/v1/events?category={CATEGORY}&page_size=1&page={n}"),
            None,
            None,
            200,
        )
        .await?;
    Ok(page["items"].as_array().is_some_and(|i| !i.is_empty()))
}

/// How many seeded events are published. The listing counts only up to
/// its limit (`total_capped`), so past it the count is found by probing
/// pages of one.
async fn published(client: &Client) -> anyhow::Result<i64> {
    let page = client
        .expect(
            reqwest::Method::GET,
            &format!("/api/v1/events?category={CATEGORY}&page_size=1"),
            None,
            None,
            200,
        )
        .await?;
    let total = page["total"].as_i64().context("a page's total")?;
    if page["total_capped"] != true {
        return Ok(total);
    }
    // At least `total`: double until a page is empty, then halve the gap.
    let (mut low, mut high) = (total, total * 2);
    while has(client, high).await? {
        low = high;
        high *= 2;
    }
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if has(client, mid).await? {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(low)
}

/// Creates and publishes events until `want` are published, 16 at a time.
async fn seed(client: &Client, want: usize) -> anyhow::Result<usize> {
    let have = published(client).await?.max(0) as usize;
    if have >= want {
        return Ok(0);
    }
    let organizer = client
        .user(
            "ORGANIZER",
            &format!("bench-search-{}@example.com", uuid::Uuid::new_v4()),
        )
        .await?;
    let next = AtomicUsize::new(have);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= want {
                return anyhow::Ok(());
            }
            let created = client
                .expect(
                    reqwest::Method::POST,
                    "/api/v1/events",
                    Some(&organizer),
                    Some(event(i)),
                    201,
                )
                .await?;
            let id = created["id"].as_i64().context("event id")?;
            client
                .expect(
                    reqwest::Method::POST,
                    &format!("/api/v1/events/{id}/publish"),
                    Some(&organizer),
                    None,
                    200,
                )
                .await?;
        }
    };
    futures::future::try_join_all((0..16).map(|_| worker())).await?;
    Ok(want - have)
}

pub async fn run(cfg: SearchBench) -> anyhow::Result<SearchReport> {
    let client = Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency.max(16))
            .timeout(Duration::from_secs(30))
            .build()?,
        base: cfg.gateway.trim_end_matches('/').to_string(),
        sent: AtomicUsize::new(0),
    };
    let started = Instant::now();
    let seeded = seed(&client, cfg.events).await?;
    let events = published(&client).await?;
    let setup_s = started.elapsed().as_secs_f64();

    let warm_until = Instant::now() + Duration::from_secs(1);
    let until = warm_until + Duration::from_secs_f64(cfg.seconds);
    let worker = |n: usize| {
        let client = &client;
        async move {
            let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
            let mut took = Vec::new();
            let mut sent = Vec::new();
            let mut errors = 0;
            while Instant::now() < until {
                let path = query(&mut dice);
                let t = Instant::now();
                let ok = matches!(
                    client.send(reqwest::Method::GET, &path, None, None, &[]).await,
                    Reply::Answer(200, ..)
                );
                if t < warm_until {
                    continue;
                }
                took.push(t.elapsed().as_secs_f64() * 1e3);
                errors += usize::from(!ok);
                sent.push(path);
            }
            (took, sent, errors)
        }
    };
    let results = futures::future::join_all((0..cfg.concurrency.max(1)).map(worker)).await;
    let mut took = Vec::new();
    let mut distinct = std::collections::HashSet::new();
    let mut errors = 0;
    for (t, s, e) in results {
        took.extend(t);
        distinct.extend(s);
        errors += e;
    }
    let took = percentiles(took);
    Ok(SearchReport {
        events,
        seeded,
        setup_s: round(setup_s),
        concurrency: cfg.concurrency,
        seconds: cfg.seconds,
        searches: took.len(),
        searches_per_s: round(took.len() as f64 / cfg.seconds),
        distinct_queries: distinct.len(),
        p50_ms: round(percentile(&took, 50.0)),
        p90_ms: round(percentile(&took, 90.0)),
        p99_ms: round(percentile(&took, 99.0)),
        max_ms: round(took.last().copied().unwrap_or(0.0)),
        errors,
    })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_many_and_repeatable() {
        let mut a = Dice(7);
        let mut b = Dice(7);
        let first: Vec<_> = (0..2_000).map(|_| query(&mut a)).collect();
        let again: Vec<_> = (0..2_000).map(|_| query(&mut b)).collect();
        assert_eq!(first, again);
        let distinct: std::collections::HashSet<_> = first.iter().collect();
        assert!(distinct.len() > 1_000, "{} distinct", distinct.len());
    }

    #[test]
    fn seeded_events_are_valid_and_one_in_500_is_as_long_as_allowed() {
        let words = |v: &Value| v["description"].as_str().unwrap().split(' ').count();
        let longest = event(499)["description"].as_str().unwrap().len();
        assert!((4_900..=5_000).contains(&longest), "{longest}");
        assert!((10..=60).contains(&words(&event(0))));
        assert_eq!(event(3)["category"], CATEGORY);
        assert_ne!(event(1)["event_name"], event(2)["event_name"]);
    }
}
