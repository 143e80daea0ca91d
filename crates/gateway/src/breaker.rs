//! One circuit breaker per upstream service. A service that cannot be
//! reached, or does not answer in time, several times in a row is not
//! asked again for a moment: callers get 503 with Retry-After at once
//! instead of each holding a connection until the upstream timeout (a
//! hung service would otherwise collect every client's request for 35 s).
//! After the pause one request at a time is let through to try it; a
//! success closes the breaker, a failure opens it again.

use std::time::{Duration, Instant};

/// Failures in a row that open the breaker.
pub const TRIP_AFTER: u32 = 5;
/// How long it stays open before a request may try the service again.
pub const OPEN_FOR: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// A trial request is out (half-open): others wait for its outcome.
    trying: bool,
}

impl Breaker {
    /// May a request go to the service now? Err(how long to wait) if not.
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(until - now),
            Some(_) if self.trying => Err(OPEN_FOR),
            Some(_) => {
                self.trying = true;
                Ok(())
            }
        }
    }

    /// What became of an admitted request: `reached` is false when the
    /// service could not be connected to or did not answer in time.
    pub fn record(&mut self, reached: bool, now: Instant) {
        self.trying = false;
        if reached {
            self.failures = 0;
            self.open_until = None;
            return;
        }
        self.failures += 1;
        if self.failures >= TRIP_AFTER || self.open_until.is_some() {
            self.open_until = Some(now + OPEN_FOR);
        }
    }

    pub fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_closed_through_scattered_failures() {
        let mut b = Breaker::default();
        let now = Instant::now();
        for _ in 0..10 {
            for _ in 0..TRIP_AFTER - 1 {
                assert!(b.admit(now).is_ok());
                b.record(false, now);
            }
            assert!(b.admit(now).is_ok());
            b.record(true, now);
        }
        assert!(!b.is_open(now));
    }

    #[test]
    fn opens_after_failures_in_a_row_and_refuses_until_the_pause_ends() {
        let mut b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..TRIP_AFTER {
            assert!(b.admit(t0).is_ok());
            b.record(false, t0);
        }
        assert!(b.is_open(t0));
        let wait = b.admit(t0 + Duration::from_millis(500)).unwrap_err();
        assert_eq!(wait, OPEN_FOR - Duration::from_millis(500));
    }

    #[test]
    fn after_the_pause_one_trial_decides() {
        let t0 = Instant::now();
        let open = || {
            let mut b = Breaker::default();
            for _ in 0..TRIP_AFTER {
                b.record(false, t0);
            }
            b
        };
        let later = t0 + OPEN_FOR;

        // The trial succeeds: closed, everyone admitted again.
        let mut b = open();
        assert!(b.admit(later).is_ok());
        assert!(b.admit(later).is_err(), "one trial at a time");
        b.record(true, later);
        assert!(b.admit(later).is_ok());
        assert!(b.admit(later).is_ok());

        // The trial fails: open again for a whole pause, at once.
        let mut b = open();
        assert!(b.admit(later).is_ok());
        b.record(false, later);
        assert!(b.is_open(later));
        assert_eq!(b.admit(later).unwrap_err(), OPEN_FOR);
    }
}
