//! New bookings, committed together. Every accepted booking request
//! inserts its row and its first messages; one transaction each, a flash
//! sale pays a commit (and a disk flush) per booking. Through a
//! [`Batcher`], the bookings that arrive while a commit runs share the next
//! one: one statement for the rows, one for the messages, one commit. A
//! booking whose Idempotency-Key its customer already used is left out of
//! the batch, not allowed to fail it.

use std::collections::HashSet;

use ticketer_bus::Envelope;
use ticketer_db::{enqueue, Db, DbError, Outbound};
use uuid::Uuid;

use crate::{
    batcher::Batcher,
    direct::Direct,
    driver::deadline,
    saga::Timeouts,
    store::{self, Booking, RequestKey},
};

/// Bookings committed together at most.
const PER_COMMIT: usize = 128;

/// A booking to make, with the key it was asked with and its first messages.
pub struct ToMake {
    pub booking: Booking,
    pub key: Option<RequestKey>,
    pub messages: Vec<Outbound>,
    /// Its HoldTickets, when asked for directly as the booking is
    /// committed instead of sent with `messages`.
    pub hold: Option<Envelope>,
}

/// What became of one booking of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Committed,
    /// Its customer already made a booking with this Idempotency-Key.
    KeyTaken,
}

pub type Creations = Batcher<ToMake, Result<Made, String>>;

/// Starts committing new bookings in batches. The holds of a batch are
/// asked for through `direct` as its commit starts, by this task: a
/// customer's request that ends meanwhile cannot leave one unasked, and
/// what follows each hold waits for the commit's outcome.
pub fn start(db: Db, timeouts: Timeouts, direct: Option<Direct>) -> Creations {
    Batcher::start(PER_COMMIT, move |mut new: Vec<ToMake>| {
        let db = db.clone();
        let direct = direct.clone();
        async move {
            let ids: Vec<Uuid> = new.iter().map(|n| n.booking.booking_id).collect();
            let holds = holds_to_ask(&db, &mut new).await;
            let committing = match &direct {
                Some(direct) if !holds.is_empty() => Some(direct.send_before_commit(holds)),
                _ => None,
            };
            match commit(&db, new, timeouts).await {
                Ok(made) => {
                    if let Some(committing) = committing {
                        committing.made(&made);
                    }
                    ids.iter()
                        .map(|id| {
                            Ok(if made.contains(id) {
                                Made::Committed
                            } else {
                                Made::KeyTaken
                            })
                        })
                        .collect()
                }
                // `committing` dropped untold: none was made.
                Err(e) => ids.iter().map(|_| Err(e.to_string())).collect(),
            }
        }
    })
}

/// The holds worth asking for before the commit: not those of bookings
/// whose Idempotency-Key is taken already (a request sent again after its
/// booking was made) or by an earlier booking of the batch, which the
/// commit leaves out; their seats would be held only to be given back, and
/// meanwhile refused to others. If the look-up fails, every hold: the
/// commit's outcome decides what follows each anyway. (A key freed between
/// the look-up and the commit leaves a booking made without its hold asked
/// for; its saga asks at its reply timeout.)
async fn holds_to_ask(db: &Db, new: &mut [ToMake]) -> Vec<Envelope> {
    let keyed: Vec<(Uuid, String)> = new
        .iter()
        .filter_map(|n| Some((n.booking.customer_id, n.key.as_ref()?.key.clone())))
        .collect();
    let mut taken: HashSet<(Uuid, String)> = match store::by_keys(db, &keyed).await {
        Ok(found) => found
            .into_iter()
            .map(|(b, key, _)| (b.customer_id, key))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not look up the batch's Idempotency-Keys; asking for every hold");
            HashSet::new()
        }
    };
    new.iter_mut()
        .filter_map(|n| {
            let hold = n.hold.take()?;
            match &n.key {
                Some(k) if !taken.insert((n.booking.customer_id, k.key.clone())) => None,
                _ => Some(hold),
            }
        })
        .collect()
}

async fn commit(db: &Db, new: Vec<ToMake>, timeouts: Timeouts) -> Result<HashSet<Uuid>, DbError> {
    let mut tx = db.begin().await?;
    let rows: Vec<(&Booking, Option<&RequestKey>)> =
        new.iter().map(|n| (&n.booking, n.key.as_ref())).collect();
    // Each waits for its seats from now on, as every waiting stage does.
    let until: Vec<Option<String>> = rows
        .iter()
        .map(|(b, _)| deadline(b.saga.stage, timeouts))
        .collect();
    let made: HashSet<Uuid> = store::insert_all(&mut tx, &rows, &until)
        .await?
        .into_iter()
        .collect();
    let messages: Vec<Outbound> = new
        .into_iter()
        .filter(|n| made.contains(&n.booking.booking_id))
        .flat_map(|n| n.messages)
        .collect();
    enqueue(&mut tx, &messages).await?;
    tx.commit().await?;
    db.outbox_written();
    Ok(made)
}

