use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    room::{Place, Room, RoomRule},
    Bucket, RateDecision,
};

/// Past this many entries, a write first drops what no longer matters
/// (expired values, buckets idle long enough to be full again), so that
/// keys nobody asks for again (one per client address) do not pile up.
const SWEEP_ABOVE: usize = 10_000;

/// The embedded backend: a map with expiry, for one process.
#[derive(Default)]
pub struct MemoryCache {
    values: Mutex<HashMap<String, (String, Option<Instant>)>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    rooms: Mutex<Rooms>,
}

/// The waiting rooms by event, and the clock their times are read on.
struct Rooms {
    by_event: HashMap<i64, Room>,
    since: Instant,
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms {
            by_event: HashMap::new(),
            since: Instant::now(),
        }
    }
}

/// Drops entries `stale` says are gone, when the map has grown past
/// [`SWEEP_ABOVE`] (and at most once per doubling beyond it).
fn sweep<V>(map: &mut HashMap<String, V>, stale: impl Fn(&V) -> bool) {
    if map.len() >= SWEEP_ABOVE && map.len().is_power_of_two() {
        map.retain(|_, v| !stale(v));
    }
}

impl MemoryCache {
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let mut values = self.values.lock().expect("cache lock");
        match values.get(key) {
            Some((_, Some(exp))) if *exp <= Instant::now() => {
                values.remove(key);
                None
            }
            Some((v, _)) => Some(v.clone()),
            None => None,
        }
    }

    pub(crate) fn set(&self, key: &str, value: &str, ttl: Option<Duration>) {
        let now = Instant::now();
        let exp = ttl.map(|t| now + t);
        let mut values = self.values.lock().expect("cache lock");
        sweep(&mut values, |(_, exp)| exp.is_some_and(|e| e <= now));
        values.insert(key.to_string(), (value.to_string(), exp));
    }

    pub(crate) fn delete(&self, key: &str) {
        self.values.lock().expect("cache lock").remove(key);
    }

    pub(crate) fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> bool {
        if self.get(key).is_some() {
            return false;
        }
        self.set(key, value, Some(ttl));
        true
    }

    pub(crate) fn delete_if(&self, key: &str, value: &str) -> bool {
        let mut values = self.values.lock().expect("cache lock");
        match values.get(key) {
            Some((v, exp)) if v == value && exp.is_none_or(|e| e > Instant::now()) => {
                values.remove(key);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn rate_limit(&self, key: &str, bucket: Bucket) -> RateDecision {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("bucket lock");
        let (tokens, last) = buckets.get(key).copied().unwrap_or((bucket.burst as f64, now));
        let elapsed = now.saturating_duration_since(last).as_millis() as u64;
        let (tokens, decision) = bucket.take(tokens, elapsed);
        // A bucket left alone this long is full again: the same as absent.
        let refill = Duration::from_secs_f64(bucket.burst as f64 * 60.0 / bucket.per_minute.max(1) as f64);
        sweep(&mut buckets, |(_, last)| {
            now.saturating_duration_since(*last) >= refill
        });
        buckets.insert(key.to_string(), (tokens, now));
        decision
    }

    pub(crate) fn refill(&self, key: &str) {
        self.buckets.lock().expect("bucket lock").remove(key);
    }

    /// Runs `step` on the event's room at the time now; a room left with
    /// nothing in it is forgotten.
    fn with_room<T>(&self, event: i64, step: impl FnOnce(&mut Room, u64) -> T) -> T {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let now = rooms.since.elapsed().as_millis() as u64;
        let room = rooms.by_event.entry(event).or_default();
        let done = step(room, now);
        if room.is_idle() {
            rooms.by_event.remove(&event);
        }
        done
    }

    pub(crate) fn room_join(&self, event: i64, user: &str, rule: RoomRule) -> Place {
        self.with_room(event, |room, now| room.join(user, now, rule))
    }

    pub(crate) fn room_place(&self, event: i64, user: &str, rule: RoomRule) -> Option<Place> {
        self.with_room(event, |room, now| room.place(user, now, rule))
    }

    pub(crate) fn room_leave(&self, event: i64, user: &str, rule: RoomRule) -> u64 {
        self.with_room(event, |room, now| room.leave(user, now, rule))
    }

    pub(crate) fn room_admit(&self, event: i64, rule: RoomRule) -> u64 {
        self.with_room(event, |room, now| room.admit(now, rule))
    }

    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (
            self.values.lock().expect("cache lock").len(),
            self.buckets.lock().expect("bucket lock").len(),
        )
    }

    pub(crate) fn clear(&self) {
        self.values.lock().expect("cache lock").clear();
        self.buckets.lock().expect("bucket lock").clear();
        self.rooms.lock().expect("rooms lock").by_event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_keys_do_not_pile_up() {
        let cache = MemoryCache::default();
        let bucket = Bucket {
            per_minute: 6_000_000,
            burst: 1,
        };
        for n in 0..100_000 {
            cache.set(&format!("v{n}"), "x", Some(Duration::from_nanos(1)));
            cache.rate_limit(&format!("ip:{n}"), bucket);
        }
        let (values, buckets) = cache.sizes();
        assert!(values < 2 * SWEEP_ABOVE * 4, "values kept: {values}");
        assert!(buckets < 2 * SWEEP_ABOVE * 4, "buckets kept: {buckets}");
    }
}
