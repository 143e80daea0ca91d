//! Requests waiting for their booking to settle (`Prefer: wait`). The
//! saga consumer hands a booking that left PENDING straight to its
//! waiters once the change commits, so a waiting request neither polls
//! nor reads the row again. Other committed changes (a payment deadline)
//! only wake waiters, which then read. A change committed by another
//! replica of the service is not seen here; waiters then notice it on
//! their next look, at most `BOOKING_WAIT_RECHECK_MS` (default
//! [`RECHECK`]) later.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::Booking;

/// How often a waiter looks again when it is not woken, by default.
pub const RECHECK: Duration = Duration::from_millis(250);

/// What the waiters of one booking share.
#[derive(Default)]
pub struct Slot {
    pub notify: Notify,
    /// The booking as committed once it settled, when the change came
    /// from this process's saga consumer.
    settled: Mutex<Option<Booking>>,
}

/// Per booking: its slot, and how many wait on it.
type Registry = HashMap<Uuid, (Arc<Slot>, usize)>;

#[derive(Clone, Default)]
pub struct Waiters {
    waiting: Arc<Mutex<Registry>>,
}

/// A registration; leaving it removes the entry once nobody else waits.
pub struct Waiting {
    waiters: Waiters,
    id: Uuid,
    pub slot: Arc<Slot>,
}

impl Waiting {
    /// The settled booking, if this process committed its settling change.
    pub fn settled(&self) -> Option<Booking> {
        self.slot.settled.lock().expect("slot lock").clone()
    }
}

impl Waiters {
    /// Starts waiting for changes to `id`. Register before reading the
    /// booking (or before committing it), so a change committed in between
    /// is not missed.
    pub fn register(&self, id: Uuid) -> Waiting {
        let mut map = self.waiting.lock().expect("waiters lock");
        let entry = map.entry(id).or_insert_with(|| (Arc::new(Slot::default()), 0));
        entry.1 += 1;
        Waiting {
            waiters: self.clone(),
            id,
            slot: entry.0.clone(),
        }
    }

    fn slot(&self, id: Uuid) -> Option<Arc<Slot>> {
        self.waiting
            .lock()
            .expect("waiters lock")
            .get(&id)
            .map(|(slot, _)| slot.clone())
    }

    /// Whether anyone waits for `id` here.
    pub fn has(&self, id: Uuid) -> bool {
        self.waiting.lock().expect("waiters lock").contains_key(&id)
    }

    /// A change to `id` committed: its waiters read the booking again.
    pub fn wake(&self, id: Uuid) {
        if let Some(slot) = self.slot(id) {
            slot.notify.notify_waiters();
        }
    }

    /// `booking` left PENDING and that change committed: its waiters
    /// answer with it.
    pub fn settle(&self, booking: &Booking) {
        if let Some(slot) = self.slot(booking.booking_id) {
            *slot.settled.lock().expect("slot lock") = Some(booking.clone());
            slot.notify.notify_waiters();
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
        let woken = w.slot.notify.notified();
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
        assert!(Arc::ptr_eq(&a.slot, &b.slot));
        drop(a);
        assert_eq!(waiters.len(), 1);
        drop(b);
        assert_eq!(waiters.len(), 0);
    }

    #[tokio::test]
    async fn a_settled_booking_is_handed_to_its_waiters() {
        let waiters = Waiters::default();
        let (saga, _) = crate::saga::start();
        let booking = Booking {
            booking_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            event_id: 1,
            number_of_tickets: 1,
            payment: crate::store::PaymentSource::Token("tok_visa".into()),
            saga,
            currency: None,
            version: 4,
            created_at: String::new(),
            updated_at: String::new(),
            held_at: None,
        };
        let w = waiters.register(booking.booking_id);
        assert!(waiters.has(booking.booking_id));
        {
            let woken = w.slot.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            assert!(w.settled().is_none());
            waiters.settle(&booking);
            tokio::time::timeout(Duration::from_secs(5), woken)
                .await
                .expect("woken by the settling change");
        }
        assert_eq!(w.settled().map(|b| b.version), Some(4));
        drop(w);
        assert!(!waiters.has(booking.booking_id), "nobody waits any more");
    }
}
