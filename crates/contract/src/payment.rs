//! The payment service's answers to the booking saga, and the payment
//! tokens the built-in sandbox knows (CONTRACT.md, Payments).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Money;

/// Where the booking service asks the payment service to charge for holds
/// directly, beside the queue: `POST`, a JSON array of at most
/// [`DIRECT_CHARGES_MAX`] `TicketsHeld` envelopes (as the ticket service
/// answered them), with `Authorization: Bearer <SERVICE_TOKEN>`. They are
/// applied as if they had come on `payment.commands`, where the same
/// messages arrive later and are then skipped; the answer is the array of
/// `PaymentSucceeded` / `PaymentFailed` envelopes also sent on the bus
/// (none for a charge the provider has not answered yet, or one charged
/// before). Between services only: the gateway does not route it.
pub const DIRECT_CHARGES_PATH: &str = "/internal/v1/charges";
/// Charges asked for in one direct request, at most.
pub const DIRECT_CHARGES_MAX: usize = 500;

/// Tokens the sandbox knows; anything else is refused when booking.
pub const SANDBOX_TOKENS: [&str; 6] = [
    "tok_visa",
    "tok_mastercard",
    // Pays, after the sandbox's delay: a slow provider, for testing
    // what happens when a payment outlasts its hold.
    "tok_delayed",
    "tok_chargeDeclined",
    "tok_insufficientFunds",
    "tok_processingError",
];

pub fn is_known_token(token: &str) -> bool {
    SANDBOX_TOKENS.contains(&token)
}

/// Which payment tokens a booking may name, by the provider the payment
/// service charges through (PAYMENT_PROVIDER): the sandbox's own list, or,
/// for a real provider, anything shaped like a token, which the provider
/// then accepts or declines (the booking fails PAYMENT_DECLINED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRule {
    Sandbox,
    Provider,
}

impl TokenRule {
    /// The rule for PAYMENT_PROVIDER's value (`sandbox` when unset).
    pub fn for_provider(provider: &str) -> Self {
        if provider.eq_ignore_ascii_case("sandbox") {
            TokenRule::Sandbox
        } else {
            TokenRule::Provider
        }
    }

    pub fn accepts(self, token: &str) -> bool {
        match self {
            TokenRule::Sandbox => is_known_token(token),
            TokenRule::Provider => {
                (1..=255).contains(&token.len())
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_by_provider() {
        let sandbox = TokenRule::for_provider("sandbox");
        assert!(SANDBOX_TOKENS.iter().all(|t| sandbox.accepts(t)));
        assert!(!sandbox.accepts("pm_card_visa") && !sandbox.accepts(""));
        let stripe = TokenRule::for_provider("stripe");
        for token in ["pm_card_visa", "tok_visa", "pm_1PqZx2-abc"] {
            assert!(stripe.accepts(token), "{token}");
        }
        let long = "x".repeat(256);
        for token in ["", "pm card", "pm_\u{0}", "tok;drop", long.as_str()] {
            assert!(!stripe.accepts(token), "{token:?}");
        }
    }
}

/// A booking's payment as it stands once charged or refunded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentSettlement {
    pub booking_id: Uuid,
    pub payment_id: Uuid,
    /// Who paid, to tell them of a refund; absent when nothing was taken
    /// (and in messages written before it was carried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    pub amount: Money,
    pub currency: String,
    pub provider_reference: Option<String>,
}

/// The booking's charge went through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaymentSucceeded(pub PaymentSettlement);

/// The booking's charge was given back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaymentRefunded(pub PaymentSettlement);

/// How a charge failed, as the booking reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentFailure {
    /// The card or account said no.
    PaymentDeclined,
    /// The provider failed.
    PaymentError,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub booking_id: Uuid,
    pub reason: PaymentFailure,
    /// The provider's word: card_declined, insufficient_funds, processing_error.
    pub detail: String,
}

crate::message!(crate::exchanges::PAYMENT => PaymentSucceeded, PaymentRefunded, PaymentFailed);
