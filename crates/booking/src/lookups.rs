//! Look-ups by Idempotency-Key and by id, batched. Most requests of a
//! flash sale are refused as sold out, and each refusal must first check
//! that the same request was not accepted earlier (a retry gets its
//! booking); every waiting request reads its booking again now and then in
//! case another replica settled it, and clients poll. Asked one by one,
//! each is a database round trip; through a [`Batcher`], a burst of them
//! costs a few statements.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ticketer_cache::figures::Seats;
use ticketer_db::Db;
use uuid::Uuid;

use crate::{
    batcher::{Batcher, Stopped},
    store::{self, Booking},
};

/// Look-ups taken into one statement at most.
const PER_STATEMENT: usize = 256;

/// The booking made with a key and the digest of the request that made it,
/// if any; or why the look-up failed.
pub type Found = Result<Option<(Booking, String)>, String>;

pub type KeyLookups = Batcher<(Uuid, String), Found>;

/// Starts the look-ups of `(customer, Idempotency-Key)` pairs.
pub fn start(db: Db) -> KeyLookups {
    Batcher::start(PER_STATEMENT, move |keys: Vec<(Uuid, String)>| {
        let db = db.clone();
        async move {
            match store::by_keys(&db, &keys).await {
                Ok(found) => {
                    let found: HashMap<(Uuid, String), (Booking, String)> = found
                        .into_iter()
                        .map(|(b, key, hash)| ((b.customer_id, key), (b, hash)))
                        .collect();
                    // The same key may be asked for several times at once
                    // (a request sent again before its answer came): each
                    // gets the booking.
                    keys.iter().map(|k| Ok(found.get(k).cloned())).collect()
                }
                Err(e) => keys.iter().map(|_| Err(e.to_string())).collect(),
            }
        }
    })
}

/// A booking by id, if it exists; or why the look-up failed.
pub type ById = Batcher<Uuid, Result<Option<Booking>, String>>;

/// Starts the look-ups of bookings by id.
pub fn start_by_id(db: Db) -> ById {
    Batcher::start(PER_STATEMENT, move |ids: Vec<Uuid>| {
        let db = db.clone();
        async move {
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            match store::get_all(&db, &unique).await {
                Ok(found) => {
                    let found: HashMap<Uuid, Booking> =
                        found.into_iter().map(|b| (b.booking_id, b)).collect();
                    ids.iter().map(|id| Ok(found.get(id).cloned())).collect()
                }
                Err(e) => ids.iter().map(|_| Err(e.to_string())).collect(),
            }
        }
    })
}

/// How long a figure read from the cache is answered from memory. A flash
/// sale's requests for an event come far more often than that, so most of
/// them are spared the cache's round trip (measured: about a third of the
/// time from a request's arrival to its booking being made), and no answer
/// is more than this older than the cache's own figure, which the ticket
/// service writes after its commits anyway. The figure only refuses early:
/// the ticket service still decides every hold.
pub const FIGURE_FRESH: Duration = Duration::from_millis(50);

/// Events whose figures are remembered at most; past that, those no longer
/// fresh are forgotten (requests naming events at random cannot grow it).
const FIGURES_KEPT: usize = 10_000;

/// An event's figure, and when its read began.
type Read = (Option<Seats>, Instant);

/// The seats of an event as the ticket service last published them to the
/// cache; None when unknown (no figure, cache down).
/// Cheap to clone.
#[derive(Clone)]
pub struct Figures {
    reads: Batcher<i64, Option<Seats>>,
    known: Arc<Mutex<HashMap<i64, Read>>>,
    fresh: Duration,
}

impl Figures {
    /// The event's figure: from memory while fresh, else read from the
    /// cache (with the reads of other requests arriving meanwhile).
    pub async fn ask(&self, event: i64) -> Result<Option<Seats>, Stopped> {
        if let Some(&(figure, read)) = self.known.lock().expect("figures lock").get(&event) {
            if read.elapsed() < self.fresh {
                return Ok(figure);
            }
        }
        let read = Instant::now();
        let figure = self.reads.ask(event).await?;
        let mut known = self.known.lock().expect("figures lock");
        if known.len() >= FIGURES_KEPT {
            let fresh = self.fresh;
            known.retain(|_, (_, at)| at.elapsed() < fresh);
        }
        // A read that began earlier than the one remembered is older news.
        match known.get(&event) {
            Some((_, at)) if *at > read => {}
            _ => {
                known.insert(event, (figure, read));
            }
        }
        Ok(figure)
    }
}

