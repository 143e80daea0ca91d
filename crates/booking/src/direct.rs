//! The saga's first steps asked for directly. Through the queue, a new
//! booking waits for the outbox relay and the broker three times before it
//! is paid for (HoldTickets to the ticket service, its TicketsHeld to the
//! payment service, the PaymentSucceeded back): in a flash sale, most of a
//! buyer's wait. So once a booking is committed its HoldTickets goes
//! straight to the ticket service over HTTP, with every other hold ready by
//! then (one request, one transaction there); the holds that come back
//! carrying their booking's charge go straight on to the payment service
//! the same way; and every answer moves its saga as soon as it comes back.
//!
//! The ticket service's answers are not sent on the bus (`publish=false`):
//! this service passes each on itself. The payment service sends its
//! answers on the bus as always, with the same message ids. Every answer is
//! applied through the inbox of the queue it would arrive on, and the
//! payment service applies a hold through the inbox of its own queue, so
//! each is applied once, whichever way comes first.
//!
//! The queue stays the way that cannot fail. A hold the ticket service did
//! not answer (the call failed, or it would refuse it as sold out while a
//! release may still be queued) is written to the outbox after all. A hold
//! whose charge the payment service did not answer is sent on the bus here,
//! as the ticket service would have sent it, and it is recorded only after
//! that: a saga never waits for a payment that nobody will make. A booking
//! whose process died between its commit and recording its hold is asked
//! for again by its saga at the reply timeout, and the ticket service then
//! answers on the bus. A hold asked twice is answered with the seats the
//! booking already has, and a booking is charged once however often its
//! hold is heard, so none of this can hold or charge twice.

use std::{
    collections::HashSet,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use ticketer_bus::{BatchHandler, Envelope};

use ticketer_config::ServiceToken;
use ticketer_contract::{
    payment::{DIRECT_CHARGES_MAX, DIRECT_CHARGES_PATH},
    ticket::{DIRECT_HOLDS_MAX, DIRECT_HOLDS_PATH},
    HoldTickets, Message, TicketsHeld,
};
use ticketer_db::{enqueue, Db, Inbox, Outbound};
use ticketer_http::Metrics;

use crate::{batcher::Batcher, driver::SagaDriver, store};

/// How long a service has to answer before its part is left to the queue.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a service that failed a call is left alone (its part going to
/// the queue at once) before it is asked again.
const REST: Duration = Duration::from_secs(2);

/// Where the ticket and payment services are, and the secret they ask for.
#[derive(Debug, Clone)]
pub struct Peers {
    pub ticket_url: String,
    pub payment_url: String,
    pub token: ServiceToken,
}

/// The sagas' two inboxes the answers are applied through: those of the
/// queues the same answers would arrive on.
pub struct Answers {
    /// `ticket.operations`.
    pub holds: Inbox<SagaDriver>,
    /// `booking.payments`.
    pub payments: Inbox<SagaDriver>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `holds` or `charges`.
    call: &'static str,
    /// `answered`: the service answered; `queued`: it did not (the call
    /// failed, or it left the message to the queue), and the message went
    /// or goes through the queue.
    outcome: &'static str,
}

/// A handle on the tasks that ask; cheap to clone.
#[derive(Clone)]
pub struct Direct {
    holds: Batcher<Envelope, ()>,
}

/// One service asked over HTTP.
struct Peer {
    http: reqwest::Client,
    endpoint: String,
    token: ServiceToken,
    /// After a failed call, the service is left alone until then: a
    /// service that hangs would otherwise hold every batch for the whole
    /// patience before the queue takes it.
    resting_until: std::sync::Mutex<Option<Instant>>,
    rest: Duration,
}

impl Peer {
    fn new(http: reqwest::Client, endpoint: String, token: ServiceToken, rest: Duration) -> Self {
        Peer {
            http,
            endpoint,
            token,
            resting_until: std::sync::Mutex::new(None),
            rest,
        }
    }

    /// The messages the service answers `sent` with, asked with `query`.
    async fn ask(&self, query: &[(&str, &str)], sent: &[Envelope]) -> anyhow::Result<Vec<Envelope>> {
        let endpoint = &self.endpoint;
        if let Some(until) = *self.resting_until.lock().expect("rest lock") {
            anyhow::ensure!(Instant::now() >= until, "{endpoint} failed lately; not asked");
        }
        let asked = async {
            let answer = self
                .http
                .post(endpoint)
                .query(query)
                .bearer_auth(self.token.secret())
                .json(sent)
                .send()
                .await?;
            let status = answer.status();
            anyhow::ensure!(status.is_success(), "{endpoint} answered {status}");
            Ok(answer.json().await?)
        };
        let answered = asked.await;
        *self.resting_until.lock().expect("rest lock") = match answered {
            Ok(_) => None,
            Err(_) => Some(Instant::now() + self.rest),
        };
        answered
    }
}

/// How holds are asked for: their answers come back here only, and each is
/// passed on from here.
const HOLDS_ASKED: &[(&str, &str)] = &[("publish", "false")];
/// How holds refused as sold out are asked for again, when no seats can
/// come back: answered too.
const REFUSALS_ASKED: &[(&str, &str)] = &[("publish", "false"), ("answer_sold_out", "true")];

/// Each stage is its own task taking the next batch as soon as it has
/// handed the last one on: asking a service does not wait for this
/// service's commit of the answers before.
struct Holder {
    db: Db,
    ticket: Peer,
    /// How long a release of seats may take to reach the ticket service
    /// (the saga's reply timeout).
    releases_within: Duration,
    /// Applies the ticket service's answers.
    answers: Batcher<Envelope, ()>,
    charges: Batcher<Envelope, ()>,
    counted: Family<Outcome, Counter>,
}

struct Charger {
    db: Db,
    payment: Peer,
    /// Applies the ticket service's answers that carried a charge, once
    /// the charge is made or on the bus.
    holds: Batcher<Envelope, ()>,
    /// Applies the payment service's answers.
    answers: Batcher<Envelope, ()>,
    counted: Family<Outcome, Counter>,
}

/// Answers applied at most in one transaction.
const ANSWERS_PER_COMMIT: usize = 500;

/// A stage: a task running `work` on each batch of at most `per_batch`
/// messages, its askers told only that their batch is done.
fn stage<T, F, Fut>(per_batch: usize, worker: Arc<T>, work: F) -> Batcher<Envelope, ()>
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, Vec<Envelope>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    Batcher::start(per_batch, move |batch: Vec<Envelope>| {
        let n = batch.len();
        let done = work(worker.clone(), batch);
        async move {
            done.await;
            vec![(); n]
        }
    })
}

