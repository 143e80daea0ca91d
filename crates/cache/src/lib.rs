//! Shared cache, locks and rate-limit buckets.
//!
//! Redis in production, so every replica sees the same keys; process memory
//! when embedded. A lock here only reduces contention: it can expire while
//! its holder still runs, so the database stays the source of truth.

mod memory;
mod redis_backend;
pub mod room;

use std::{sync::Arc, time::Duration};

pub use memory::MemoryCache;
pub use redis_backend::RedisCache;
pub use room::{Place, RoomRule};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Proof of holding a lock; release it with [`Cache::unlock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken {
    pub key: String,
    token: String,
}

/// A rate-limit decision from a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Whole seconds until a token is available (0 when allowed).
    pub retry_after_secs: u64,
}

/// A token bucket: `burst` tokens, refilled at `per_minute` per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub per_minute: u32,
    pub burst: u32,
}

impl Bucket {
    /// Pure bucket arithmetic, shared by the memory backend and the tests
    /// (the Redis script does the same in Lua). Returns the new token count
    /// and the decision.
    pub fn take(&self, tokens: f64, elapsed_ms: u64) -> (f64, RateDecision) {
        let capacity = self.burst.max(1) as f64;
        let rate_per_ms = self.per_minute as f64 / 60_000.0;
        let tokens = (tokens + elapsed_ms as f64 * rate_per_ms).min(capacity);
        if tokens >= 1.0 {
            (
                tokens - 1.0,
                RateDecision {
                    allowed: true,
                    retry_after_secs: 0,
                },
            )
        } else {
            let wait_ms = ((1.0 - tokens) / rate_per_ms).ceil() as u64;
            let retry_after_secs = wait_ms.div_ceil(1000).max(1);
            (
                tokens,
                RateDecision {
                    allowed: false,
                    retry_after_secs,
                },
            )
        }
    }
}

/// Keys of the figures one service keeps in the cache for others.
pub mod figures {
    /// Seats of an event, as the ticket service last counted them
    /// ([`Seats::encode`]). Absent when unknown: readers then ask the
    /// service that decides.
    pub fn availability(event_id: i64) -> String {
        format!("availability:{event_id}")
    }

    /// An event's seats as the ticket service last counted them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Seats {
        /// For sale now.
        pub available: i64,
        /// Held for buyers still paying: they come back for sale if a
        /// payment fails or a hold runs out.
        pub held: i64,
    }

    impl Seats {
        /// As stored: the two counts in decimal, `available held`.
        pub fn encode(self) -> String {
            format!("{} {}", self.available, self.held)
        }

        /// A stored figure; one with the available count alone (as written
        /// before the held seats were) counts none held.
        pub fn parse(stored: &str) -> Option<Seats> {
            let mut counts = stored.split_whitespace().map(str::parse::<i64>);
            let available = counts.next()?.ok()?;
            let held = match counts.next() {
                Some(held) => held.ok()?,
                None => 0,
            };
            counts.next().is_none().then_some(Seats { available, held })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn seats_read_back_as_written_and_old_figures_count_none_held() {
            let seats = Seats {
                available: 7,
                held: 3,
            };
            assert_eq!(Seats::parse(&seats.encode()), Some(seats));
            assert_eq!(
                Seats::parse("12"),
                Some(Seats {
                    available: 12,
                    held: 0
                })
            );
            for bad in ["", "x", "1 y", "1 2 3", "1.5 2"] {
                assert_eq!(Seats::parse(bad), None, "{bad:?}");
            }
        }
    }
}

#[derive(Clone)]
pub enum Cache {
    Memory(Arc<MemoryCache>),
    Redis(Arc<RedisCache>),
}

impl Cache {
    /// Redis when `redis_url` is set, else process memory. Every key is
    /// stored under `prefix`.
    pub async fn connect(redis_url: Option<&str>, prefix: &str) -> Result<Cache, CacheError> {
        match redis_url {
            Some(url) => Ok(Cache::Redis(Arc::new(RedisCache::connect(url, prefix).await?))),
            None => Ok(Cache::memory()),
        }
    }

    pub fn memory() -> Cache {
        Cache::Memory(Arc::new(MemoryCache::default()))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Cache::Memory(_) => "memory",
            Cache::Redis(_) => "redis",
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.get(key)),
            Cache::Redis(r) => r.get(key).await,
        }
    }

    pub async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.set(key, value, ttl);
                Ok(())
            }
            Cache::Redis(r) => r.set(key, value, ttl).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.delete(key);
                Ok(())
            }
            Cache::Redis(r) => r.delete(key).await,
        }
    }

    /// Takes the lock `key` for `ttl` if nobody holds it.
    pub async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, CacheError> {
        let token = uuid::Uuid::new_v4().to_string();
        let won = match self {
            Cache::Memory(m) => m.set_if_absent(&lock_key(key), &token, ttl),
            Cache::Redis(r) => r.set_if_absent(&lock_key(key), &token, ttl).await?,
        };
        Ok(won.then(|| LockToken {
            key: key.to_string(),
            token,
        }))
    }

    /// Releases the lock if `lock` still holds it; false if it had expired
    /// and someone else took it.
    pub async fn unlock(&self, lock: &LockToken) -> Result<bool, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.delete_if(&lock_key(&lock.key), &lock.token)),
            Cache::Redis(r) => r.delete_if(&lock_key(&lock.key), &lock.token).await,
        }
    }

    /// Takes one token from the bucket `key`.
    pub async fn rate_limit(&self, key: &str, bucket: Bucket) -> Result<RateDecision, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.rate_limit(key, bucket)),
            Cache::Redis(r) => r.rate_limit(key, bucket).await,
        }
    }

    /// Fills the bucket `key` again (forgets what was taken from it).
    pub async fn refill(&self, key: &str) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.refill(key);
                Ok(())
            }
            Cache::Redis(r) => r.refill(key).await,
        }
    }

    /// Joins the event's waiting room: the buyer's place if they are
    /// waiting or admitted, else the next number.
    pub async fn room_join(&self, event: i64, user: &str, rule: RoomRule) -> Result<Place, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.room_join(event, user, rule)),
            Cache::Redis(r) => r.room_place("join", event, user, rule).await?.ok_or_else(|| {
                CacheError::Redis(redis::RedisError::from((
                    redis::ErrorKind::TypeError,
                    "joining the waiting room gave no place",
                )))
            }),
        }
    }

    /// The buyer's place in the event's waiting room, if they have one.
    pub async fn room_place(
        &self,
        event: i64,
        user: &str,
        rule: RoomRule,
    ) -> Result<Option<Place>, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.room_place(event, user, rule)),
            Cache::Redis(r) => r.room_place("place", event, user, rule).await,
        }
    }

    /// The buyer is done with the room: their claim admits the next.
    /// Returns the highest number admitted.
    pub async fn room_leave(&self, event: i64, user: &str, rule: RoomRule) -> Result<u64, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.room_leave(event, user, rule)),
            Cache::Redis(r) => r.room("leave", event, user, rule).await.map(|(_, n, _)| n),
        }
    }

    /// Admits what the room's claims allow; the highest number admitted.
    pub async fn room_admit(&self, event: i64, rule: RoomRule) -> Result<u64, CacheError> {
        match self {
            Cache::Memory(m) => Ok(m.room_admit(event, rule)),
            Cache::Redis(r) => r.room("admit", event, "", rule).await.map(|(_, n, _)| n),
        }
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        match self {
            Cache::Memory(_) => Ok(()),
            Cache::Redis(r) => r.ping().await,
        }
    }

    /// Deletes every key under this cache's prefix (tests clean up with it).
    pub async fn clear(&self) -> Result<(), CacheError> {
        match self {
            Cache::Memory(m) => {
                m.clear();
                Ok(())
            }
            Cache::Redis(r) => r.clear().await,
        }
    }
}

fn lock_key(key: &str) -> String {
    format!("lock:{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let b = Bucket {
            per_minute: 60,
            burst: 3,
        };
        let mut tokens = 3.0;
        for _ in 0..3 {
            let (t, d) = b.take(tokens, 0);
            assert!(d.allowed);
            tokens = t;
        }
        let (t, d) = b.take(tokens, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
        // One second later one token has come back.
        let (_, d) = b.take(t, 1000);
        assert!(d.allowed);
    }

    #[test]
    fn bucket_never_exceeds_burst() {
        let b = Bucket {
            per_minute: 600,
            burst: 2,
        };
        let (t, _) = b.take(0.0, 3_600_000);
        assert_eq!(t, 1.0);
    }
}