/// Starts the figure reads: requests arriving together for the same event
/// share one cache read, and a figure read is answered from memory for
/// `fresh` after.
pub fn start_figures(cache: ticketer_cache::Cache, fresh: Duration) -> Figures {
    let reads = Batcher::start(PER_STATEMENT, move |events: Vec<i64>| {
        let cache = cache.clone();
        async move {
            let mut distinct = events.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let mut read = HashMap::with_capacity(distinct.len());
            for event in distinct {
                let figure = match cache.get(&ticketer_cache::figures::availability(event)).await {
                    Ok(v) => v.as_deref().and_then(Seats::parse),
                    Err(e) => {
                        tracing::debug!(error = %e, "availability figure unreadable; asking the saga");
                        None
                    }
                };
                read.insert(event, figure);
            }
            events.iter().map(|e| read[e]).collect()
        }
    });
    Figures {
        reads,
        known: Arc::default(),
        fresh,
    }
}

#[cfg(test)]
mod tests {
    use ticketer_testkit::TestDatabase;

    use super::*;
    use crate::{
        saga,
        store::{insert, RequestKey},
    };

    #[tokio::test]
    async fn many_look_ups_at_once_each_get_their_own_answer() {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("booking", store::MIGRATIONS).await.unwrap();
        let customers: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        let mut tx = db.begin().await.unwrap();
        // Every even customer booked with key "k"; every customer's key
        // "other" was never used.
        for (n, c) in customers.iter().enumerate().filter(|(n, _)| n % 2 == 0) {
            let b = Booking::new(
                *c,
                1,
                1,
                crate::store::PaymentSource::Token("tok_visa".into()),
                saga::start().0,
            );
            let key = RequestKey {
                key: "k".into(),
                request_hash: format!("hash-{n}"),
            };
            insert(&mut tx, &b, Some(&key)).await.unwrap();
        }
        tx.commit().await.unwrap();

        let lookups = start(db.clone());
        let mut asked = Vec::new();
        // Each key twice, as a request sent again before its answer came.
        for (n, c) in customers.iter().enumerate() {
            for key in ["k", "other", "k"] {
                let (lookups, c) = (lookups.clone(), *c);
                asked.push(tokio::spawn(async move {
                    (n, key, lookups.ask((c, key.to_string())).await.unwrap())
                }));
            }
        }
        for a in asked {
            let (n, key, answer) = a.await.unwrap();
            match answer.unwrap() {
                Some((b, hash)) => {
                    assert_eq!((n % 2, key), (0, "k"));
                    assert_eq!(b.customer_id, customers[n]);
                    assert_eq!(hash, format!("hash-{n}"));
                }
                None => assert!(n % 2 == 1 || key == "other"),
            }
        }
    }

    #[tokio::test]
    async fn figures_read_together_are_read_once_and_each_asker_gets_its_own() {
        let cache = ticketer_cache::Cache::memory();
        cache
            .set(&ticketer_cache::figures::availability(1), "7 2", None)
            .await
            .unwrap();
        let figures = start_figures(cache, Duration::ZERO);
        let asked: Vec<_> = [1, 2, 1, 1, 2]
            .into_iter()
            .map(|e| {
                let figures = figures.clone();
                tokio::spawn(async move { (e, figures.ask(e).await.unwrap()) })
            })
            .collect();
        for a in asked {
            let (event, figure) = a.await.unwrap();
            let seven = Seats {
                available: 7,
                held: 2,
            };
            assert_eq!(figure, (event == 1).then_some(seven));
        }
    }

    /// A figure is answered from memory while fresh, and read again once
    /// it is not: seats that come back are seen within that time.
    #[tokio::test]
    async fn a_figure_is_remembered_only_while_fresh() {
        let cache = ticketer_cache::Cache::memory();
        let key = ticketer_cache::figures::availability(1);
        let (seven, none) = (
            Seats {
                available: 7,
                held: 0,
            },
            Seats {
                available: 0,
                held: 0,
            },
        );
        cache.set(&key, &seven.encode(), None).await.unwrap();
        let remembering = start_figures(cache.clone(), Duration::from_secs(3600));
        let reading = start_figures(cache.clone(), Duration::ZERO);
        assert_eq!(remembering.ask(1).await.unwrap(), Some(seven));
        assert_eq!(reading.ask(1).await.unwrap(), Some(seven));
        cache.set(&key, &none.encode(), None).await.unwrap();
        assert_eq!(
            remembering.ask(1).await.unwrap(),
            Some(seven),
            "fresh: from memory"
        );
        assert_eq!(reading.ask(1).await.unwrap(), Some(none), "stale: read again");
        assert_eq!(remembering.ask(2).await.unwrap(), None, "each event its own");
    }
}
