//! Charging and refunding on the saga's commands. Every charge is keyed by
//! booking: a booking that already has a payment gets its first outcome
//! again and is never charged a second time.
//!
//! The provider is asked first, with no database transaction open (a slow
//! provider then holds no locks and no connection), with an idempotency key
//! per operation; the batch's transaction then records what it said, with
//! the inbox and the answers. A batch that fails after the provider
//! answered asks again on redelivery, with the same keys, and the provider
//! gives the same answer without charging or refunding twice.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use ticketer_bus::{BatchHandler, DeadLetter, Envelope, HandleError};
use ticketer_contract::{
    incoming, Money, PaymentFailed, PaymentFailure, PaymentRefunded, PaymentSettlement, PaymentSucceeded,
    ProcessPayment, RefundPayment,
};
use ticketer_db::{enqueue, is_unique_violation, AnyConnection, Db, DbError, Inbox, Outbound};
use uuid::Uuid;

use crate::{
    provider::{charge_key, refund_key, ChargeOutcome, PaymentProvider},
    store::{self, Payment},
};

incoming!(
    /// What the booking saga asks of the payment service.
    enum PaymentCommand {
        ProcessPayment,
        RefundPayment,
    }
);

/// Provider calls in flight at once for one batch (each for a different
/// booking): a real provider answers in a fraction of a second to a few
/// seconds, so a batch of a hundred charges asked one by one would take
/// minutes.
const PROVIDER_CALLS_AT_ONCE: usize = 32;

/// How long answers that come in together are gathered into one commit.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// What the provider answered for a batch's commands before its
/// transaction opened, by command message id.
#[derive(Default)]
struct Asked {
    charges: HashMap<Uuid, ChargeOutcome>,
    /// The refund's reference.
    refunds: HashMap<Uuid, String>,
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

/// Applies a batch inside its transaction, from what the provider answered.
pub struct PaymentCommands {
    asked: Arc<Mutex<Asked>>,
}

/// Consumes `payment.commands`: the provider first, then the inbox's
/// transaction.
pub struct PaymentConsumer {
    db: Db,
    provider: Arc<dyn PaymentProvider>,
    asked: Arc<Mutex<Asked>>,
    inbox: Inbox<PaymentCommands>,
}

impl PaymentConsumer {
    pub fn new(db: Db, queue: &str, provider: Arc<dyn PaymentProvider>) -> Self {
        let asked = Arc::new(Mutex::new(Asked::default()));
        let commands = PaymentCommands { asked: asked.clone() };
        PaymentConsumer {
            inbox: Inbox::new(db.clone(), queue, commands),
            db,
            provider,
            asked,
        }
    }

    /// What a refund could give back, by booking, from the record: the
    /// charge's reference and amount while it stands; None once it cannot
    /// be refunded (declined, failed, refunded already). Bookings without a
    /// payment are absent.
    async fn on_record(
        &self,
        cmds: &[(Uuid, PaymentCommand)],
    ) -> Result<HashMap<String, Option<(String, Money)>>, HandleError> {
        let bookings: Vec<String> = cmds.iter().map(|(_, c)| c.booking().to_string()).collect();
        let mut conn = self.db.pool().acquire().await.map_err(DbError::from)?;
        Ok(store::by_bookings(&mut conn, &bookings)
            .await?
            .into_iter()
            .map(|p| {
                let standing = (p.status == "SUCCEEDED").then(|| {
                    (
                        p.provider_reference.clone().unwrap_or_default(),
                        Money::from_minor(p.amount_minor),
                    )
                });
                (p.booking_id, standing)
            })
            .collect())
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
        }
        let applied = self.inbox.handle_batch(&part).await;
        // Used or not, these answers go: a retry asks again.
        let mut shared = self.asked.lock().expect("asked lock");
        for id in ids {
            shared.charges.remove(id);
            shared.refunds.remove(id);
        }
        applied
    }

    /// One booking's commands, in order. `on_record`: None when the booking
    /// has no payment yet; Some(what a refund could give back) when it has.
    async fn ask_for_booking(
        &self,
        mut on_record: Option<Option<(String, Money)>>,
        cmds: Vec<(Uuid, &PaymentCommand)>,
    ) -> Result<Asked, HandleError> {
        let mut asked = Asked::default();
        for (message_id, cmd) in cmds {
            match cmd {
                PaymentCommand::ProcessPayment(c) => {
                    if on_record.is_some() {
                        continue;
                    }
                    let outcome = self
                        .provider
                        .charge(charge_key(c.booking_id), c.amount, &c.currency, &c.payment_token)
                        .await;
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
                    let reference = self
                        .provider
                        .refund(refund_key(c.booking_id), &charge, amount)
                        .await
                        .map_err(HandleError::Transient)?;
                    asked.refunds.insert(message_id, reference);
                }
            }
        }
        Ok(asked)
    }
}

