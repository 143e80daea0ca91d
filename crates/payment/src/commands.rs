//! Charging and refunding on the saga's commands, and charging on the
//! ticket service's news of a hold that carries its booking's charge (the
//! saga asks for the hold and the payment at once). Every charge is keyed
//! by booking: a booking that already has a payment gets its first outcome
//! again and is never charged a second time.
//!
//! The provider is asked first, with no database transaction open (a slow
//! provider then holds no locks and no connection), with an idempotency key
//! per operation; the batch's transaction then records what it said, with
//! the inbox and the answers. A batch that fails after the provider
//! answered asks again on redelivery, with the same keys, and the provider
//! gives the same answer without charging or refunding twice. A charge the
//! provider has not answered within the consumer's patience is recorded as
//! PROCESSING and finished later ([`processing`]), so the queue never waits
//! for a slow card.

mod cards;
mod claims;
mod ledger;
mod processing;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use ticketer_bus::{BatchHandler, DeadLetter, Envelope, HandleError};
use ticketer_contract::{
    incoming, Message, Money, PaymentFailed, PaymentSucceeded, ProcessPayment, RefundPayment, TicketsHeld,
};
use ticketer_db::{Db, DbError, Inbox};
use tokio::sync::{mpsc, Semaphore};
use uuid::Uuid;

pub use self::processing::Processing;
use self::{
    cards::{charge_with, with_saved_cards},
    claims::Claims,
    ledger::PaymentCommands,
};
use crate::{
    provider::{refund_key, ChargeOutcome, PaymentProvider},
    store,
};

incoming!(
    /// What reaches the payment service: the booking saga's commands, and
    /// the holds it charges on.
    enum PaymentNews {
        ProcessPayment,
        RefundPayment,
        TicketsHeld,
    }
);

/// What the payment service is asked to do.
#[derive(Debug, Clone)]
pub(crate) enum PaymentCommand {
    ProcessPayment(ProcessPayment),
    RefundPayment(RefundPayment),
}

impl PaymentCommand {
    /// What `msg` asks for: None for a hold that carries no charge (asked
    /// by an earlier version, whose saga sends ProcessPayment), an error
    /// for a message the payment service does not take.
    pub(crate) fn of(msg: &Envelope) -> Result<Option<Self>, HandleError> {
        match msg.decode::<PaymentNews>()? {
            Some(PaymentNews::ProcessPayment(c)) => Ok(Some(PaymentCommand::ProcessPayment(c))),
            Some(PaymentNews::RefundPayment(c)) => Ok(Some(PaymentCommand::RefundPayment(c))),
            Some(PaymentNews::TicketsHeld(held)) => Ok(held.payment().map(PaymentCommand::ProcessPayment)),
            None => Err(HandleError::Permanent(format!(
                "the payment service does not handle {}",
                msg.kind
            ))),
        }
    }
}

/// Provider calls in flight at once in the service (each for a different
/// booking): a real provider answers in a fraction of a second to a few
/// seconds, so a batch of a hundred charges asked one by one would take
/// minutes.
const PROVIDER_CALLS_AT_ONCE: usize = 32;

/// How long answers that come in together are gathered into one commit.
const GATHER: Duration = Duration::from_millis(5);

/// How long a batch waits for the provider before the charges it has not
/// answered are recorded as PROCESSING (PAYMENT_PROVIDER_PATIENCE_MS).
pub const PATIENCE: Duration = Duration::from_millis(500);

/// What the provider answered for a batch's commands before its
/// transaction opened, by command message id.
#[derive(Default)]
struct Asked {
    charges: HashMap<Uuid, ChargeOutcome>,
    /// The refund's reference.
    refunds: HashMap<Uuid, String>,
    /// Charges still with the provider: recorded as PROCESSING.
    processing: HashSet<Uuid>,
}

/// Messages whose provider answers are in, not yet recorded.
#[derive(Default)]
struct Ready {
    ids: HashSet<Uuid>,
    asked: Asked,
}

