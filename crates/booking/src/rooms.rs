//! Waiting rooms in front of crowded sales, as the booking service keeps
//! them: which events have one (from the database, remembered for a
//! second), the buyers' places (in the cache, shared by every replica: see
//! [`ticketer_cache::room`]), and the requests waiting to be admitted.
//!
//! A waiting request is not woken per admission: one task per process asks
//! the cache to admit, for each event with requests waiting here, every
//! [`TICK`] (at once when a buyer here leaves), and tells the waiters the
//! highest number admitted. Only those whose number came up read their
//! place again, so thousands of waiters cost one cache call per tick.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ticketer_cache::{Cache, CacheError, Place, RoomRule};
use ticketer_db::{Db, DbError};
use tokio::sync::{watch, Notify};
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

/// Per event with requests waiting here: the highest number admitted, and
/// the rule it admits by.
type Admissions = HashMap<i64, (watch::Sender<u64>, RoomRule)>;

#[derive(Clone)]
pub struct Rooms {
    db: Db,
    cache: Cache,
    rules: Arc<Mutex<Rules>>,
    admitted: Arc<Mutex<Admissions>>,
    /// A buyer here left a room: admit without waiting for the tick.
    poke: Arc<Notify>,
}

impl Rooms {
    pub fn new(db: Db, cache: Cache) -> Self {
        Rooms {
            db,
            cache,
            rules: Arc::default(),
            admitted: Arc::default(),
            poke: Arc::default(),
        }
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
        self.cache.room_join(event, user, rule).await
    }

    pub async fn place(&self, event: i64, user: &str, rule: RoomRule) -> Result<Option<Place>, CacheError> {
        self.cache.room_place(event, user, rule).await
    }

    /// The buyer is done: their claim goes to the next in line.
    pub async fn leave(&self, event: i64, user: &str, rule: RoomRule) -> Result<(), CacheError> {
        self.cache.room_leave(event, user, rule).await?;
        self.poke.notify_one();
        Ok(())
    }

    /// The highest number admitted to the event's room, as this process
    /// last heard, changing as the room admits.
    pub fn admissions(&self, event: i64, rule: RoomRule) -> watch::Receiver<u64> {
        let mut admitted = self.admitted.lock().expect("admitted lock");
        let (tx, known) = admitted
            .entry(event)
            .or_insert_with(|| (watch::channel(0).0, rule));
        *known = rule;
        let rx = tx.subscribe();
        drop(admitted);
        self.poke.notify_one();
        rx
    }

    /// Admits, for each event with requests waiting here, every [`TICK`]
    /// or when poked, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
                _ = self.poke.notified() => {}
            }
            let waited: Vec<(i64, RoomRule)> = {
                let mut admitted = self.admitted.lock().expect("admitted lock");
                admitted.retain(|_, (tx, _)| tx.receiver_count() > 0);
                admitted
                    .iter()
                    .map(|(event, (_, rule))| (*event, *rule))
                    .collect()
            };
            for (event, rule) in waited {
                match self.cache.room_admit(event, rule).await {
                    Ok(upto) => {
                        if let Some((tx, _)) = self.admitted.lock().expect("admitted lock").get(&event) {
                            tx.send_if_modified(|known| {
                                let news = upto > *known;
                                *known = (*known).max(upto);
                                news
                            });
                        }
                    }
                    Err(e) => tracing::warn!(event_id = event, error = %e, "waiting room could not admit"),
                }
            }
        }
    }
}