/// A stage applying answers through `inbox`, a batch per transaction.
/// `then` says what becomes of answers whose transaction failed.
fn applying(inbox: Inbox<SagaDriver>, from: &'static str, then: &'static str) -> Batcher<Envelope, ()> {
    stage(
        ANSWERS_PER_COMMIT,
        Arc::new(inbox),
        move |inbox, answers| async move {
            if let Err(e) = inbox.handle_batch(&answers).await {
                tracing::warn!(error = %e, answers = answers.len(), from, "applying answers asked for directly failed; {then}");
            }
        },
    )
}

fn count(counted: &Family<Outcome, Counter>, call: &'static str, outcome: &'static str, n: usize) {
    if n > 0 {
        counted.get_or_create(&Outcome { call, outcome }).inc_by(n as u64);
    }
}

impl Direct {
    /// Starts asking on the current runtime. A release of seats is taken
    /// to reach the ticket service within `releases_within`.
    pub fn start(
        db: Db,
        peers: Peers,
        answers: Answers,
        releases_within: Duration,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let counted = Family::<Outcome, Counter>::default();
        metrics.register(
            "ticketer_direct_calls",
            "The saga's first steps asked of the ticket service (holds) and the payment service (charges) directly, by outcome: answered, or queued when left to the queue",
            counted.clone(),
        );
        let http = reqwest::Client::builder().timeout(PATIENCE).build()?;
        let peer = |url: &str, path: &str| {
            let endpoint = format!("{}{path}", url.trim_end_matches('/'));
            Peer::new(http.clone(), endpoint, peers.token.clone(), REST)
        };
        // The ticket service's answers exist only here; the payment
        // service's are also on the bus.
        let hold_answers = applying(
            answers.holds,
            "ticket",
            "their sagas ask for the holds again at their reply timeouts",
        );
        let charger = Arc::new(Charger {
            db: db.clone(),
            payment: peer(&peers.payment_url, DIRECT_CHARGES_PATH),
            holds: hold_answers.clone(),
            answers: applying(answers.payments, "payment", "they come through the queue"),
            counted: counted.clone(),
        });
        let charges = stage(DIRECT_CHARGES_MAX, charger, |charger, held| async move {
            charger.charge(held).await
        });
        let holder = Arc::new(Holder {
            db,
            ticket: peer(&peers.ticket_url, DIRECT_HOLDS_PATH),
            releases_within,
            answers: hold_answers,
            charges,
            counted,
        });
        let holds = stage(DIRECT_HOLDS_MAX, holder, |holder, holds| async move {
            holder.hold(holds).await
        });
        Ok(Direct { holds })
    }

