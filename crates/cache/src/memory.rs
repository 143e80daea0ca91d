use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{Bucket, RateDecision};

/// The embedded backend: a map with expiry, for one process.
#[derive(Default)]
pub struct MemoryCache {
    values: Mutex<HashMap<String, (String, Option<Instant>)>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
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
        let exp = ttl.map(|t| Instant::now() + t);
        self.values
            .lock()
            .expect("cache lock")
            .insert(key.to_string(), (value.to_string(), exp));
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
        buckets.insert(key.to_string(), (tokens, now));
        decision
    }

    pub(crate) fn clear(&self) {
        self.values.lock().expect("cache lock").clear();
        self.buckets.lock().expect("bucket lock").clear();
    }
}
