//! What the booking saga asks of the ticket service, and what it answers.
//! Commands arrive on `ticketer.booking`; answers go out on `ticketer.ticket`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticketer_http::Money;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldTickets {
    pub booking_id: Uuid,
    pub event_id: i64,
    pub customer_id: Uuid,
    pub quantity: i64,
}

/// ReserveTickets and ReleaseTickets: act on whatever this booking holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BookingTickets {
    pub booking_id: Uuid,
    pub event_id: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketsHeld {
    pub booking_id: Uuid,
    pub event_id: i64,
    pub ticket_ids: Vec<Uuid>,
    /// Price times quantity, at the price when the seats were held.
    pub amount: Money,
    pub currency: String,
    pub hold_expires_at: DateTime<Utc>,
}

/// TicketsHoldFailed and TicketsReserveFailed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketsRefused {
    pub booking_id: Uuid,
    pub event_id: i64,
    /// SOLD_OUT, EVENT_NOT_ON_SALE or HOLD_EXPIRED.
    pub reason: String,
}

/// TicketsReserved and TicketsReleased.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketsChanged {
    pub booking_id: Uuid,
    pub event_id: i64,
    pub ticket_ids: Vec<Uuid>,
    /// For TicketsReleased: RELEASED, or HOLD_EXPIRED when the hold ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
