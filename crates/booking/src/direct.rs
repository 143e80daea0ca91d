//! The saga's first steps asked for directly. Through the queue, a new
//! booking waits for the outbox relay and the broker three times before it
//! is paid for (HoldTickets to the ticket service, its TicketsHeld to the
//! payment service, the PaymentSucceeded back): in a flash sale, most of a
//! buyer's wait. So a new booking's HoldTickets goes straight to the
//! ticket service over HTTP while the booking's row is being committed,
//! with every other hold ready by then (one request, one transaction
//! there); nothing follows from the answer before that commit is done. The
//! holds that come back carrying their booking's charge go straight on to
//! the payment service the same way; and every answer moves its saga as
//! soon as it comes back.
//!
//! The ticket service's answers are not sent on the bus (`publish=false`):
//! this service passes each on itself. The payment service sends its
//! answers on the bus too, with the same message ids, but routed to the
//! ticket service alone, which sells on them (`topology::ANSWERED`): this
//! service's queue is spared a copy it would only skip. Every answer is
//! applied through the inbox of the queue it would arrive on, and the
//! payment service applies a hold through the inbox of its own queue, so
//! each is applied once, whichever way comes first; a booking's hold and
//! its payment are applied together.
//!
//! A hold asked for a booking the commit then left out (its customer's
//! Idempotency-Key was taken meanwhile, or the commit failed) is given
//! back: a ReleaseTickets through the queue, noted so that holds refused as
//! sold out meanwhile wait for those seats (`store::seats_coming_back`).
//! Should even that fail, or the process die before the commit is done,
//! the ticket service gives the seats back when the hold runs out.
//!
//! The queue stays the way that cannot fail. A hold the ticket service did
//! not answer (the call failed, or it would refuse it as sold out while a
//! release may still be queued) is written to the outbox after all. A hold
//! whose charge the payment service did not answer is sent on the bus here,
//! as the ticket service would have sent it (under a new id when the call
//! failed: the payment service may have charged on it and answered in
//! vain, and answers it anew from its record), and it is recorded only
//! after that: a saga never waits for a payment that nobody will make. A
//! booking whose process died before its answers were applied (or whose
//! answers' transaction failed) is still holding: its saga asks for the
//! hold again at the reply timeout, the ticket service then answers on the
//! bus, and the payment service answers that hold from its record. A hold
//! asked twice is answered with the seats the booking already has, and a
//! booking is charged once however often its hold is heard, so none of
//! this can hold or charge twice.

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
use ticketer_bus::{
    topology::{BOOKING_PAYMENTS, TICKET_OPERATIONS},
    Envelope,
};

use ticketer_config::ServiceToken;
use ticketer_contract::{
    payment::{DIRECT_CHARGES_MAX, DIRECT_CHARGES_PATH},
    ticket::{DIRECT_HOLDS_MAX, DIRECT_HOLDS_PATH},
    HoldTickets, Message, ReleaseTickets, TicketsHeld,
};
use ticketer_db::{enqueue, time, Db, Dialect, Inbox, Outbound};
use ticketer_http::Metrics;
use tokio::sync::watch;
use uuid::Uuid;

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

/// The inbox names the answers are recorded under: those of the queues
/// the same answers would arrive on.
const HOLD_ANSWERS: &str = TICKET_OPERATIONS.name;
const PAYMENT_ANSWERS: &str = BOOKING_PAYMENTS.name;

/// An answer, and the queue it would have come on.
type Answer = (&'static str, Envelope);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `holds` or `charges`.
    call: &'static str,
    /// `answered`: the service answered; `queued`: it did not (the call
    /// failed, or it left the message to the queue), and the message went
    /// or goes through the queue; `given_back` (holds only): held for a
    /// booking its commit did not make, and released.
    outcome: &'static str,
}

/// A handle on the tasks that ask; cheap to clone.
#[derive(Clone)]
pub struct Direct {
    holds: Batcher<(Envelope, Made), ()>,
}

/// The bookings a commit of new bookings made, once it is done (`None`
/// until then).
type Commit = Option<Arc<HashSet<Uuid>>>;

/// Told which bookings of a batch its commit made; dropped untold, none.
pub struct Committing(watch::Sender<Commit>);

impl Committing {
    pub fn made(self, made: &HashSet<Uuid>) {
        // Nobody listening: every hold of the batch was answered already.
        let _ = self.0.send(Some(Arc::new(made.clone())));
    }
}