impl Ready {
    fn add(&mut self, ids: Vec<Uuid>, answer: Asked) {
        self.ids.extend(ids);
        self.asked.charges.extend(answer.charges);
        self.asked.refunds.extend(answer.refunds);
    }
}

/// What the provider said for one booking's commands of a batch.
struct Answer {
    booking: Uuid,
    /// The commands' message ids.
    ids: Vec<Uuid>,
    answer: Result<Asked, HandleError>,
}

/// A booking of the batch whose provider calls are out.
struct Waiting {
    ids: Vec<Uuid>,
    /// Charges only, none on record: may be left PROCESSING.
    may_wait_as_processing: bool,
}

/// Consumes `payment.commands`: the provider first, then the inbox's
/// transaction.
pub struct PaymentConsumer {
    db: Db,
    provider: Arc<dyn PaymentProvider>,
    asked: Arc<Mutex<Asked>>,
    inbox: Inbox<PaymentCommands>,
    calls: Arc<Semaphore>,
    processing: Arc<Processing>,
    patience: Duration,
    /// Messages being applied, asked directly or delivered by the queue.
    claims: Claims,
}

impl PaymentConsumer {
    pub fn new(db: Db, queue: &str, provider: Arc<dyn PaymentProvider>) -> Self {
        let asked = Arc::new(Mutex::new(Asked::default()));
        let commands = PaymentCommands { asked: asked.clone() };
        let calls = Arc::new(Semaphore::new(PROVIDER_CALLS_AT_ONCE));
        PaymentConsumer {
            inbox: Inbox::new(db.clone(), queue, commands),
            processing: Arc::new(Processing::new(db.clone(), provider.clone(), calls.clone())),
            db,
            provider,
            asked,
            calls,
            patience: PATIENCE,
            claims: Claims::default(),
        }
    }

    /// Holds' news asked for directly ([`crate::charges`]): applied as if
    /// delivered by the queue, and given back with the charges' outcomes
    /// written, except any the queue is applying right now (its answer goes
    /// on the bus). Those given back go on the bus too, but not to the
    /// asker's queue (see `ticketer_db::answering`).
    pub async fn charge_now(&self, held: &[Envelope]) -> (Result<(), HandleError>, Vec<Envelope>) {
        let (_claim, free) = self.claims.take_free(held);
        if free.is_empty() {
            return (Ok(()), Vec::new());
        }
        let outcomes = &[PaymentSucceeded::KIND, PaymentFailed::KIND];
        ticketer_db::answering(outcomes, self.apply_batch(&free)).await
    }

    /// How long a batch waits for the provider before leaving what it has
    /// not answered as PROCESSING.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Where charges left PROCESSING are finished and swept.
    pub fn processing(&self) -> Arc<Processing> {
        self.processing.clone()
    }

    /// What a refund could give back, by booking, from the record: the
    /// charge's reference and amount while it stands; None once it cannot
    /// be refunded (declined, failed, refunded already, still processing).
    /// Bookings without a payment are absent.
    async fn on_record(
        &self,
        cmds: &[(Uuid, PaymentCommand)],
    ) -> Result<HashMap<Uuid, Option<(String, Money)>>, HandleError> {
        let bookings: Vec<String> = cmds.iter().map(|(_, c)| c.booking().to_string()).collect();
        let mut conn = self.db.pool().acquire().await.map_err(DbError::from)?;
        let mut found = HashMap::new();
        for p in store::by_bookings(&mut conn, &bookings).await? {
            let standing = (p.status == "SUCCEEDED").then(|| {
                (
                    p.provider_reference.clone().unwrap_or_default(),
                    Money::from_minor(p.amount_minor),
                )
            });
            found.insert(Uuid::parse_str(&p.booking_id)?, standing);
        }
        Ok(found)
    }

