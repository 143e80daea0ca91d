//! Payment providers. The built-in sandbox decides by token, as the
//! contract describes; a real provider plugs in behind the same trait and
//! receives an idempotency key per operation ([`charge_key`], [`refund_key`]),
//! so a retried charge or refund is never done twice at the provider either.

use ticketer_contract::Money;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded {
        reference: String,
    },
    /// The card was refused; `reason` says why (card_declined, insufficient_funds).
    Declined {
        reason: String,
    },
    /// The provider failed; the charge did not happen.
    Error {
        reason: String,
    },
}

#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    async fn charge(
        &self,
        idempotency_key: Uuid,
        amount: Money,
        currency: &str,
        token: &str,
    ) -> ChargeOutcome;
    /// Returns the refund's reference.
    async fn refund(
        &self,
        idempotency_key: Uuid,
        charge_reference: &str,
        amount: Money,
    ) -> Result<String, String>;

    /// The card behind `token`, for saving it as a payment method; None
    /// when the provider does not know the token.
    async fn describe(&self, token: &str) -> Option<Card> {
        let _ = token;
        None
    }
}

/// What a customer is shown of a saved card: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
}

/// The sandbox's card for each of its tokens (the numbers are the
/// well-known test cards that behave the same way).
pub fn sandbox_card(token: &str) -> Option<Card> {
    let (brand, last4) = match token {
        "tok_visa" => ("visa", "4242"),
        "tok_mastercard" => ("mastercard", "4444"),
        "tok_delayed" => ("visa", "3155"),
        "tok_chargeDeclined" => ("visa", "0002"),
        "tok_insufficientFunds" => ("visa", "9995"),
        "tok_processingError" => ("visa", "0119"),
        _ => return None,
    };
    Some(Card {
        brand: brand.into(),
        last4: last4.into(),
        exp_month: 12,
        exp_year: 2034,
    })
}

pub use ticketer_contract::payment::{is_known_token, SANDBOX_TOKENS};

mod stripe;
pub use stripe::Stripe;

/// The idempotency key of a booking's charge: the booking id (the contract:
/// every charge is keyed by booking id).
pub fn charge_key(booking: Uuid) -> Uuid {
    booking
}

/// The idempotency key of a booking's refund: derived from the booking id
/// but never equal to the charge's, so that a provider which keys all its
/// operations alike cannot take the refund for a retry of the charge.
pub fn refund_key(booking: Uuid) -> Uuid {
    Uuid::new_v5(&booking, b"refund")
}

/// The sandbox's decision for a token, with no I/O.
pub fn sandbox_decision(idempotency_key: Uuid, token: &str) -> ChargeOutcome {
    match token {
        "tok_visa" | "tok_mastercard" | "tok_delayed" => ChargeOutcome::Succeeded {
            reference: format!("sandbox_ch_{}", idempotency_key.simple()),
        },
        "tok_chargeDeclined" => ChargeOutcome::Declined {
            reason: "card_declined".into(),
        },
        "tok_insufficientFunds" => ChargeOutcome::Declined {
            reason: "insufficient_funds".into(),
        },
        "tok_processingError" => ChargeOutcome::Error {
            reason: "processing_error".into(),
        },
        _ => ChargeOutcome::Declined {
            reason: "unknown_token".into(),
        },
    }
}

pub struct Sandbox {
    /// How long `tok_delayed` takes (PAYMENT_SANDBOX_DELAY_MS).
    pub delay: std::time::Duration,
}

#[async_trait::async_trait]
impl PaymentProvider for Sandbox {
    async fn charge(&self, key: Uuid, _amount: Money, _currency: &str, token: &str) -> ChargeOutcome {
        if token == "tok_delayed" {
            tokio::time::sleep(self.delay).await;
        }
        sandbox_decision(key, token)
    }

    async fn refund(&self, key: Uuid, _charge: &str, _amount: Money) -> Result<String, String> {
        Ok(format!("sandbox_re_{}", key.simple()))
    }

    async fn describe(&self, token: &str) -> Option<Card> {
        sandbox_card(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refund_is_keyed_apart_from_its_charge_and_always_alike() {
        let booking = Uuid::new_v4();
        assert_eq!(charge_key(booking), booking);
        assert_ne!(refund_key(booking), charge_key(booking));
        assert_eq!(refund_key(booking), refund_key(booking));
        assert_ne!(refund_key(booking), refund_key(Uuid::new_v4()));
    }

    #[test]
    fn every_sandbox_token() {
        let key = Uuid::nil();
        assert!(matches!(
            sandbox_decision(key, "tok_visa"),
            ChargeOutcome::Succeeded { .. }
        ));
        assert!(matches!(
            sandbox_decision(key, "tok_mastercard"),
            ChargeOutcome::Succeeded { .. }
        ));
        assert_eq!(
            sandbox_decision(key, "tok_chargeDeclined"),
            ChargeOutcome::Declined {
                reason: "card_declined".into()
            }
        );
        assert_eq!(
            sandbox_decision(key, "tok_insufficientFunds"),
            ChargeOutcome::Declined {
                reason: "insufficient_funds".into()
            }
        );
        assert!(matches!(
            sandbox_decision(key, "tok_processingError"),
            ChargeOutcome::Error { .. }
        ));
        assert!(SANDBOX_TOKENS.iter().all(|t| is_known_token(t)));
        assert!(!is_known_token("tok_amex") && !is_known_token(""));
    }

    #[test]
    fn every_sandbox_token_is_a_card_and_nothing_else_is() {
        for token in SANDBOX_TOKENS {
            let card = sandbox_card(token).unwrap_or_else(|| panic!("{token}"));
            assert_eq!(card.last4.len(), 4, "{token}");
        }
        assert_eq!(sandbox_card("tok_visa").map(|c| c.brand).as_deref(), Some("visa"));
        assert_eq!(sandbox_card("tok_amex"), None);
        assert_eq!(sandbox_card(""), None);
    }

    #[test]
    fn the_same_booking_gets_the_same_charge_reference() {
        let key = Uuid::new_v4();
        assert_eq!(
            sandbox_decision(key, "tok_visa"),
            sandbox_decision(key, "tok_visa")
        );
    }
}
