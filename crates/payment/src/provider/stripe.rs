//! A provider that speaks Stripe's HTTP API (PaymentIntents, Refunds,
//! PaymentMethods): form-encoded requests with the secret key as bearer and
//! the operation's idempotency key as `Idempotency-Key`, so a retried
//! charge or refund is done once at the provider too. Works against Stripe
//! or anything that answers like it (a test's stub).

use std::time::Duration;

use serde::Deserialize;
use ticketer_contract::Money;
use uuid::Uuid;

use super::{Card, ChargeOutcome, PaymentProvider};

pub struct Stripe {
    base: String,
    secret_key: String,
    http: reqwest::Client,
}

/// How long one call may take before it counts as the provider failing.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Deserialize)]
struct Intent {
    id: String,
    status: String,
}

#[derive(Deserialize)]
struct Refund {
    id: String,
}

#[derive(Deserialize)]
struct Method {
    card: Option<MethodCard>,
}

#[derive(Deserialize)]
struct MethodCard {
    brand: String,
    last4: String,
    exp_month: i64,
    exp_year: i64,
}

#[derive(Deserialize)]
struct Failure {
    error: FailureDetail,
}

#[derive(Deserialize)]
struct FailureDetail {
    #[serde(rename = "type")]
    kind: String,
    code: Option<String>,
    decline_code: Option<String>,
}

impl Stripe {
    /// `base` is e.g. `https://api.stripe.com` (PAYMENT_STRIPE_URL), the key
    /// PAYMENT_STRIPE_SECRET_KEY.
    pub fn new(base: &str, secret_key: &str) -> anyhow::Result<Stripe> {
        anyhow::ensure!(!secret_key.is_empty(), "the Stripe provider needs a secret key");
        Ok(Stripe {
            base: base.trim_end_matches('/').to_string(),
            secret_key: secret_key.to_string(),
            http: reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?,
        })
    }

    fn post(&self, path: &str, key: Uuid) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", key.to_string())
    }
}

/// What a refused call means for the charge: a card error is the card's
/// (declined, with the provider's most specific code); anything else is the
/// provider failing.
fn refused(status: reqwest::StatusCode, body: &str) -> ChargeOutcome {
    match serde_json::from_str::<Failure>(body) {
        Ok(Failure { error }) if error.kind == "card_error" => ChargeOutcome::Declined {
            reason: error
                .decline_code
                .or(error.code)
                .unwrap_or_else(|| "card_declined".into()),
        },
        Ok(Failure { error }) => ChargeOutcome::Error {
            reason: error.code.unwrap_or(error.kind),
        },
        Err(_) => ChargeOutcome::Error {
            reason: format!("provider answered {status}"),
        },
    }
}

#[async_trait::async_trait]
impl PaymentProvider for Stripe {
    async fn charge(&self, key: Uuid, amount: Money, currency: &str, token: &str) -> ChargeOutcome {
        let form = [
            ("amount", amount.minor().to_string()),
            ("currency", currency.to_lowercase()),
            ("payment_method", token.to_string()),
            ("confirm", "true".to_string()),
            ("payment_method_types[]", "card".to_string()),
        ];
        let answer = match self.post("/v1/payment_intents", key).form(&form).send().await {
            Ok(a) => a,
            Err(e) => {
                return ChargeOutcome::Error {
                    reason: format!("provider unreachable: {e}"),
                }
            }
        };
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            return refused(status, &body);
        }
        match serde_json::from_str::<Intent>(&body) {
            Ok(intent) if intent.status == "succeeded" => ChargeOutcome::Succeeded { reference: intent.id },
            // 3-D Secure and other customer actions cannot happen in a
            // flash sale's checkout: the charge did not go through.
            Ok(intent) => ChargeOutcome::Declined {
                reason: format!("intent_{}", intent.status),
            },
            Err(e) => ChargeOutcome::Error {
                reason: format!("unreadable answer: {e}"),
            },
        }
    }

    async fn refund(&self, key: Uuid, charge: &str, amount: Money) -> Result<String, String> {
        let form = [
            ("payment_intent", charge.to_string()),
            ("amount", amount.minor().to_string()),
        ];
        let answer = self
            .post("/v1/refunds", key)
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("provider unreachable: {e}"))?;
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("refund refused ({status}): {body}"));
        }
        serde_json::from_str::<Refund>(&body)
            .map(|r| r.id)
            .map_err(|e| format!("unreadable answer: {e}"))
    }

    async fn describe(&self, token: &str) -> Option<Card> {
        let answer = self
            .http
            .get(format!("{}/v1/payment_methods/{token}", self.base))
            .bearer_auth(&self.secret_key)
            .send()
            .await
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        let card = answer.json::<Method>().await.ok()?.card?;
        Some(Card {
            brand: card.brand,
            last4: card.last4,
            exp_month: card.exp_month,
            exp_year: card.exp_year,
        })
    }
}