/// Which bookings a commit made, waited for by their holds.
#[derive(Clone)]
struct Made(watch::Receiver<Commit>);

impl Made {
    /// The bookings made: none when the commit failed or its task ended.
    async fn bookings(mut self) -> Arc<HashSet<Uuid>> {
        match self.0.wait_for(Option::is_some).await {
            Ok(made) => made.clone().unwrap_or_default(),
            Err(_) => Arc::default(),
        }
    }
}

/// The bookings made among those the holds of a batch were asked for.
async fn made_of(commits: Vec<Made>) -> HashSet<Uuid> {
    let mut distinct: Vec<Made> = Vec::new();
    for c in commits {
        if !distinct.iter().any(|d| d.0.same_channel(&c.0)) {
            distinct.push(c);
        }
    }
    let mut made = HashSet::new();
    for c in distinct {
        made.extend(c.bookings().await.iter().copied());
    }
    made
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
    answers: Batcher<Answer, ()>,
    charges: Batcher<Envelope, ()>,
    counted: Family<Outcome, Counter>,
}

struct Charger {
    db: Db,
    payment: Peer,
    /// Applies the ticket service's answers that carried a charge, once
    /// the charge is made or on the bus, with the payment service's.
    answers: Batcher<Answer, ()>,
    counted: Family<Outcome, Counter>,
}

/// Answers applied at most in one transaction, by database. SQLite has
/// one writer, and a transaction applying hundreds of answers keeps the
/// next batch of new bookings (and so their holds) waiting behind it: at
/// 64 a standard sale's holds were made after 16-18 ms at the median
/// instead of 64-73, hold p99 180-212 ms instead of 280-312, for about 5 %
/// of the throughput (1,898-2,034 confirmed/s against 2,075-2,091). On
/// PostgreSQL the two do not wait for each other, and batches that small
/// cost a fifth of the throughput (1,548 against 1,853-2,008).
fn answers_per_commit(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Postgres => 500,
        Dialect::Sqlite => 64,
    }
}

/// A stage: a task running `work` on each batch of at most `per_batch`
/// messages, its askers told only that their batch is done.
fn stage<I, T, F, Fut>(per_batch: usize, worker: Arc<T>, work: F) -> Batcher<I, ()>
where
    I: Send + 'static,
    T: Send + Sync + 'static,
    F: Fn(Arc<T>, Vec<I>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    Batcher::start(per_batch, move |batch: Vec<I>| {
        let n = batch.len();
        let done = work(worker.clone(), batch);
        async move {
            done.await;
            vec![(); n]
        }
    })
}

