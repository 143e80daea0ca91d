//! Waiting rooms in front of crowded sales, as the booking service keeps
//! them: which events have one (from the database, remembered for a
//! second), the buyers' places (in the cache, shared by every replica: see
//! [`ticketer_cache::room`]), and the requests waiting to be admitted.
//!
//! A waiting request is not woken per admission: one task per process asks
//! the cache to admit, for each event with requests waiting here, every
//! [`TICK`] (and a buyer leaving here learns the highest number admitted
//! from their own step), and only the requests whose number came up are
//! woken; they answer from that news without asking the cache again.
//! Thousands of waiters cost one cache call per tick and nothing per
//! admission but their own wake-up.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use ticketer_cache::{Cache, CacheError, Place, RoomRule};
use ticketer_db::{Db, DbError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::store;

/// How long a room's rule is taken as read: a room opened, changed or
/// closed on another replica is seen within this.
const RULE_FRESH: Duration = Duration::from_secs(1);

/// How often waiting rooms with requests waiting here admit, at least.
pub const TICK: Duration = Duration::from_millis(20);

/// Events whose rules are remembered at most; past that, those no longer
/// fresh are forgotten.
const RULES_KEPT: usize = 10_000;

/// Each event's rule (None: no room), and when it was read.
type Rules = HashMap<i64, (Option<RoomRule>, Instant)>;

/// An event's requests waiting here.
struct Waiting {
    /// The rule the room admits by.
    rule: RoomRule,
    /// The highest number known admitted.
    admitted: u64,
    /// Each waiting request's wake-up, by its number.
    waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

impl Waiting {
    /// Numbers up to `upto` are admitted: wakes their requests.
    fn admitted_upto(&mut self, upto: u64) {
        self.admitted = self.admitted.max(upto);
        let later = self.waiters.split_off(&(self.admitted + 1));
        for wake in std::mem::replace(&mut self.waiters, later)
            .into_values()
            .flatten()
        {
            let _ = wake.send(());
        }
    }
}

type Admissions = HashMap<i64, Waiting>;

#[derive(Clone)]
pub struct Rooms {
    db: Db,
    cache: Cache,
    rules: Arc<Mutex<Rules>>,
    waiting: Arc<Mutex<Admissions>>,
    /// Buyers this process told they were admitted, by event and buyer,
    /// and when their claim runs out: their booking here is let through
    /// without asking the cache (a round trip of 5 ms at the median, 12 at
    /// p90, on a saturated box in a sale, on every booking's way).
    told: Arc<Mutex<HashMap<(i64, String), Instant>>>,
    /// Places given or kept by a join, turns passed on, requests waiting
    /// for their turn here (as of the last tick).
    joins: Counter,
    leaves: Counter,
    waiting_now: Gauge,
}

impl Rooms {
    pub fn new(db: Db, cache: Cache) -> Self {
        Rooms {
            db,
            cache,
            rules: Arc::default(),
            waiting: Arc::default(),
            told: Arc::default(),
            joins: Counter::default(),
            leaves: Counter::default(),
            waiting_now: Gauge::default(),
        }
    }

    /// Puts the rooms' counts in the service's `/metrics`.
    pub fn register(&self, metrics: &ticketer_http::Metrics) {
        metrics.register(
            "ticketer_waiting_room_joins",
            "Buyers who joined an event's waiting room (or asked again for the place they had)",
            self.joins.clone(),
        );
        metrics.register(
            "ticketer_waiting_room_leaves",
            "Buyers done with a waiting room, their turn passed to the next",
            self.leaves.clone(),
        );
        metrics.register(
            "ticketer_waiting_room_waiting",
            "Requests of this process waiting for their turn in a waiting room",
            self.waiting_now.clone(),
        );
    }

    /// The room in front of the event's sale, if one is open.
    pub async fn rule(&self, event: i64) -> Result<Option<RoomRule>, DbError> {
        if let Some(&(rule, read)) = self.rules.lock().expect("rules lock").get(&event) {
            if read.elapsed() < RULE_FRESH {
                return Ok(rule);
            }
        }
        let read = Instant::now();
        let rule = store::room(&self.db, event).await?;
        self.remember(event, rule, read);
        Ok(rule)
    }

    /// Takes `rule` as the event's, as read (or written) at `read`.
    pub fn remember(&self, event: i64, rule: Option<RoomRule>, read: Instant) {
        let mut rules = self.rules.lock().expect("rules lock");
        if rules.len() >= RULES_KEPT {
            rules.retain(|_, (_, at)| at.elapsed() < RULE_FRESH);
        }
        match rules.get(&event) {
            Some((_, at)) if *at > read => {}
            _ => {
                rules.insert(event, (rule, read));
            }
        }
    }

    pub async fn join(&self, event: i64, user: &str, rule: RoomRule) -> Result<Place, CacheError> {
        let place = self.cache.room_join(event, user, rule).await?;
        self.joins.inc();
        Ok(place)
    }

    pub async fn place(&self, event: i64, user: &str, rule: RoomRule) -> Result<Option<Place>, CacheError> {
        self.cache.room_place(event, user, rule).await
    }

    /// The buyer was told they are admitted, with `claim_left` to book.
    pub fn told_admitted(&self, event: i64, user: &str, claim_left: Duration) {
        let mut told = self.told.lock().expect("told lock");
        if told.len() >= RULES_KEPT && told.len().is_power_of_two() {
            told.retain(|_, until| Instant::now() < *until);
        }
        told.insert((event, user.to_string()), Instant::now() + claim_left);
    }

    /// Whether this process told the buyer they are admitted, and their
    /// claim has not run out. A buyer who left through another replica is
    /// let through once more here until then: the room shapes the load,
    /// it does not decide seats.
    pub fn was_told(&self, event: i64, user: &str) -> bool {
        let told = self.told.lock().expect("told lock");
        told.get(&(event, user.to_string()))
            .is_some_and(|until| Instant::now() < *until)
    }

    /// The buyer is done: their claim goes to the next in line.
    ///
    /// A buyer this process told was admitted, within their claim, frees a
    /// claim by leaving, so the next number here is woken before the cache
    /// is asked: the round trip (5 ms at the median, 20 at p99, on a
    /// saturated box in a sale) is no longer between one buyer's answer
    /// and the next one's turn. The cache's count is never behind what
    /// this process heard, so the number woken is one the cache admits
    /// with this leave at the latest.
    pub async fn leave(&self, event: i64, user: &str, rule: RoomRule) -> Result<(), CacheError> {
        let held = self
            .told
            .lock()
            .expect("told lock")
            .remove(&(event, user.to_string()))
            .is_some_and(|until| Instant::now() < until);
        if held {
            if let Some(w) = self.waiting.lock().expect("waiting lock").get_mut(&event) {
                let next = w.admitted + 1;
                w.admitted_upto(next);
            }
        }
        let upto = self.cache.room_leave(event, user, rule).await?;
        self.leaves.inc();
        self.admitted(event, upto);
        Ok(())
    }

    /// Numbers up to `upto` are admitted to the event's room.
    fn admitted(&self, event: i64, upto: u64) {
        if let Some(w) = self.waiting.lock().expect("waiting lock").get_mut(&event) {
            w.admitted_upto(upto);
        }
    }

    /// Resolves once `number` is admitted to the event's room (as far as
    /// this process hears); `admitted` is the highest number the cache
    /// said was admitted when it gave the place.
    pub fn turn_of(&self, event: i64, rule: RoomRule, number: u64, admitted: u64) -> oneshot::Receiver<()> {
        let (wake, woken) = oneshot::channel();
        let mut waiting = self.waiting.lock().expect("waiting lock");
        let w = waiting.entry(event).or_insert_with(|| Waiting {
            rule,
            admitted: 0,
            waiters: BTreeMap::new(),
        });
        w.rule = rule;
        // Known from the start, so that a turn passed on here before the
        // next tick wakes the right number.
        w.admitted = w.admitted.max(admitted);
        if w.admitted >= number {
            let _ = wake.send(());
        } else {
            w.waiters.entry(number).or_default().push(wake);
        }
        woken
    }

    /// Admits, for each event with requests waiting here, every [`TICK`],
    /// until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let waited: Vec<(i64, RoomRule)> = {
                let mut waiting = self.waiting.lock().expect("waiting lock");
                // Requests that stopped waiting (answered, or gone) are dropped.
                waiting.retain(|_, w| {
                    w.waiters.retain(|_, wakes| {
                        wakes.retain(|wake| !wake.is_closed());
                        !wakes.is_empty()
                    });
                    !w.waiters.is_empty()
                });
                let now: usize = waiting
                    .values()
                    .flat_map(|w| w.waiters.values())
                    .map(Vec::len)
                    .sum();
                self.waiting_now.set(now as i64);
                waiting.iter().map(|(event, w)| (*event, w.rule)).collect()
            };
            for (event, rule) in waited {
                match self.cache.room_admit(event, rule).await {
                    Ok(upto) => self.admitted(event, upto),
                    Err(e) => tracing::warn!(event_id = event, error = %e, "waiting room could not admit"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ticketer_testkit::TestDatabase;

    use super::*;

    const RULE: RoomRule = RoomRule {
        admitted_at_once: 1,
        claim: Duration::from_secs(60),
    };

    async fn rooms(cache: Cache) -> (TestDatabase, Rooms) {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        (tdb, Rooms::new(db, cache))
    }

    fn woken(turn: &mut oneshot::Receiver<()>) -> bool {
        turn.try_recv().is_ok()
    }

    #[tokio::test]
    async fn a_buyer_told_here_passes_the_turn_on_without_waiting_for_the_cache() {
        let cache = Cache::memory();
        let (_tdb, rooms) = rooms(cache.clone()).await;
        assert!(matches!(
            cache.room_join(1, "a", RULE).await.unwrap(),
            Place::Admitted { number: 1, .. }
        ));
        assert_eq!(
            cache.room_join(1, "b", RULE).await.unwrap(),
            Place::Waiting { number: 2, ahead: 0 }
        );
        let mut b = rooms.turn_of(1, RULE, 2, 1);
        assert!(!woken(&mut b));

        // Someone this process never told (admitted through another
        // replica, say) leaves without a place: the cache admits nobody,
        // and nobody is woken here.
        rooms.leave(1, "stranger", RULE).await.unwrap();
        assert!(!woken(&mut b));

        // A buyer told here, within their claim, frees one: b's turn comes
        // from that alone (the cache, which never gave "ghost" a place,
        // admits nobody with this leave).
        rooms.told_admitted(1, "ghost", RULE.claim);
        rooms.leave(1, "ghost", RULE).await.unwrap();
        assert!(woken(&mut b));

        // Told once, passed on once: leaving again wakes nobody more.
        let mut c = rooms.turn_of(1, RULE, 3, 1);
        rooms.leave(1, "ghost", RULE).await.unwrap();
        assert!(!woken(&mut c));
    }

    #[tokio::test]
    async fn a_claim_run_out_passes_nothing_on_here() {
        let cache = Cache::memory();
        let (_tdb, rooms) = rooms(cache.clone()).await;
        cache.room_join(1, "a", RULE).await.unwrap();
        cache.room_join(1, "b", RULE).await.unwrap();
        let mut b = rooms.turn_of(1, RULE, 2, 1);
        rooms.told_admitted(1, "ghost", Duration::ZERO);
        rooms.leave(1, "ghost", RULE).await.unwrap();
        assert!(!woken(&mut b));
        // a's own leaving admits b through the cache.
        rooms.leave(1, "a", RULE).await.unwrap();
        assert!(woken(&mut b));
    }
}
