//! The crowd of a chaos run: buyers arriving through the whole run (not
//! all at once, so that every fault meets a sale in progress), paying with
//! a mix of cards that succeed, are declined or are slow, and some
//! cancelling once confirmed. Every one behaves like a real client: an
//! error is retried with the same Idempotency-Key, with backoff, and a
//! sold-out answer that says to come back (seats only held) is taken up.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::sync::Semaphore;

use crate::bench::{
    buyer::{buy, Outcome, Wants},
    client::{Client, Patience},
};

/// Times a buyer told the event is sold out for now (its last seats held
/// for others still paying) comes back: held seats return when payments
/// are declined or holds run out, and a real crowd tries again.
const COMES_BACK: u32 = 3;

/// What the buyers saw.
pub struct Shopping {
    pub outcomes: Vec<Outcome>,
    /// Error answers (5xx, 429, in progress, no connection), each retried.
    pub errors: usize,
    pub cancels_asked: usize,
    /// Cancellations that got no answer but errors before giving up.
    pub cancels_unanswered: usize,
}

/// One buyer's choices, drawn from the run's seed.
struct Choice {
    tickets: i64,
    card: &'static str,
    cancels: bool,
}

fn choose(rng: &mut StdRng) -> Choice {
    let card = match rng.gen_range(0..100) {
        0..=79 => "tok_visa",
        80..=87 => "tok_delayed",
        88..=93 => "tok_chargeDeclined",
        _ => "tok_insufficientFunds",
    };
    Choice {
        tickets: rng.gen_range(1..=2),
        card,
        cancels: rng.gen_range(0..10) == 0,
    }
}

/// Every buyer of `tokens` books once (joining the event's waiting room
/// first if `via_room`), the n-th starting `spread * n / len` after the
/// start, at most `concurrency` at a time.
pub async fn shop(
    client: Arc<Client>,
    tokens: Vec<String>,
    event_id: i64,
    spread: Duration,
    concurrency: usize,
    seed: u64,
    via_room: bool,
) -> anyhow::Result<Shopping> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x05ee_db0b);
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let errors = Arc::new(AtomicUsize::new(0));
    let cancels_asked = Arc::new(AtomicUsize::new(0));
    let cancels_unanswered = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let n = tokens.len().max(1) as u32;
    let mut tasks = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.into_iter().enumerate() {
        let choice = choose(&mut rng);
        let at = started + spread * i as u32 / n;
        let (client, gate, errors, asked, unanswered) = (
            client.clone(),
            gate.clone(),
            errors.clone(),
            cancels_asked.clone(),
            cancels_unanswered.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _permit = gate.acquire().await;
            let wants = Wants {
                tickets: choice.tickets,
                payment_token: choice.card,
                comes_back: COMES_BACK,
                via_room,
            };
            let outcome = buy(&client, &token, event_id, wants, &errors, started).await;
            if choice.cancels && outcome.status == "CONFIRMED" {
                let id = outcome.booking_id.clone().unwrap_or_default();
                asked.fetch_add(1, Ordering::Relaxed);
                let key = uuid::Uuid::new_v4().to_string();
                let answer = client
                    .answer(
                        reqwest::Method::POST,
                        &format!("/api/v1/bookings/{id}/cancel"),
                        Some(&token),
                        None,
                        &[("idempotency-key", &key)],
                        Patience {
                            errors: &errors,
                            deadline: Instant::now() + Duration::from_secs(120),
                        },
                    )
                    .await;
                if answer.is_none() {
                    unanswered.fetch_add(1, Ordering::Relaxed);
                }
            }
            outcome
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await?);
    }
    Ok(Shopping {
        outcomes,
        errors: errors.load(Ordering::Relaxed),
        cancels_asked: cancels_asked.load(Ordering::Relaxed),
        cancels_unanswered: cancels_unanswered.load(Ordering::Relaxed),
    })
}