    /// Asks for these committed bookings' holds (and then their charges),
    /// without waiting for them.
    pub fn send(&self, holds: Vec<Envelope>) {
        ask_later(&self.holds, holds);
    }
}

/// Hands `msgs` to a batching task without waiting for their batch.
fn ask_later(batcher: &Batcher<Envelope, ()>, msgs: Vec<Envelope>) {
    let batcher = batcher.clone();
    if msgs.is_empty() {
        return;
    }
    tokio::spawn(async move {
        if batcher.ask_all(msgs).await.is_err() {
            // Shutting down: the queue and the sagas' timeouts see to it.
            tracing::debug!("direct calls stopped; left to the queue");
        }
    });
}

impl Holder {
    async fn hold(&self, holds: Vec<Envelope>) {
        let mut answers = match self.ticket.ask(HOLDS_ASKED, &holds).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(error = %e, holds = holds.len(), "asking the ticket service for holds failed; sending them through the queue");
                count(&self.counted, "holds", "queued", holds.len());
                self.through_the_queue(&holds).await;
                return;
            }
        };
        // Left unanswered: refused as sold out. Unless seats of the event
        // may be on their way back, that is the answer.
        let (mut done, unanswered) = answered_by(holds, &answers);
        let (settled, mut left) = self.sold_out_for_good(unanswered).await;
        if !settled.is_empty() {
            match self.ticket.ask(REFUSALS_ASKED, &settled).await {
                Ok(more) => {
                    let (also, not) = answered_by(settled, &more);
                    done.extend(also);
                    left.extend(not);
                    answers.extend(more);
                }
                Err(e) => {
                    tracing::warn!(error = %e, holds = settled.len(), "asking the ticket service for holds failed; sending them through the queue");
                    left.extend(settled);
                }
            }
        }
        // A hold carrying a charge is recorded once the payment service
        // has it (see `Charger::charge`); the rest (refusals, holds paid
        // for otherwise) at once.
        let (held, rest): (Vec<Envelope>, Vec<Envelope>) = answers.into_iter().partition(carries_charge);
        ask_later(&self.charges, held);
        count(&self.counted, "holds", "answered", done.len());
        ask_later(&self.answers, rest);
        // What is still unanswered (a hold refused as sold out, which a
        // release still in the queue may yet undo, or one whose call
        // failed) goes through the queue, behind that release.
        if !left.is_empty() {
            count(&self.counted, "holds", "queued", left.len());
            self.through_the_queue(&left).await;
        }
    }

    /// `holds` split into those whose events have no seats on their way
    /// back (no booking that held some has failed or been cancelled within
    /// the time its release may take) and the rest. (Only asked for holds
    /// refused as sold out, at the end of a sale.)
    async fn sold_out_for_good(&self, holds: Vec<Envelope>) -> (Vec<Envelope>, Vec<Envelope>) {
        let since = chrono::Utc::now() - chrono::Duration::from_std(self.releases_within).unwrap_or_default();
        let since = ticketer_db::time::format(since);
        let mut events: Vec<i64> = holds.iter().filter_map(event_of).collect();
        events.sort_unstable();
        events.dedup();
        let mut settled = HashSet::new();
        for event in events {
            match store::seats_coming_back(&self.db, event, &since).await {
                Ok(false) => {
                    settled.insert(event);
                }
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!(error = %e, event, "could not tell whether seats are coming back; the holds go through the queue")
                }
            }
        }
        holds
            .into_iter()
            .partition(|h| event_of(h).is_some_and(|e| settled.contains(&e)))
    }

    /// The holds as messages, as if they had never been asked for directly.
    /// If even this fails, each saga asks again at its reply timeout.
    async fn through_the_queue(&self, holds: &[Envelope]) {
        if let Err(e) = on_the_bus(&self.db, HoldTickets::EXCHANGE, holds).await {
            tracing::warn!(error = %e, holds = holds.len(), "could not queue the holds; their sagas will ask again");
        }
    }
}

