//! Charging and refunding on the saga's commands. Every charge is keyed by
//! booking: a booking that already has a payment gets its first outcome
//! again and is never charged a second time.

use std::sync::Arc;

use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{
    incoming, Money, PaymentFailed, PaymentFailure, PaymentRefunded, PaymentSettlement, PaymentSucceeded,
    ProcessPayment, RefundPayment,
};
use ticketer_db::{is_unique_violation, reply, AnyConnection, DbError};
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
async fn announce(tx: &mut AnyConnection, cause: &Envelope, p: &Payment) -> Result<(), HandleError> {
    let booking_id = Uuid::parse_str(&p.booking_id).map_err(HandleError::transient)?;
    let settled = PaymentSettlement {
        booking_id,
        payment_id: Uuid::parse_str(&p.payment_id).map_err(HandleError::transient)?,
        amount: Money::from_minor(p.amount_minor),
        currency: p.currency.clone(),
        provider_reference: p.provider_reference.clone(),
    };
    match p.status.as_str() {
        "SUCCEEDED" => reply(tx, cause, &PaymentSucceeded(settled)).await,
        "REFUNDED" => reply(tx, cause, &PaymentRefunded(settled)).await,
        _ => {
            let detail = p.failure_reason.clone().unwrap_or_default();
            let reason = if detail == "processing_error" {
                PaymentFailure::PaymentError
            } else {
                PaymentFailure::PaymentDeclined
            };
            let failed = PaymentFailed {
                booking_id,
                reason,
                detail,
            };
            reply(tx, cause, &failed).await
        }
    }
}

impl PaymentCommands {
    async fn charge(
        &self,
        tx: &mut AnyConnection,
        msg: &Envelope,
        cmd: ProcessPayment,
    ) -> Result<(), HandleError> {
        let booking = cmd.booking_id.to_string();
        if let Some(existing) = store::by_booking(tx, &booking)
            .await
            .map_err(HandleError::transient)?
        {
            // Charged already: the same answer again, no second charge.
            return announce(tx, msg, &existing).await;
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
            booking_id: booking,
            customer_id: cmd.customer_id.to_string(),
            amount_minor: cmd.amount.minor(),
            currency: cmd.currency,
            status: status.into(),
            failure_reason: failure,
            provider_reference: reference,
        };
        match store::insert(tx, &payment).await {
            Ok(()) => {}
            Err(DbError::Sqlx(e)) if is_unique_violation(&e) => {
                return Err(HandleError::Transient(
                    "charged concurrently; will answer from the record".into(),
                ))
            }
            Err(e) => return Err(HandleError::transient(e)),
        }
        tracing::info!(booking_id = %cmd.booking_id, status, "charge recorded");
        announce(tx, msg, &payment).await
    }

    async fn refund(
        &self,
        tx: &mut AnyConnection,
        msg: &Envelope,
        cmd: RefundPayment,
    ) -> Result<(), HandleError> {
        let booking = cmd.booking_id.to_string();
        let Some(mut payment) = store::by_booking(tx, &booking)
            .await
            .map_err(HandleError::transient)?
        else {
            // Nothing was taken: nothing to give back.
            let done = PaymentRefunded(PaymentSettlement {
                booking_id: cmd.booking_id,
                payment_id: Uuid::nil(),
                amount: Money::ZERO,
                currency: "EUR".into(),
                provider_reference: None,
            });
            return reply(tx, msg, &done).await;
        };
        if payment.status == "SUCCEEDED" {
            let charge = payment.provider_reference.clone().unwrap_or_default();
            self.provider
                .refund(cmd.booking_id, &charge, Money::from_minor(payment.amount_minor))
                .await
                .map_err(HandleError::Transient)?;
            store::mark_refunded(tx, &booking)
                .await
                .map_err(HandleError::transient)?;
            payment.status = "REFUNDED".into();
        } else if payment.status == "FAILED" {
            payment.amount_minor = 0;
            payment.status = "REFUNDED".into();
        }
        announce(tx, msg, &payment).await
    }
}

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for PaymentCommands {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        match msg.decode::<PaymentCommand>()? {
            Some(PaymentCommand::ProcessPayment(cmd)) => self.charge(tx, msg, cmd).await,
            Some(PaymentCommand::RefundPayment(cmd)) => self.refund(tx, msg, cmd).await,
            None => Err(HandleError::Permanent(format!(
                "the payment service does not handle {}",
                msg.kind
            ))),
        }
    }
}
