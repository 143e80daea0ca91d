//! What the booking saga asks of the payment service, and its answers.
//! Commands arrive on `ticketer.booking`; answers go out on `ticketer.payment`.

use serde::{Deserialize, Serialize};
use ticketer_http::Money;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessPayment {
    pub booking_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Money,
    pub currency: String,
    pub payment_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundPayment {
    pub booking_id: Uuid,
}

/// PaymentSucceeded and PaymentRefunded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentDone {
    pub booking_id: Uuid,
    pub payment_id: Uuid,
    pub amount: Money,
    pub currency: String,
    pub provider_reference: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub booking_id: Uuid,
    /// PAYMENT_DECLINED or PAYMENT_ERROR, as the booking reports it.
    pub reason: String,
    /// The provider's word: card_declined, insufficient_funds, processing_error.
    pub detail: String,
}