impl Charger {
    /// Charges on the holds' news, then records the holds. The news of a
    /// charge the payment service did not answer (the call failed, or the
    /// charge is still with the card's provider) goes on the bus first, as
    /// the ticket service would have sent it: the payment service charges
    /// on it from its queue, or finds it already applied. Only then is the
    /// hold recorded, so a saga waiting for its payment always has one
    /// coming, even if this process dies in between.
    async fn charge(&self, held: Vec<Envelope>) {
        let (charged, unanswered, paid) = match self.payment.ask(&[], &held).await {
            Ok(answers) => {
                let (charged, unanswered) = answered_by(held, &answers);
                (charged, unanswered, answers)
            }
            Err(e) => {
                tracing::warn!(error = %e, charges = held.len(), "asking the payment service to charge failed; its queue gets the holds");
                (Vec::new(), held, Vec::new())
            }
        };
        count(&self.counted, "charges", "answered", charged.len());
        count(&self.counted, "charges", "queued", unanswered.len());
        let mut record = charged;
        if !unanswered.is_empty() {
            match on_the_bus(&self.db, TicketsHeld::EXCHANGE, &unanswered).await {
                Ok(()) => record.extend(unanswered),
                // Unrecorded, each saga asks for its hold again at its
                // reply timeout, and that answer travels on the bus.
                Err(e) => {
                    tracing::warn!(error = %e, holds = unanswered.len(), "could not send holds on to the payment service's queue; their sagas will ask again")
                }
            }
        }
        // Both are applied at once, each by its own task: a saga takes its
        // hold and its payment in either order.
        ask_later(&self.holds, record);
        ask_later(&self.answers, paid);
    }
}

/// Writes `msgs` to the outbox as they are (same ids), for `exchange`.
async fn on_the_bus(db: &Db, exchange: &'static str, msgs: &[Envelope]) -> Result<(), ticketer_db::DbError> {
    let messages: Vec<Outbound> = msgs.iter().map(|m| Outbound::raw(exchange, m.clone())).collect();
    let mut tx = db.begin().await?;
    enqueue(&mut tx, &messages).await?;
    tx.commit().await?;
    db.outbox_written();
    Ok(())
}

/// `holds` split into those `answers` answer and the rest.
fn answered_by(holds: Vec<Envelope>, answers: &[Envelope]) -> (Vec<Envelope>, Vec<Envelope>) {
    let answered: HashSet<&str> = answers.iter().filter_map(booking_of).collect();
    holds
        .into_iter()
        .partition(|h| booking_of(h).is_some_and(|b| answered.contains(b)))
}

/// The event a hold is for.
fn event_of(msg: &Envelope) -> Option<i64> {
    msg.payload.get("event_id")?.as_i64()
}

/// The booking a message is about.
fn booking_of(msg: &Envelope) -> Option<&str> {
    msg.payload.get("booking_id")?.as_str()
}

/// A hold that carries its booking's charge, which the payment service
/// charges on.
fn carries_charge(msg: &Envelope) -> bool {
    msg.kind == TicketsHeld::KIND && msg.payload.get("charge").is_some_and(|c| !c.is_null())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A service that takes connections and never answers: asked once, it
    /// costs the patience; asked again while resting, nothing.
    #[tokio::test]
    async fn a_service_that_hangs_is_left_alone_for_a_while() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let peer = Peer::new(
            http,
            format!("http://127.0.0.1:{port}/internal/v1/holds"),
            ServiceToken::new("secret"),
            Duration::from_secs(60),
        );
        let hold = Envelope::new("HoldTickets", &1).unwrap();
        assert!(peer.ask(&[], std::slice::from_ref(&hold)).await.is_err());
        assert_eq!(connections.load(Ordering::SeqCst), 1);
        for _ in 0..5 {
            let e = peer.ask(&[], std::slice::from_ref(&hold)).await.unwrap_err();
            assert!(e.to_string().contains("not asked"), "{e}");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1, "left alone while resting");
    }
}