    /// Records what the provider answered for `ids` (and those messages
    /// only) in one inbox transaction.
    async fn apply(&self, batch: &[Envelope], ids: &HashSet<Uuid>, asked: Asked) -> Result<(), HandleError> {
        if ids.is_empty() {
            return Ok(());
        }
        let part: Vec<Envelope> = batch
            .iter()
            .filter(|m| ids.contains(&m.message_id))
            .cloned()
            .collect();
        {
            let mut shared = self.asked.lock().expect("asked lock");
            shared.charges.extend(asked.charges);
            shared.refunds.extend(asked.refunds);
            shared.processing.extend(asked.processing);
        }
        let applied = self.inbox.handle_batch(&part).await;
        // Used or not, these answers go: a retry asks again.
        let mut shared = self.asked.lock().expect("asked lock");
        for id in ids {
            shared.charges.remove(id);
            shared.refunds.remove(id);
            shared.processing.remove(id);
        }
        applied
    }

    /// Records answers as they come, those that come together in one
    /// commit, until every booking has answered or the patience is spent
    /// with only charges still out; those are recorded as PROCESSING and
    /// left in `waiting`.
    async fn record(
        &self,
        batch: &[Envelope],
        answers: &mut mpsc::UnboundedReceiver<Answer>,
        waiting: &mut HashMap<Uuid, Waiting>,
        mut ready: Ready,
    ) -> Result<(), HandleError> {
        let until = tokio::time::Instant::now() + self.patience;
        while !waiting.is_empty() {
            let next = if waiting.values().all(|w| w.may_wait_as_processing) {
                match tokio::time::timeout_at(until, answers.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            } else {
                answers.recv().await
            };
            let Some(first) = next else { break };
            let mut take = |a: Answer, ready: &mut Ready| -> Result<(), HandleError> {
                waiting.remove(&a.booking);
                ready.add(a.ids, a.answer?);
                Ok(())
            };
            take(first, &mut ready)?;
            // Whatever else answers within a moment commits with it.
            let gathered = tokio::time::Instant::now() + GATHER;
            while let Ok(Some(a)) = tokio::time::timeout_at(gathered, answers.recv()).await {
                take(a, &mut ready)?;
            }
            let now = std::mem::take(&mut ready);
            self.apply(batch, &now.ids, now.asked).await?;
        }
        for w in waiting.values() {
            ready.ids.extend(&w.ids);
            ready.asked.processing.extend(&w.ids);
        }
        self.apply(batch, &ready.ids, ready.asked).await
    }
}

/// One booking's commands, in order. `on_record`: None when the booking
/// has no payment yet; Some(what a refund could give back) when it has.
async fn ask(
    provider: Arc<dyn PaymentProvider>,
    mut on_record: Option<Option<(String, Money)>>,
    cmds: Vec<(Uuid, PaymentCommand)>,
) -> Result<Asked, HandleError> {
    let mut asked = Asked::default();
    for (message_id, cmd) in cmds {
        match cmd {
            PaymentCommand::ProcessPayment(c) => {
                if on_record.is_some() {
                    continue;
                }
                let outcome = charge_with(&*provider, &c).await;
                // A refund later in this batch refunds this charge.
                on_record = Some(match &outcome {
                    ChargeOutcome::Succeeded { reference } => Some((reference.clone(), c.amount)),
                    ChargeOutcome::Declined { .. } | ChargeOutcome::Error { .. } => None,
                });
                asked.charges.insert(message_id, outcome);
            }
            PaymentCommand::RefundPayment(c) => {
                let Some(Some((charge, amount))) = on_record.clone() else {
                    continue;
                };
                // Refunded: nothing more to give back.
                on_record = Some(None);
                let reference = provider
                    .refund(refund_key(c.booking_id), &charge, amount)
                    .await
                    .map_err(HandleError::Transient)?;
                asked.refunds.insert(message_id, reference);
            }
        }
    }
    Ok(asked)
}

#[async_trait::async_trait]
impl BatchHandler for PaymentConsumer {
    /// The provider is asked for different bookings at once (one booking's
    /// commands in order), and each booking's outcome is recorded and
    /// answered as soon as the provider has answered for it: bookings that
    /// answer together commit together, and a slow card holds up only its
    /// own booking, not the batch; once the patience is spent it holds up
    /// nothing (PROCESSING). A crash between two commits redelivers the
    /// batch; the inbox skips what was committed.
    #[tracing::instrument(skip_all, fields(messages = batch.len()))]
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        // After a direct call applying the same messages, if one is.
        let _claim = self.claims.take_all(batch).await;
        self.apply_batch(batch).await
    }

