//! Messages being applied, by id. The same hold's news can reach the
//! payment service twice at once: asked directly by the booking service
//! ([`crate::charges`]) and delivered by the queue. Applied side by side,
//! both would ask the provider (with the same idempotency key, so the card
//! is charged once, but asked twice) before the inbox could tell. So the
//! second comes after the first: a queue's batch waits for it (the inbox
//! then skips what it applied), and a direct call leaves such a message
//! out (its answer goes on the bus).

use std::{collections::HashSet, sync::Mutex};

use ticketer_bus::Envelope;
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Default)]
pub(super) struct Claims {
    held: Mutex<HashSet<Uuid>>,
    released: Notify,
}

/// Messages claimed, given up when dropped.
pub(super) struct Claim<'a> {
    claims: &'a Claims,
    ids: Vec<Uuid>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut held = self.claims.held.lock().expect("claims lock");
        for id in &self.ids {
            held.remove(id);
        }
        drop(held);
        self.claims.released.notify_waiters();
    }
}

impl Claims {
    /// Claims the messages nobody else has, and gives them; the rest are
    /// left out.
    pub(super) fn take_free(&self, batch: &[Envelope]) -> (Claim<'_>, Vec<Envelope>) {
        let mut held = self.held.lock().expect("claims lock");
        let free: Vec<Envelope> = batch
            .iter()
            .filter(|m| held.insert(m.message_id))
            .cloned()
            .collect();
        let ids = free.iter().map(|m| m.message_id).collect();
        (Claim { claims: self, ids }, free)
    }

    /// Waits until nobody else has any of the batch, then claims it all.
    pub(super) async fn take_all(&self, batch: &[Envelope]) -> Claim<'_> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before looking, so a release in between is heard.
            released.as_mut().enable();
            {
                let mut held = self.held.lock().expect("claims lock");
                if batch.iter().all(|m| !held.contains(&m.message_id)) {
                    let ids: Vec<Uuid> = batch.iter().map(|m| m.message_id).collect();
                    held.extend(ids.iter().copied());
                    return Claim { claims: self, ids };
                }
            }
            released.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    fn msg() -> Envelope {
        Envelope::new("TicketsHeld", &1).unwrap()
    }

    #[tokio::test]
    async fn the_second_comer_waits_or_leaves_the_message_out() {
        let claims = Arc::new(Claims::default());
        let (a, b) = (msg(), msg());
        let (first, free) = claims.take_free(std::slice::from_ref(&a));
        assert_eq!(free, vec![a.clone()]);

        // A direct call meeting it leaves it out.
        let (_, free) = claims.take_free(&[a.clone(), b.clone()]);
        assert_eq!(free, vec![b.clone()], "only what nobody holds");

        // A queue's batch waits until it is given up.
        let waiting = {
            let claims = claims.clone();
            let a = a.clone();
            tokio::spawn(async move {
                let _claim = claims.take_all(&[a]).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "waits while the message is claimed");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("claimed once given up")
            .unwrap();
        // Everything was given up in the end.
        let (_, free) = claims.take_free(std::slice::from_ref(&a));
        assert_eq!(free, vec![a]);
    }
}
