//! Failed sign-ins, throttled. Without it a password can be guessed at the
//! speed of the hashing pool, and after any number of wrong guesses the
//! right one still signs in.
//!
//! Only failures count, so a crowd signing in correctly from one address (a
//! venue's network, a load test) is never slowed. Failures are counted in
//! three token buckets: the account from this address (the guesser), the
//! account from anywhere (a guesser with many addresses) and the address
//! across accounts (one password tried on many accounts). When a failure
//! finds a bucket empty, that key is blocked until the bucket has a token
//! again; a blocked key answers 429 with Retry-After before any password is
//! hashed. The per-account bucket is wider than the per-address one, so a
//! stranger can slow an account down but not lock its owner out for long.
//!
//! The counts live in the shared cache (Redis in production), so every auth
//! replica sees the same ones; emails are hashed before they become keys.

use std::net::IpAddr;

use ipnet::IpNet;
use ticketer_cache::{Bucket, Cache};

/// How many failed sign-ins are allowed before the next attempt waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures in a row allowed for one account from one address; 0 turns
    /// throttling off.
    pub failures: u32,
    /// Failures forgiven per minute once that many are spent.
    pub per_minute: u32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            failures: 5,
            per_minute: 1,
        }
    }
}

/// The accounts of one address, and one account's addresses, get this many
/// times the failures of one account from one address.
const ACCOUNT_WIDTH: u32 = 4;
const ADDRESS_WIDTH: u32 = 10;

/// Which counter a failure goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    pub account_from_address: String,
    pub account: String,
    pub address: Option<String>,
}

impl Keys {
    /// The counters of a sign-in to `email` (as typed; case is ignored)
    /// from `address`.
    pub fn of(email: &str, address: Option<IpAddr>) -> Keys {
        let account = account_id(email);
        let address = address.map(|a| a.to_string());
        Keys {
            account_from_address: format!("login-fail:pair:{account}:{}", address.as_deref().unwrap_or("-")),
            account: format!("login-fail:account:{account}"),
            address: address.map(|a| format!("login-fail:address:{a}")),
        }
    }

    /// Each counter with its bucket under `limits`.
    fn with_buckets(&self, limits: LoginLimits) -> Vec<(&str, Bucket)> {
        let bucket = |width: u32| Bucket {
            // The failure that empties a bucket blocks the next attempt, so
            // `failures` failures leave `failures - 1` tokens to spend.
            burst: (limits.failures * width).saturating_sub(1).max(1),
            per_minute: limits.per_minute.max(1) * width,
        };
        let mut all = vec![
            (self.account_from_address.as_str(), bucket(1)),
            (self.account.as_str(), bucket(ACCOUNT_WIDTH)),
        ];
        if let Some(address) = &self.address {
            all.push((address.as_str(), bucket(ADDRESS_WIDTH)));
        }
        all
    }
}

/// A short, stable stand-in for an email: keys in a shared cache should not
/// list who has accounts.
fn account_id(email: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, email.trim().to_lowercase().as_bytes());
    d.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn blocked_key(key: &str) -> String {
    format!("{key}:blocked")
}

/// The caller's address: the connection's peer, or, when the peer is a
/// proxy we trust (the gateway), the nearest address in X-Forwarded-For
/// that is not one of ours. Entries further left were written by the
/// client and are not believed.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(chain) = forwarded_for else {
        return Some(peer);
    };
    let mut nearest = peer;
    for entry in chain.rsplit(',') {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => nearest = ip,
            Ok(ip) => return Some(ip),
            // A malformed entry: nothing to its left can be believed.
            Err(_) => break,
        }
    }
    Some(nearest)
}

/// Failed sign-ins counted in the shared cache.
#[derive(Clone)]
pub struct Throttle {
    cache: Option<Cache>,
    limits: LoginLimits,
    trusted_proxies: std::sync::Arc<Vec<IpNet>>,
}

impl Throttle {
    pub fn new(cache: Cache, limits: LoginLimits, trusted_proxies: Vec<IpNet>) -> Self {
        let cache = (limits.failures > 0).then_some(cache);
        Throttle {
            cache,
            limits,
            trusted_proxies: std::sync::Arc::new(trusted_proxies),
        }
    }

    /// No throttling (operator tooling working on the database directly).
    pub fn off() -> Self {
        Throttle {
            cache: None,
            limits: LoginLimits::default(),
            trusted_proxies: Default::default(),
        }
    }

    /// Who is signing in, by the connection's `peer` and its
    /// X-Forwarded-For (see [`client_address`]).
    pub fn caller(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        client_address(peer, forwarded_for, &self.trusted_proxies)
    }

    /// Seconds to wait when any of `keys` is blocked; None to go ahead.
    pub(crate) async fn wait(&self, keys: &Keys) -> Option<u64> {
        let cache = self.cache.as_ref()?;
        let now = now_ms();
        let mut longest = None;
        for (key, _) in keys.with_buckets(self.limits) {
            // A cache that does not answer lets the attempt through: the
            // password check still decides, it is only not slowed down.
            let Ok(Some(until)) = cache.get(&blocked_key(key)).await else {
                continue;
            };
            let Ok(until) = until.parse::<u64>() else { continue };
            if until > now {
                let secs = (until - now).div_ceil(1000).max(1);
                longest = longest.max(Some(secs));
            }
        }
        longest
    }

