//! Requests waiting for their booking to settle (`Prefer: wait`), woken
//! when a change to that booking commits instead of each polling the
//! database. A change committed by another replica of the service is not
//! seen here; waiters then notice it on their next look, at most
//! `BOOKING_WAIT_RECHECK_MS` (default [`RECHECK`]) later.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;
use uuid::Uuid;

/// How often a waiter looks again when it is not woken, by default.
pub const RECHECK: Duration = Duration::from_millis(250);

/// Per booking: what its waiters wait on, and how many there are.
type Registry = HashMap<Uuid, (Arc<Notify>, usize)>;

#[derive(Clone, Default)]
pub struct Waiters {
    waiting: Arc<Mutex<Registry>>,
}

/// A registration; leaving it removes the entry once nobody else waits.
pub struct Waiting {
    waiters: Waiters,
    id: Uuid,
    pub notify: Arc<Notify>,
}

impl Waiters {
    /// Starts waiting for changes to `id`. Register before reading the
    /// booking, so a change committed in between is not missed.
    pub fn register(&self, id: Uuid) -> Waiting {
        let mut map = self.waiting.lock().expect("waiters lock");
        let entry = map.entry(id).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Waiting {
            waiters: self.clone(),
            id,
            notify: entry.0.clone(),
        }
    }

    /// A change to `id` committed.
    pub fn wake(&self, id: Uuid) {
        if let Some((notify, _)) = self.waiting.lock().expect("waiters lock").get(&id) {
            notify.notify_waiters();
        }
    }

    /// Bookings someone waits for right now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().expect("waiters lock").len()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut map = self.waiters.waiting.lock().expect("waiters lock");
        if let Some(entry) = map.get_mut(&self.id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_is_woken_by_its_booking_only() {
        let waiters = Waiters::default();
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let w = waiters.register(mine);
        let woken = w.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        waiters.wake(other);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), woken.as_mut())
                .await
                .is_err(),
            "another booking's change does not wake it"
        );
        waiters.wake(mine);
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("woken by its own booking");
    }

    #[test]
    fn entries_go_when_the_last_waiter_leaves() {
        let waiters = Waiters::default();
        let id = Uuid::now_v7();
        let a = waiters.register(id);
        let b = waiters.register(id);
        assert!(Arc::ptr_eq(&a.notify, &b.notify));
        drop(a);
        assert_eq!(waiters.len(), 1);
        drop(b);
        assert_eq!(waiters.len(), 0);
    }
}
