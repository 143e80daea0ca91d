//! The inbox's side of the payment consumer: a batch's commands applied in
//! one transaction, from what the provider already answered.

use std::sync::{Arc, Mutex};

use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{
    Money, PaymentFailed, PaymentFailure, PaymentRefunded, PaymentSettlement, PaymentSucceeded,
    ProcessPayment, RefundPayment,
};
use ticketer_db::{enqueue, is_unique_violation, AnyConnection, DbError, Outbound};
use uuid::Uuid;

use super::{Asked, PaymentCommand};
use crate::{
    provider::ChargeOutcome,
    store::{self, Payment, PROCESSING},
};

/// Applies a batch inside its transaction, from what the provider answered.
pub struct PaymentCommands {
    pub(super) asked: Arc<Mutex<Asked>>,
}

/// A command the provider was not asked about (its batch was prepared
/// from an older record): the batch is tried again, and asked again.
fn not_asked(booking: Uuid) -> HandleError {
    HandleError::Transient(format!("the provider was not asked about booking {booking} yet"))
}

/// The payment a charge's outcome makes of a PROCESSING one (or of none).
pub(super) fn settled(mut payment: Payment, outcome: ChargeOutcome) -> Payment {
    let (status, failure, reference) = match outcome {
        ChargeOutcome::Succeeded { reference } => ("SUCCEEDED", None, Some(reference)),
        ChargeOutcome::Declined { reason } | ChargeOutcome::Error { reason } => {
            ("FAILED", Some(reason), None)
        }
    };
    payment.status = status.into();
    payment.failure_reason = failure;
    payment.provider_reference = reference;
    payment.pending_command = None;
    payment
}

/// The answer a settled payment stands for.
pub(super) fn answer(cause: &Envelope, p: &Payment) -> Result<Outbound, HandleError> {
    let booking_id = Uuid::parse_str(&p.booking_id)?;
    let settled = PaymentSettlement {
        booking_id,
        payment_id: Uuid::parse_str(&p.payment_id)?,
        customer_id: Some(Uuid::parse_str(&p.customer_id)?),
        amount: Money::from_minor(p.amount_minor),
        currency: p.currency.clone(),
        provider_reference: p.provider_reference.clone(),
    };
    let message = match p.status.as_str() {
        "SUCCEEDED" => Outbound::new(&PaymentSucceeded(settled)),
        "REFUNDED" => Outbound::new(&PaymentRefunded(settled)),
        "FAILED" => {
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
        other => {
            return Err(HandleError::Transient(format!(
                "booking {booking_id}'s payment is {other}: nothing to answer yet"
            )))
        }
    };
    Ok(message.caused_by(cause))
}

/// A batch's payments as they stand: those on record for its bookings,
/// then those it makes or refunds, written back together at the end.
struct Ledger {
    payments: std::collections::HashMap<String, Payment>,
    made: Vec<String>,
    refunded: Vec<String>,
}

impl PaymentCommands {
    /// The answer to a charge; None while the provider has not answered
    /// (the charge is recorded as PROCESSING and answered when it does).
    async fn charge(
        &self,
        ledger: &mut Ledger,
        msg: &Envelope,
        cmd: ProcessPayment,
    ) -> Result<Option<Outbound>, HandleError> {
        let booking = cmd.booking_id.to_string();
        if let Some(existing) = ledger.payments.get(&booking) {
            if existing.status == PROCESSING {
                // Still with the provider: answered when it settles.
                return Ok(None);
            }
            // Charged already: the same answer again, no second charge.
            return answer(msg, existing).map(Some);
        }
        let (outcome, still_asking) = {
            let mut asked = self.asked.lock().expect("asked lock");
            (
                asked.charges.remove(&msg.message_id),
                asked.processing.remove(&msg.message_id),
            )
        };
        let payment = Payment {
            payment_id: Uuid::now_v7().to_string(),
            booking_id: booking.clone(),
            customer_id: cmd.customer_id.to_string(),
            amount_minor: cmd.amount.minor(),
            currency: cmd.currency.clone(),
            status: PROCESSING.into(),
            failure_reason: None,
            provider_reference: None,
            pending_command: Some(String::from_utf8(msg.to_bytes()).expect("JSON is UTF-8")),
        };
        let (payment, reply) = match (outcome, still_asking) {
            (Some(outcome), _) => {
                let payment = settled(payment, outcome);
                let reply = answer(msg, &payment)?;
                (payment, Some(reply))
            }
            (None, true) => (payment, None),
            (None, false) => return Err(not_asked(cmd.booking_id)),
        };
        tracing::debug!(booking_id = %cmd.booking_id, status = %payment.status, "charged");
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
                customer_id: None,
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
            // The saga asks for a refund only after the charge's answer,
            // so this is a redelivery racing the charge: tried again later.
            PROCESSING => Err(HandleError::Transient(format!(
                "booking {booking}'s charge is still with the provider"
            ))),
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
            // A hold without a charge asks nothing of us.
            if let Some(cmd) = PaymentCommand::of(msg)? {
                cmds.push((*msg, cmd));
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
            match cmd {
                PaymentCommand::ProcessPayment(c) => replies.extend(self.charge(&mut ledger, msg, c).await?),
                PaymentCommand::RefundPayment(c) => replies.push(self.refund(&mut ledger, msg, c).await?),
            }
        }
        let made: Vec<&Payment> = ledger.made.iter().map(|b| &ledger.payments[b]).collect();
        match store::insert_all(tx, &made).await {
            Ok(()) => {}
            Err(DbError::Sqlx(e)) if is_unique_violation(&e) => {
                return Err(HandleError::Transient(
                    "charged concurrently; will answer from the record".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
        store::mark_refunded(tx, &ledger.refunded).await?;
        Ok(enqueue(tx, &replies).await?)
    }
}