#[async_trait::async_trait]
impl BatchHandler for PaymentConsumer {
    /// The provider is asked for different bookings at once (one booking's
    /// commands in order), and each booking's outcome is recorded and
    /// answered as soon as the provider has answered for it: bookings that
    /// answer together commit together, and a slow card holds up only its
    /// own booking, not the batch. A crash between two commits redelivers
    /// the batch; the inbox skips what was committed.
    #[tracing::instrument(skip_all, fields(messages = batch.len()))]
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        // Commands that do not decode are the inbox's to refuse.
        let cmds: Vec<(Uuid, PaymentCommand)> = batch
            .iter()
            .filter_map(|m| Some((m.message_id, m.decode::<PaymentCommand>().ok()??)))
            .collect();
        let mut record = self.on_record(&cmds).await?;
        let mut by_booking: HashMap<String, Vec<(Uuid, &PaymentCommand)>> = HashMap::new();
        for (message_id, cmd) in &cmds {
            by_booking
                .entry(cmd.booking().to_string())
                .or_default()
                .push((*message_id, cmd));
        }
        let mut asking = Vec::with_capacity(by_booking.len());
        for (booking, cmds) in by_booking {
            let ids: Vec<Uuid> = cmds.iter().map(|(id, _)| *id).collect();
            let answer = self.ask_for_booking(record.remove(&booking), cmds);
            asking.push(async move { (ids, answer.await) });
        }
        // The provider calls go on while answers are recorded: both are
        // polled together, the answers handed over through a channel.
        let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let calling = async move {
            let mut calls = futures::stream::iter(asking).buffer_unordered(PROVIDER_CALLS_AT_ONCE);
            while let Some(answer) = calls.next().await {
                if tx.send(answer).is_err() {
                    break;
                }
            }
        };