    async fn dead_lettered(&self, letter: &DeadLetter) -> Result<(), HandleError> {
        self.inbox.dead_lettered(letter).await
    }
}

impl PaymentConsumer {
    async fn apply_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        // Commands that do not decode are the inbox's to refuse.
        let mut cmds: Vec<(Uuid, PaymentCommand)> = batch
            .iter()
            .filter_map(|m| Some((m.message_id, PaymentCommand::of(m).ok()??)))
            .collect();
        let charges = cmds.iter_mut().filter_map(|(_, c)| match c {
            PaymentCommand::ProcessPayment(p) => Some(p),
            PaymentCommand::RefundPayment(_) => None,
        });
        with_saved_cards(&self.db, charges.collect(), false).await?;
        let mut record = self.on_record(&cmds).await?;
        let mut by_booking: HashMap<Uuid, Vec<(Uuid, PaymentCommand)>> = HashMap::new();
        for (message_id, cmd) in &cmds {
            by_booking
                .entry(cmd.booking())
                .or_default()
                .push((*message_id, cmd.clone()));
        }
        let (tx, mut answers) = mpsc::unbounded_channel();
        let mut waiting = HashMap::with_capacity(by_booking.len());
        for (booking, cmds) in by_booking {
            let on_record = record.remove(&booking);
            let ids: Vec<Uuid> = cmds.iter().map(|(id, _)| *id).collect();
            let may_wait_as_processing = on_record.is_none()
                && cmds
                    .iter()
                    .all(|(_, c)| matches!(c, PaymentCommand::ProcessPayment(_)));
            waiting.insert(
                booking,
                Waiting {
                    ids: ids.clone(),
                    may_wait_as_processing,
                },
            );
            // Spawned, so that a call can outlive the batch as PROCESSING.
            let (provider, calls, tx) = (self.provider.clone(), self.calls.clone(), tx.clone());
            tokio::spawn(async move {
                let permit = calls.acquire_owned().await;
                let answer = ask(provider, on_record, cmds).await;
                drop(permit);
                // Nobody listens when the batch failed: its retry asks again.
                let _ = tx.send(Answer { booking, ids, answer });
            });
        }
        drop(tx);

        // What is ready to record: messages that are no command first.
        let commands: HashSet<Uuid> = cmds.iter().map(|(id, _)| *id).collect();
        let ready = Ready {
            ids: batch
                .iter()
                .map(|m| m.message_id)
                .filter(|id| !commands.contains(id))
                .collect(),
            asked: Asked::default(),
        };
        match self.record(batch, &mut answers, &mut waiting, ready).await {
            Ok(()) => {
                if !waiting.is_empty() {
                    let left = waiting.into_keys().collect();
                    self.processing.finish_when_answered(left, answers);
                }
                Ok(())
            }
            Err(e) => {
                // The retry asks again with the same keys; it waits for
                // the calls still out so that no key is asked twice at once.
                while answers.recv().await.is_some() {}
                Err(e)
            }
        }
    }
}

impl PaymentCommand {
    fn booking(&self) -> Uuid {
        match self {
            PaymentCommand::ProcessPayment(c) => c.booking_id,
            PaymentCommand::RefundPayment(c) => c.booking_id,
        }
    }
}

#[cfg(test)]
mod tests;