/// The stage applying both services' answers through `inbox`, a batch per
/// transaction: a booking's hold and its payment, answered together, take
/// one step with one write, and a hold's answer never waits for the lock
/// of a payment's on the same booking.
fn applying(inbox: Inbox<SagaDriver>, dialect: Dialect) -> Batcher<Answer, ()> {
    stage(
        answers_per_commit(dialect),
        Arc::new(inbox),
        move |inbox, answers| async move {
            if let Err(e) = inbox.handle_from(&answers).await {
                tracing::warn!(error = %e, answers = answers.len(), "applying answers asked for directly failed; payments come through the queue, and their sagas ask for holds again at their reply timeouts");
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
        answers: Inbox<SagaDriver>,
        releases_within: Duration,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let counted = Family::<Outcome, Counter>::default();
        metrics.register(
            "ticketer_direct_calls",
            "The saga's first steps asked of the ticket service (holds) and the payment service (charges) directly, by outcome: answered, queued when left to the queue, or given_back when held for a booking that was not made",
            counted.clone(),
        );
        let http = reqwest::Client::builder().timeout(PATIENCE).build()?;
        let peer = |url: &str, path: &str| {
            let endpoint = format!("{}{path}", url.trim_end_matches('/'));
            Peer::new(http.clone(), endpoint, peers.token.clone(), REST)
        };
        // The ticket service's answers exist only here; the payment
        // service's are on the bus too, but for the ticket service.
        let answers = applying(answers, db.dialect());
        let charger = Arc::new(Charger {
            db: db.clone(),
            payment: peer(&peers.payment_url, DIRECT_CHARGES_PATH),
            answers: answers.clone(),
            counted: counted.clone(),
        });
        let charges = stage(DIRECT_CHARGES_MAX, charger, |charger, held| async move {
            charger.charge(held).await
        });
        let holder = Arc::new(Holder {
            db,
            ticket: peer(&peers.ticket_url, DIRECT_HOLDS_PATH),
            releases_within,
            answers,
            charges,
            counted,
        });
        let holds = stage(DIRECT_HOLDS_MAX, holder, |holder, holds| async move {
            holder.hold(holds).await
        });
        Ok(Direct { holds })
    }

    /// Asks for these new bookings' holds (and then their charges) while
    /// their rows are being committed, without waiting for them; the
    /// commit's outcome is told through what this returns.
    pub fn send_before_commit(&self, holds: Vec<Envelope>) -> Committing {
        let (told, made) = watch::channel(None);
        let asked = holds.into_iter().map(|h| (h, Made(made.clone()))).collect();
        ask_later(&self.holds, asked);
        Committing(told)
    }
}

/// Hands `msgs` to a batching task without waiting for their batch.
fn ask_later<I: Send + 'static>(batcher: &Batcher<I, ()>, msgs: Vec<I>) {
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
    async fn hold(&self, asked: Vec<(Envelope, Made)>) {
        let (holds, commits): (Vec<Envelope>, Vec<Made>) = asked.into_iter().unzip();
        let answered = self.ticket.ask(HOLDS_ASKED, &holds).await;
        // Nothing follows for a booking its commit did not make, but the
        // seats it may hold going back.
        let made = made_of(commits).await;
        let is_made = |m: &Envelope| booking_id(m).is_some_and(|b| made.contains(&b));
        let (holds, unmade): (Vec<Envelope>, Vec<Envelope>) = holds.into_iter().partition(is_made);
        let mut answers = match answered {
            Ok(answers) => {
                let (answers, unmade_answers): (Vec<Envelope>, Vec<Envelope>) =
                    answers.into_iter().partition(is_made);
                let held: Vec<Envelope> = unmade_answers
                    .into_iter()
                    .filter(|a| a.kind == TicketsHeld::KIND)
                    .collect();
                self.give_back(&held).await;
                answers
            }
            Err(e) => {
                // Whether the seats were held is unknown: given back
                // anyway (a release of nothing changes nothing).
                self.give_back(&unmade).await;
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
        ask_later(
            &self.answers,
            rest.into_iter().map(|a| (HOLD_ANSWERS, a)).collect(),
        );
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

    /// Gives back the seats held for bookings never made (`held`: their
    /// holds or the answers), noted in the same transaction. If this fails
    /// the seats come back when their hold runs out.
    async fn give_back(&self, held: &[Envelope]) {
        let given: Vec<(Uuid, i64)> = held
            .iter()
            .filter_map(|m| Some((booking_id(m)?, event_of(m)?)))
            .collect();
        if given.is_empty() {
            return;
        }
        let releases: Vec<Outbound> = given
            .iter()
            .map(|(booking_id, event_id)| {
                Outbound::new(&ReleaseTickets {
                    booking_id: *booking_id,
                    event_id: *event_id,
                })
                .correlated(*booking_id)
            })
            .collect();
        let now = chrono::Utc::now();
        let forget = now - chrono::Duration::days(1);
        let given_back = async {
            let mut tx = self.db.begin().await?;
            store::note_given_back(&mut tx, &given, &time::format(now), &time::format(forget)).await?;
            enqueue(&mut tx, &releases).await?;
            tx.commit().await?;
            self.db.outbox_written();
            Ok::<_, ticketer_db::DbError>(())
        };
        match given_back.await {
            Ok(()) => count(&self.counted, "holds", "given_back", given.len()),
            Err(e) => {
                tracing::warn!(error = %e, holds = given.len(), "could not give back the seats held for bookings never made; they come back when their holds run out")
            }
        }
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
            // It may have charged and answered all the same: its answer
            // goes on the bus to the ticket service only, and the holds it
            // applied are skipped by its inbox. Sent anew, they are new to
            // it, and it answers on the bus for everyone: with the outcome
            // of a charge made, or by charging.
            Err(e) => {
                tracing::warn!(error = %e, charges = held.len(), "asking the payment service to charge failed; its queue gets the holds, sent anew");
                (Vec::new(), held.iter().map(anew).collect(), Vec::new())
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
        // Applied together, each hold before its payment (a saga takes
        // them in either order, should a batch split them).
        let answers = record
            .into_iter()
            .map(|h| (HOLD_ANSWERS, h))
            .chain(paid.into_iter().map(|p| (PAYMENT_ANSWERS, p)))
            .collect();
        ask_later(&self.answers, answers);
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

/// `msg` as a new message: the same news under another id.
fn anew(msg: &Envelope) -> Envelope {
    Envelope {
        message_id: Uuid::now_v7(),
        ..msg.clone()
    }
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

fn booking_id(msg: &Envelope) -> Option<Uuid> {
    Uuid::parse_str(booking_of(msg)?).ok()
}

/// A hold that carries its booking's charge, which the payment service
/// charges on.
fn carries_charge(msg: &Envelope) -> bool {
    msg.kind == TicketsHeld::KIND && msg.payload.get("charge").is_some_and(|c| !c.is_null())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ticketer_contract::Money;
    use ticketer_testkit::TestDatabase;

    use super::*;
    use crate::{saga::Timeouts, waiters::Waiters};

    /// A ticket service that holds every seat it is asked for.
    async fn generous_ticket_service() -> String {
        async fn hold(axum::Json(holds): axum::Json<Vec<Envelope>>) -> axum::Json<Vec<Envelope>> {
            let answers = holds
                .iter()
                .map(|h| {
                    let asked: HoldTickets = serde_json::from_value(h.payload.clone()).unwrap();
                    let held = TicketsHeld {
                        booking_id: asked.booking_id,
                        event_id: asked.event_id,
                        ticket_ids: vec![Uuid::now_v7()],
                        amount: Money::from_minor(2000),
                        currency: "EUR".into(),
                        hold_expires_at: chrono::Utc::now() + chrono::Duration::minutes(10),
                        charge: None,
                    };
                    Envelope::new(TicketsHeld::KIND, &held).unwrap()
                })
                .collect();
            axum::Json(answers)
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().route(DIRECT_HOLDS_PATH, axum::routing::post(hold));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// Holds asked for beside a commit that made none of their bookings
    /// (their keys were taken meanwhile): the seats go back through the
    /// queue, and a hold refused as sold out meanwhile knows they are
    /// coming.
    #[tokio::test]
    async fn seats_held_for_bookings_never_made_are_given_back() {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("booking", store::MIGRATIONS).await.unwrap();
        let timeouts = Timeouts::for_tests();
        let waiters = Waiters::default();
        let peers = Peers {
            ticket_url: generous_ticket_service().await,
            payment_url: "http://127.0.0.1:9".into(),
            token: ServiceToken::new("secret"),
        };
        let answers = Inbox::new(db.clone(), "answers", SagaDriver::new(timeouts, waiters.clone()));
        let metrics = Metrics::new("booking");
        let direct = Direct::start(db.clone(), peers, answers, timeouts.reply, &metrics).unwrap();
        let before = ticketer_db::time::now();
        let asked: Vec<Envelope> = (0..3)
            .map(|_| {
                let hold = HoldTickets {
                    booking_id: Uuid::now_v7(),
                    event_id: 7,
                    customer_id: Uuid::now_v7(),
                    quantity: 1,
                    charge: None,
                };
                Envelope::new(HoldTickets::KIND, &hold).unwrap()
            })
            .collect();
        direct.send_before_commit(asked.clone()).made(&HashSet::new());

        let released = || async {
            let rows: Vec<(String,)> = sqlx::query_as("SELECT body FROM outbox")
                .fetch_all(db.reader())
                .await
                .unwrap();
            rows.into_iter()
                .map(|(p,)| serde_json::from_str::<Envelope>(&p).unwrap())
                .filter(|e| e.kind == ReleaseTickets::KIND)
                .filter_map(|e| booking_id(&e))
                .collect::<HashSet<Uuid>>()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while released().await.len() < 3 {
            assert!(Instant::now() < deadline, "the seats were never given back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let asked_for: HashSet<Uuid> = asked.iter().filter_map(booking_id).collect();
        assert_eq!(released().await, asked_for);
        assert!(store::seats_coming_back(&db, 7, &before).await.unwrap());
        assert!(!store::seats_coming_back(&db, 8, &before).await.unwrap());
        // None of them is a booking, and nothing else was sent for them.
        let (bookings,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM bookings")
            .fetch_one(db.reader())
            .await
            .unwrap();
        let (sent,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
            .fetch_one(db.reader())
            .await
            .unwrap();
        assert_eq!((bookings, sent), (0, 3));
        assert!(metrics.render().contains(
            "ticketer_direct_calls_total{service=\"booking\",call=\"holds\",outcome=\"given_back\"} 3"
        ));
    }

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
