//! The ticket service's answers to the booking saga.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Money;

/// Where the booking service asks the ticket service for holds directly,
/// beside the queue (the saga's first step without the outbox relay and
/// two broker hops): `POST`, a JSON array of at most [`DIRECT_HOLDS_MAX`]
/// `HoldTickets` envelopes, with `Authorization: Bearer <SERVICE_TOKEN>`.
/// The answer is the array of `TicketsHeld` / `TicketsHoldFailed`
/// envelopes the ticket service also sends on the bus, with the same ids,
/// except that a hold refused as sold out is left unanswered (and not
/// sent) unless the query says `answer_sold_out=true`: its caller then
/// sends it through the queue, behind any release of seats queued before
/// it. With `publish=false` the answers are returned only, not sent on the
/// bus: the caller then passes each on to where it is needed. Between
/// services only: the gateway does not route it.
pub const DIRECT_HOLDS_PATH: &str = "/internal/v1/holds";
/// Holds asked for in one direct request, at most.
pub const DIRECT_HOLDS_MAX: usize = 500;

/// The seats are the booking's until `hold_expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketsHeld {
    pub booking_id: Uuid,
    pub event_id: i64,
    pub ticket_ids: Vec<Uuid>,
    /// Price times quantity, at the price when the seats were held.
    pub amount: Money,
    pub currency: String,
    pub hold_expires_at: DateTime<Utc>,
    /// The hold's [`crate::HoldTickets::charge`], passed on for the payment
    /// service, which charges on this news when it is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<crate::Charge>,
}

impl TicketsHeld {
    /// The charge the payment service makes on this news, if it carries one.
    pub fn payment(&self) -> Option<crate::ProcessPayment> {
        let charge = self.charge.clone()?;
        Some(crate::ProcessPayment {
            booking_id: self.booking_id,
            customer_id: charge.customer_id,
            amount: self.amount,
            currency: self.currency.clone(),
            payment_token: charge.payment_token,
            payment_method_id: charge.payment_method_id,
        })
    }
}

/// Why seats could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldRefusal {
    SoldOut,
    EventNotOnSale,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketsHoldFailed {
    pub booking_id: Uuid,
    pub event_id: i64,
    pub reason: HoldRefusal,
}

/// The held seats are sold to the booking.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketsReserved {
    pub booking_id: Uuid,
    pub event_id: i64,
    pub ticket_ids: Vec<Uuid>,
}

/// Why held seats could not be sold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReserveRefusal {
    /// The hold had run out (or the event was cancelled meanwhile).
    HoldExpired,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketsReserveFailed {
    pub booking_id: Uuid,
    pub event_id: i64,
    pub reason: ReserveRefusal,
}

/// Why seats went back on sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReleaseReason {
    /// The saga asked (ReleaseTickets).
    Released,
    /// Nobody paid in time.
    HoldExpired,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketsReleased {
    pub booking_id: Uuid,
    pub event_id: i64,
    pub ticket_ids: Vec<Uuid>,
    pub reason: ReleaseReason,
}

crate::message!(crate::exchanges::TICKET =>
    TicketsHeld, TicketsHoldFailed, TicketsReserved, TicketsReserveFailed, TicketsReleased);
