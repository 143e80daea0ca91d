//! Argon2id password hashes (memory-hard), computed off the async runtime
//! on a bounded pool.
//!
//! Each hash takes about 19 MiB and tens of milliseconds of one core. Left
//! unbounded, a burst of logins starts one blocking thread per request: the
//! machine thrashes and the allocator keeps every thread's 19 MiB around
//! (500 concurrent logins grew one process past 20 GB). So at most
//! `permits` hashes run at once (about one per core); up to `queue` more
//! callers wait their turn for at most `wait`, and everyone beyond that is
//! told to come back later (503 with Retry-After) instead of piling up.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};
use tokio::sync::Semaphore;

use crate::AuthError;

/// How much hashing may happen at once, and how long callers may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    /// Hashes running at once.
    pub permits: usize,
    /// Callers waiting for a permit; more are refused at once.
    pub queue: usize,
    /// How long a caller waits for a permit before being refused.
    pub wait: Duration,
}

impl Default for HashLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        HashLimits {
            permits: cores,
            queue: 64 * cores,
            wait: Duration::from_secs(5),
        }
    }
}

/// The bounded pool every hash and verification goes through.
#[derive(Clone)]
pub struct Hasher {
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    wait: Duration,
    /// Hashes running now and the most ever seen at once (for tests and metrics).
    active: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Hasher {
    pub fn new(limits: HashLimits) -> Self {
        Hasher {
            running: Arc::new(Semaphore::new(limits.permits.max(1))),
            // Waiting slots include the running ones: a caller holds a slot
            // from arrival until its hash is done.
            waiting: Arc::new(Semaphore::new(limits.permits.max(1) + limits.queue)),
            wait: limits.wait,
            active: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// The most hashes that ever ran at the same time.
    pub fn peak_concurrency(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Runs `work` on a blocking thread once a permit is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, AuthError> {
        let Ok(slot) = self.waiting.clone().try_acquire_owned() else {
            return Err(AuthError::Busy);
        };
        let permit = match tokio::time::timeout(self.wait, self.running.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => return Err(AuthError::Busy),
        };
        let (active, peak) = (self.active.clone(), self.peak.clone());
        tokio::task::spawn_blocking(move || {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let out = work();
            active.fetch_sub(1, Ordering::SeqCst);
            drop((permit, slot));
            out
        })
        .await
        .map_err(|e| AuthError::Internal(e.into()))?
        .map_err(AuthError::Internal)
    }

    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
        })
        .await
    }

    /// Checks `password` against `stored`; with no stored hash (unknown
    /// user) it still spends the same work so response times do not reveal
    /// accounts.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, AuthError> {
        self.run(move || {
            let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_string());
            let parsed = PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
                && stored != DUMMY_HASH)
        })
        .await
    }
}

/// Argon2id (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Jp5o1Ez7Bf1Hzz+M1Ha4Yl6GswVd7y2VqS07Jm4Xh2o";

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(permits: usize, queue: usize, wait_ms: u64) -> Hasher {
        Hasher::new(HashLimits {
            permits,
            queue,
            wait: Duration::from_millis(wait_ms),
        })
    }

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let h = Hasher::new(HashLimits::default());
        let stored = h.hash("correct horse".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(h
            .verify("correct horse".into(), Some(stored.clone()))
            .await
            .unwrap());
        assert!(!h.verify("wrong horse".into(), Some(stored)).await.unwrap());
        assert!(!h.verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_more_hashes_at_once_than_permits() {
        let h = hasher(2, 64, 60_000);
        let jobs: Vec<_> = (0..12)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.hash(format!("password {i}")).await })
            })
            .collect();
        for j in jobs {
            assert!(j.await.unwrap().unwrap().starts_with("$argon2id$"));
        }
        assert_eq!(h.peak_concurrency(), 2, "12 hashes with 2 permits");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn callers_beyond_the_queue_are_refused_not_queued() {
        // One permit (taken here, as a long hash would) and one waiting
        // place: two callers fit (one per place), the third is refused at
        // once, and both waiting callers finish once the permit is free.
        let h = hasher(1, 1, 60_000);
        let permit = h.running.clone().acquire_owned().await.unwrap();
        let waiting: Vec<_> = (0..2)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.hash(format!("password {i}")).await })
            })
            .collect();
        while h.waiting.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let err = h.hash("one too many".into()).await.unwrap_err();
        assert!(matches!(err, AuthError::Busy), "{err}");
        drop(permit);
        for j in waiting {
            assert!(j.await.unwrap().unwrap().starts_with("$argon2id$"));
        }
        assert_eq!(h.peak_concurrency(), 1);
    }

    #[tokio::test]
    async fn a_caller_waits_no_longer_than_the_deadline() {
        let h = hasher(1, 4, 1);
        // Hold the only permit, as a long hash would.
        let _permit = h.running.clone().acquire_owned().await.unwrap();
        let err = h.hash("password".into()).await.unwrap_err();
        assert!(matches!(err, AuthError::Busy), "{err}");
    }
}