    /// Counts a failed sign-in; a counter it empties is blocked until its
    /// bucket has a token again.
    pub(crate) async fn failed(&self, keys: &Keys) {
        let Some(cache) = &self.cache else { return };
        for (key, bucket) in keys.with_buckets(self.limits) {
            match cache.rate_limit(key, bucket).await {
                Ok(d) if !d.allowed => {
                    let until = now_ms() + d.retry_after_secs * 1000;
                    let ttl = std::time::Duration::from_secs(d.retry_after_secs);
                    if let Err(e) = cache.set(&blocked_key(key), &until.to_string(), Some(ttl)).await {
                        tracing::warn!(error = %e, "could not record a sign-in block");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not count a failed sign-in"),
            }
        }
    }

    /// A correct password from this address: its own count starts over
    /// (the account's and the address's wider counts do not).
    pub(crate) async fn succeeded(&self, keys: &Keys) {
        let Some(cache) = &self.cache else { return };
        if let Err(e) = cache.refill(&keys.account_from_address).await {
            tracing::warn!(error = %e, "could not reset a sign-in count");
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = nets(&["127.0.0.0/8"]);
        assert_eq!(
            client_address(Some(ip("203.0.113.9")), Some("10.1.1.1"), &trusted),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_entry_is_the_client() {
        let trusted = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
        // The client wrote 1.2.3.4 itself; the ingress (10.0.0.5) saw
        // 198.51.100.7, and the gateway (peer 127.0.0.1) saw the ingress.
        let chain = "1.2.3.4, 198.51.100.7, 10.0.0.5";
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), Some(chain), &trusted),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), None, &trusted),
            Some(ip("127.0.0.1"))
        );
        // Every hop ours: the furthest one is the best we know.
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), Some("10.0.0.5"), &trusted),
            Some(ip("10.0.0.5"))
        );
        // Garbage stops the walk at the last address believed.
        assert_eq!(
            client_address(Some(ip("127.0.0.1")), Some("nonsense, 10.0.0.5"), &trusted),
            Some(ip("10.0.0.5"))
        );
        assert_eq!(client_address(None, Some(chain), &trusted), None);
    }

    #[test]
    fn keys_ignore_the_emails_case_and_never_contain_it() {
        let a = Keys::of("Ada@Example.com", Some(ip("192.0.2.1")));
        let b = Keys::of(" ada@example.com", Some(ip("192.0.2.1")));
        assert_eq!(a, b);
        for key in [&a.account_from_address, &a.account] {
            assert!(!key.to_lowercase().contains("ada"), "{key}");
        }
        assert_ne!(a.account, Keys::of("bob@example.com", None).account);
        assert_eq!(a.address.as_deref(), Some("login-fail:address:192.0.2.1"));
        assert_eq!(Keys::of("ada@example.com", None).address, None);
    }

    #[test]
    fn the_failure_that_spends_the_last_token_blocks_the_next_attempt() {
        let limits = LoginLimits {
            failures: 5,
            per_minute: 1,
        };
        let keys = Keys::of("ada@example.com", Some(ip("192.0.2.1")));
        let buckets = keys.with_buckets(limits);
        let (_, pair) = buckets[0];
        // Failures 1..=4 are allowed, the fifth is refused (and blocks).
        let mut tokens = pair.burst as f64;
        let mut allowed = 0;
        for _ in 0..5 {
            let (left, d) = pair.take(tokens, 0);
            tokens = left;
            if d.allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 4);
        // The account and the address are wider than the pair.
        assert!(buckets[1].1.burst > pair.burst && buckets[2].1.burst > buckets[1].1.burst);
    }

    #[tokio::test]
    async fn five_failures_block_the_pair_and_a_success_starts_it_over() {
        let throttle = Throttle::new(Cache::memory(), LoginLimits::default(), Vec::new());
        let keys = Keys::of("ada@example.com", Some(ip("192.0.2.1")));
        for _ in 0..4 {
            throttle.failed(&keys).await;
            assert_eq!(throttle.wait(&keys).await, None);
        }
        throttle.failed(&keys).await;
        let wait = throttle.wait(&keys).await.expect("blocked after five failures");
        assert!((1..=60).contains(&wait), "{wait}");
        // A success before the fifth failure starts the count over.
        let carol = Keys::of("carol@example.com", Some(ip("192.0.2.1")));
        for _ in 0..4 {
            throttle.failed(&carol).await;
        }
        throttle.succeeded(&carol).await;
        for _ in 0..4 {
            throttle.failed(&carol).await;
        }
        assert_eq!(throttle.wait(&carol).await, None);
        // Another account from the same address is not blocked.
        let other = Keys::of("bob@example.com", Some(ip("192.0.2.1")));
        assert_eq!(throttle.wait(&other).await, None);
        // Off: never blocks.
        let off = Throttle::new(
            Cache::memory(),
            LoginLimits {
                failures: 0,
                per_minute: 1,
            },
            Vec::new(),
        );
        for _ in 0..20 {
            off.failed(&keys).await;
        }
        assert_eq!(off.wait(&keys).await, None);
    }
}