        // What is ready to record: messages that are no command first.
        let commands: HashSet<Uuid> = cmds.iter().map(|(id, _)| *id).collect();
        let mut ready = Ready {
            ids: batch
                .iter()
                .map(|m| m.message_id)
                .filter(|id| !commands.contains(id))
                .collect(),
            asked: Asked::default(),
        };
        let recording = async {
            while let Some((ids, answer)) = answers.recv().await {
                ready.add(ids, answer?);
                // Whatever else answers within a moment commits with it.
                let until = tokio::time::Instant::now() + GATHER;
                while let Ok(Some((ids, answer))) = tokio::time::timeout_at(until, answers.recv()).await {
                    ready.add(ids, answer?);
                }
                let now = std::mem::take(&mut ready);
                self.apply(batch, &now.ids, now.asked).await?;
            }
            self.apply(batch, &ready.ids, ready.asked).await
        };
        // A failed recording returns its error once every call of the batch
        // has answered (the receiver lives until then, so the calls go on);
        // the retry asks again with the same keys and gets the same answers.
        let ((), recorded) = tokio::join!(calling, recording);
        recorded
    }

    async fn dead_lettered(&self, letter: &DeadLetter) -> Result<(), HandleError> {
        self.inbox.dead_lettered(letter).await
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

/// A command the provider was not asked about (its batch was prepared
/// from an older record): the batch is tried again, and asked again.
fn not_asked(booking: Uuid) -> HandleError {
    HandleError::Transient(format!("the provider was not asked about booking {booking} yet"))
}

/// The answer a stored payment stands for.
fn answer(cause: &Envelope, p: &Payment) -> Result<Outbound, HandleError> {
    let booking_id = Uuid::parse_str(&p.booking_id).map_err(HandleError::transient)?;
    let settled = PaymentSettlement {
        booking_id,
        payment_id: Uuid::parse_str(&p.payment_id).map_err(HandleError::transient)?,
        amount: Money::from_minor(p.amount_minor),
        currency: p.currency.clone(),
        provider_reference: p.provider_reference.clone(),
    };
    let message = match p.status.as_str() {
        "SUCCEEDED" => Outbound::new(&PaymentSucceeded(settled)),
        "REFUNDED" => Outbound::new(&PaymentRefunded(settled)),
        _ => {
            let detail = p.failure_reason.clone().unwrap_or_default();
            let reason = if detail == "processing_error" {
                PaymentFailure::PaymentError
            } else {
                PaymentFailure::PaymentDeclined
            };
            Outbound::new(&PaymentFailed {
                booking_id,
                reason,
                detail,
            })
        }
    };
    Ok(message.caused_by(cause))
}

/// A batch's payments as they stand: those on record for its bookings,
/// then those it makes or refunds, written back together at the end.
struct Ledger {
    payments: HashMap<String, Payment>,
    made: Vec<String>,
    refunded: Vec<String>,
}

impl PaymentCommands {
    async fn charge(
        &self,
        ledger: &mut Ledger,
        msg: &Envelope,
        cmd: ProcessPayment,
    ) -> Result<Outbound, HandleError> {
        let booking = cmd.booking_id.to_string();
        if let Some(existing) = ledger.payments.get(&booking) {
            // Charged already: the same answer again, no second charge.
            return answer(msg, existing);
        }
        let outcome = self
            .asked
            .lock()
            .expect("asked lock")
            .charges
            .remove(&msg.message_id)
            .ok_or_else(|| not_asked(cmd.booking_id))?;
        let (status, failure, reference) = match outcome {
            ChargeOutcome::Succeeded { reference } => ("SUCCEEDED", None, Some(reference)),
            ChargeOutcome::Declined { reason } | ChargeOutcome::Error { reason } => {
                ("FAILED", Some(reason), None)
            }
        };
        let payment = Payment {
            payment_id: Uuid::now_v7().to_string(),
            booking_id: booking.clone(),
            customer_id: cmd.customer_id.to_string(),
            amount_minor: cmd.amount.minor(),
            currency: cmd.currency,
            status: status.into(),
            failure_reason: failure,
            provider_reference: reference,
        };
        tracing::debug!(booking_id = %cmd.booking_id, status, "charged");
        let reply = answer(msg, &payment)?;
        ledger.payments.insert(booking.clone(), payment);
        ledger.made.push(booking);
        Ok(reply)
    }

    async fn refund(
        &self,
        ledger: &mut Ledger,
        msg: &Envelope,
        cmd: RefundPayment,
    ) -> Result<Outbound, HandleError> {
        let booking = cmd.booking_id.to_string();
        let Some(payment) = ledger.payments.get_mut(&booking) else {
            // Nothing was taken: nothing to give back.
            let done = PaymentRefunded(PaymentSettlement {
                booking_id: cmd.booking_id,
                payment_id: Uuid::nil(),
                amount: Money::ZERO,
                currency: "EUR".into(),
                provider_reference: None,
            });
            return Ok(Outbound::new(&done).caused_by(msg));
        };
        match payment.status.as_str() {
            "SUCCEEDED" => {
                self.asked
                    .lock()
                    .expect("asked lock")
                    .refunds
                    .remove(&msg.message_id)
                    .ok_or_else(|| not_asked(cmd.booking_id))?;
                payment.status = "REFUNDED".into();
                if !ledger.made.contains(&booking) {
                    ledger.refunded.push(booking);
                }
                answer(msg, payment)
            }
            "FAILED" => {
                // Nothing was taken: the refund is of nothing.
                let nothing = Payment {
                    amount_minor: 0,
                    status: "REFUNDED".into(),
                    ..payment.clone()
                };
                answer(msg, &nothing)
            }
            _ => answer(msg, payment),
        }
    }
}

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for PaymentCommands {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        self.handle_all(tx, &[msg]).await
    }

    /// A batch's commands with one read of the payments on record for its
    /// bookings, what the provider answered taken per command in delivery
    /// order (a booking charged twice in one batch is charged once), and the
    /// new payments, refunds and answers written in one statement each.
    async fn handle_all(&self, tx: &mut AnyConnection, msgs: &[&Envelope]) -> Result<(), HandleError> {
        let mut cmds = Vec::with_capacity(msgs.len());
        for msg in msgs {
            match msg.decode::<PaymentCommand>()? {
                Some(cmd) => cmds.push((*msg, cmd)),
                None => {
                    return Err(HandleError::Permanent(format!(
                        "the payment service does not handle {}",
                        msg.kind
                    )))
                }
            }
        }
        let bookings: Vec<String> = cmds.iter().map(|(_, c)| c.booking().to_string()).collect();
        let on_record = store::by_bookings(tx, &bookings).await?;
        let mut ledger = Ledger {
            payments: on_record.into_iter().map(|p| (p.booking_id.clone(), p)).collect(),
            made: Vec::new(),
            refunded: Vec::new(),
        };
        let mut replies = Vec::with_capacity(cmds.len());
        for (msg, cmd) in cmds {
            replies.push(match cmd {
                PaymentCommand::ProcessPayment(c) => self.charge(&mut ledger, msg, c).await?,
                PaymentCommand::RefundPayment(c) => self.refund(&mut ledger, msg, c).await?,
            });
        }
        let made: Vec<&Payment> = ledger.made.iter().map(|b| &ledger.payments[b]).collect();
        match store::insert_all(tx, &made).await {
            Ok(()) => {}
            Err(DbError::Sqlx(e)) if is_unique_violation(&e) => {
                return Err(HandleError::Transient(
                    "charged concurrently; will answer from the record".into(),
                ))
            }
            Err(e) => return Err(HandleError::transient(e)),
        }
        store::mark_refunded(tx, &ledger.refunded).await?;
        enqueue(tx, &replies).await.map_err(HandleError::transient)
    }
}

#[cfg(test)]
mod tests;
