//! Keeps every on-sale event's counts of seats for sale and seats held in
//! the shared cache, where the booking service refuses requests for a
//! sold-out event without a write (in a flash sale most requests come after
//! the last seat went), and tells those refused while seats are only held
//! when to come back.
//!
//! The figure is advisory: the inventory row, counted under its lock, still
//! decides every hold. A stale figure only moves the refusal: too high, the
//! request goes through the saga and fails SOLD_OUT there; too low (seats
//! came back from an expired hold, a failed payment or a cancellation), it
//! is refused until the next pass, one interval later. Every pass reads the
//! committed counters, so whatever the last writer was, the next change is
//! seen and written. Entries expire, so a ticket service that stopped
//! cannot leave an event looking sold out.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use ticketer_cache::{
    figures::{self, Seats},
    Cache,
};
use ticketer_db::Db;
use tokio_util::sync::CancellationToken;

use crate::store;

/// How long a written figure stays valid without being rewritten.
const TTL: Duration = Duration::from_secs(5);
/// Unchanged figures are rewritten this often, well inside the TTL.
const REFRESH: Duration = Duration::from_secs(2);

/// Writes the figures that changed since the last pass (all of them every
/// [`REFRESH`]).
async fn publish(
    db: &Db,
    cache: &Cache,
    last: &mut HashMap<i64, Seats>,
    everything: bool,
) -> anyhow::Result<()> {
    let rows = store::on_sale_availability(db).await?;
    let mut seen = HashMap::with_capacity(rows.len());
    for (event_id, available, held) in rows {
        let seats = Seats { available, held };
        seen.insert(event_id, seats);
        if everything || last.get(&event_id) != Some(&seats) {
            cache
                .set(&figures::availability(event_id), &seats.encode(), Some(TTL))
                .await?;
        }
    }
    // Events no longer on sale drop out; their entries expire.
    *last = seen;
    Ok(())
}

/// Runs [`publish`] every `every` until `shutdown`.
pub async fn run(db: Db, cache: Cache, every: Duration, shutdown: CancellationToken) {
    let mut last = HashMap::new();
    let mut refreshed = Instant::now();
    loop {
        let everything = refreshed.elapsed() >= REFRESH;
        match publish(&db, &cache, &mut last, everything).await {
            Ok(()) if everything => refreshed = Instant::now(),
            Ok(()) => {}
            Err(e) => {
                // Written again in full once the cache answers.
                last.clear();
                tracing::warn!(error = %e, "publishing availability failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
