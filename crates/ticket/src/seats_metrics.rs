//! Seats per event on sale on the ticket service's `/metrics`
//! (`ticketer_seats{event_id, state}`: available, held, sold), so that a
//! flash sale can be watched as it happens. Bounded: the newest
//! [`EVENTS`] events on sale, and an event's series go when it leaves sale.

use std::{collections::HashSet, time::Duration};

use prometheus_client::{encoding::EncodeLabelSet, metrics::family::Family, metrics::gauge::Gauge};
use ticketer_db::Db;
use ticketer_http::Metrics;
use tokio_util::sync::CancellationToken;

use crate::store;

/// At most this many events' seats are reported.
const EVENTS: i64 = 50;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeatLabels {
    event_id: i64,
    state: &'static str,
}

/// Registers the seats family on `metrics` and keeps it current every
/// `every` until `shutdown`.
pub async fn run(db: Db, metrics: Metrics, every: Duration, shutdown: CancellationToken) {
    let seats = Family::<SeatLabels, Gauge>::default();
    metrics.register(
        "ticketer_seats",
        "Seats of each event on sale (the newest 50), by state: available, held, sold",
        seats.clone(),
    );
    let mut shown: HashSet<i64> = HashSet::new();
    loop {
        match store::on_sale_seats(&db, EVENTS).await {
            Ok(rows) => {
                let now: HashSet<i64> = rows.iter().map(|r| r.0).collect();
                for gone in shown.difference(&now) {
                    for state in ["available", "held", "sold"] {
                        seats.remove(&SeatLabels {
                            event_id: *gone,
                            state,
                        });
                    }
                }
                for (event_id, available, held, sold) in rows {
                    for (state, n) in [("available", available), ("held", held), ("sold", sold)] {
                        seats.get_or_create(&SeatLabels { event_id, state }).set(n);
                    }
                }
                shown = now;
            }
            Err(e) => tracing::debug!(error = %e, "seats not sampled"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
