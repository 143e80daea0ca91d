//! Charging and refunding on the saga's commands. Every charge is keyed by
//! booking: a booking that already has a payment gets its first outcome
//! again and is never charged a second time.

use std::{collections::HashMap, sync::Arc};

use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{
    incoming, Money, PaymentFailed, PaymentFailure, PaymentRefunded, PaymentSettlement, PaymentSucceeded,
    ProcessPayment, RefundPayment,
};
use ticketer_db::{enqueue, is_unique_violation, AnyConnection, DbError, Outbound};
use uuid::Uuid;

use crate::{
    provider::{ChargeOutcome, PaymentProvider},
    store::{self, Payment},
};

incoming!(
    /// What the booking saga asks of the payment service.
    enum PaymentCommand {
        ProcessPayment,
        RefundPayment,
    }
);

pub struct PaymentCommands {
    pub provider: Arc<dyn PaymentProvider>,
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
            .provider
            .charge(cmd.booking_id, cmd.amount, &cmd.currency, &cmd.payment_token)
            .await;
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
                let charge = payment.provider_reference.clone().unwrap_or_default();
                self.provider
                    .refund(cmd.booking_id, &charge, Money::from_minor(payment.amount_minor))
                    .await
                    .map_err(HandleError::Transient)?;
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
    /// bookings, the provider called per command in delivery order (a
    /// booking charged twice in one batch is charged once), and the new
    /// payments, refunds and answers written in one statement each.
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
        let bookings: Vec<String> = cmds
            .iter()
            .map(|(_, c)| match c {
                PaymentCommand::ProcessPayment(p) => p.booking_id.to_string(),
                PaymentCommand::RefundPayment(r) => r.booking_id.to_string(),
            })
            .collect();
        let on_record = store::by_bookings(tx, &bookings)
            .await
            .map_err(HandleError::transient)?;
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
        store::mark_refunded(tx, &ledger.refunded)
            .await
            .map_err(HandleError::transient)?;
        enqueue(tx, &replies).await.map_err(HandleError::transient)
    }
}
