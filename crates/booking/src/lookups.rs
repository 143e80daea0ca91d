//! Idempotency-Key look-ups, coalesced. Most requests of a flash sale are
//! refused as sold out, and each refusal must first check that the same
//! request was not accepted earlier (a retry gets its booking). Asked one
//! by one, that is a database round trip per refusal; here whoever asks
//! while a look-up runs joins the next one, so a burst of refusals costs a
//! few statements. Nothing waits on purpose: a lone request is looked up at
//! once.

use std::collections::HashMap;

use ticketer_db::Db;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::store::{self, Booking};

/// Look-ups taken into one statement at most.
const PER_STATEMENT: usize = 256;
/// Requests queued for a look-up at most; more wait to be queued.
const QUEUED: usize = 4096;

type Answer = Result<Option<(Booking, String)>, String>;

struct Ask {
    customer: Uuid,
    key: String,
    answer: oneshot::Sender<Answer>,
}

/// A handle on the look-up task; cheap to clone. The task ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct KeyLookups {
    asks: mpsc::Sender<Ask>,
}

impl KeyLookups {
    /// Starts the look-up task on the current runtime.
    pub fn start(db: Db) -> Self {
        let (asks, queue) = mpsc::channel(QUEUED);
        tokio::spawn(serve(db, queue));
        KeyLookups { asks }
    }

    /// The booking `customer` made with Idempotency-Key `key`, and the
    /// digest of the request that made it.
    pub async fn find(&self, customer: Uuid, key: &str) -> Answer {
        let (answer, answered) = oneshot::channel();
        let ask = Ask {
            customer,
            key: key.to_string(),
            answer,
        };
        self.asks
            .send(ask)
            .await
            .map_err(|_| "the key look-up task has stopped".to_string())?;
        answered
            .await
            .map_err(|_| "the key look-up task has stopped".to_string())?
    }
}

async fn serve(db: Db, mut queue: mpsc::Receiver<Ask>) {
    let mut batch = Vec::with_capacity(PER_STATEMENT);
    while queue.recv_many(&mut batch, PER_STATEMENT).await > 0 {
        let keys: Vec<(Uuid, String)> = batch.iter().map(|a| (a.customer, a.key.clone())).collect();
        match store::by_keys(&db, &keys).await {
            Ok(found) => {
                let mut found: HashMap<(Uuid, String), (Booking, String)> = found
                    .into_iter()
                    .map(|(b, key, hash)| ((b.customer_id, key), (b, hash)))
                    .collect();
                for ask in batch.drain(..) {
                    let hit = found.remove(&(ask.customer, ask.key));
                    let _ = ask.answer.send(Ok(hit));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for ask in batch.drain(..) {
                    let _ = ask.answer.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ticketer_db::testing::TestDatabase;

    use super::*;
    use crate::{
        saga,
        store::{insert, RequestKey},
    };

    #[tokio::test]
    async fn many_look_ups_at_once_each_get_their_own_answer() {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("booking", store::MIGRATIONS).await.unwrap();
        let customers: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        let mut tx = db.begin().await.unwrap();
        // Every even customer booked with key "k"; every customer's key
        // "other" was never used.
        for (n, c) in customers.iter().enumerate().filter(|(n, _)| n % 2 == 0) {
            let b = Booking::new(*c, 1, 1, "tok_visa".into(), saga::start().0);
            let key = RequestKey {
                key: "k".into(),
                request_hash: format!("hash-{n}"),
            };
            insert(&mut tx, &b, Some(&key)).await.unwrap();
        }
        tx.commit().await.unwrap();

        let lookups = KeyLookups::start(db.clone());
        let mut asked = Vec::new();
        for (n, c) in customers.iter().enumerate() {
            for key in ["k", "other"] {
                let (lookups, c) = (lookups.clone(), *c);
                asked.push(tokio::spawn(async move { (n, key, lookups.find(c, key).await) }));
            }
        }
        for a in asked {
            let (n, key, answer) = a.await.unwrap();
            match answer.unwrap() {
                Some((b, hash)) => {
                    assert_eq!((n % 2, key), (0, "k"));
                    assert_eq!(b.customer_id, customers[n]);
                    assert_eq!(hash, format!("hash-{n}"));
                }
                None => assert!(n % 2 == 1 || key == "other"),
            }
        }
    }
}