#[cfg(test)]
mod tests {
    use ticketer_contract::HoldTickets;
    use ticketer_testkit::TestDatabase;

    use super::*;
    use crate::saga;

    fn to_make(customer: Uuid, key: &str) -> ToMake {
        let booking = Booking::new(
            customer,
            1,
            1,
            crate::store::PaymentSource::Token("tok_visa".into()),
            saga::start().0,
        );
        let hold = HoldTickets {
            booking_id: booking.booking_id,
            event_id: 1,
            customer_id: customer,
            quantity: 1,
            charge: None,
        };
        ToMake {
            messages: vec![Outbound::new(&hold)],
            hold: None,
            key: Some(RequestKey {
                key: key.into(),
                request_hash: "h".into(),
            }),
            booking,
        }
    }

    async fn made_together(postgres: bool) {
        let tdb = if postgres {
            let Some(url) = ticketer_testkit::postgres_url() else {
                return;
            };
            TestDatabase::postgres(&url, "creations").await.unwrap()
        } else {
            TestDatabase::sqlite()
        };
        let db = tdb.connect().await.unwrap();
        db.migrate("booking", store::MIGRATIONS).await.unwrap();
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let earlier = to_make(alice, "k1");
        let earlier_id = earlier.booking.booking_id;
        let timeouts = Timeouts {
            payment: std::time::Duration::from_secs(60),
            reply: std::time::Duration::from_secs(30),
        };
        assert_eq!(
            commit(&db, vec![earlier], timeouts).await.unwrap(),
            HashSet::from([earlier_id])
        );

        // One batch: a new booking, a retry of alice's (key taken), two
        // of bob's with the same key (the first wins), bob under another key.
        let batch = vec![
            to_make(alice, "k2"),
            to_make(alice, "k1"),
            to_make(bob, "k1"),
            to_make(bob, "k1"),
            to_make(bob, "k2"),
        ];
        let ids: Vec<Uuid> = batch.iter().map(|n| n.booking.booking_id).collect();
        let made = commit(&db, batch, timeouts).await.unwrap();
        let outcome: Vec<bool> = ids.iter().map(|id| made.contains(id)).collect();
        assert_eq!(outcome, [true, false, true, false, true]);
        // Only the bookings made sent their messages.
        let (sent,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
            .fetch_one(db.reader())
            .await
            .unwrap();
        assert_eq!(sent, 4);
    }

    /// Holds are asked for before the commit only for bookings it can
    /// make: none for a key taken earlier, one for a key twice in a batch.
    #[tokio::test]
    async fn no_hold_is_asked_for_a_taken_key() {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("booking", store::MIGRATIONS).await.unwrap();
        let timeouts = Timeouts {
            payment: std::time::Duration::from_secs(60),
            reply: std::time::Duration::from_secs(30),
        };
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        commit(&db, vec![to_make(alice, "k1")], timeouts).await.unwrap();
        let with_hold = |mut n: ToMake| {
            n.hold = n.messages[0].envelope().cloned();
            n
        };
        let mut unkeyed = with_hold(to_make(bob, "none"));
        unkeyed.key = None;
        let mut batch = vec![
            with_hold(to_make(alice, "k1")),
            with_hold(to_make(alice, "k2")),
            with_hold(to_make(bob, "k1")),
            with_hold(to_make(bob, "k1")),
            unkeyed,
        ];
        let ids: Vec<Uuid> = batch.iter().map(|n| n.booking.booking_id).collect();
        let asked: Vec<Uuid> = holds_to_ask(&db, &mut batch)
            .await
            .iter()
            .map(|h| Uuid::parse_str(h.payload["booking_id"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(asked, [ids[1], ids[2], ids[4]]);
        // What the commit then makes is what was asked for.
        let made = commit(&db, batch, timeouts).await.unwrap();
        assert_eq!(made, asked.into_iter().collect());
    }

    #[tokio::test]
    async fn sqlite_bookings_made_together_skip_a_taken_key() {
        made_together(false).await;
    }

    #[tokio::test]
    #[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
    async fn postgres_bookings_made_together_skip_a_taken_key() {
        made_together(true).await;
    }
}
