//! Bookings: the saga's commands to the ticket and payment services, and
//! the announcements of a booking's status for everyone else.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Money;

/// The booking status a customer sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BookingStatus {
    Pending,
    Confirmed,
    Failed,
    Cancelled,
}

impl BookingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Pending => "PENDING",
            BookingStatus::Confirmed => "CONFIRMED",
            BookingStatus::Failed => "FAILED",
            BookingStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, BookingStatus::Failed | BookingStatus::Cancelled)
    }
}

crate::listed! {
    /// Why a booking failed (the contract's `failure_reason`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub enum FailureReason {
        SoldOut,
        PaymentDeclined,
        PaymentError,
        EventNotOnSale,
        HoldExpired,
        EventCancelled,
    }
}

impl FailureReason {
    /// The reason the contract spells `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::SoldOut => "SOLD_OUT",
            FailureReason::PaymentDeclined => "PAYMENT_DECLINED",
            FailureReason::PaymentError => "PAYMENT_ERROR",
            FailureReason::EventNotOnSale => "EVENT_NOT_ON_SALE",
            FailureReason::HoldExpired => "HOLD_EXPIRED",
            FailureReason::EventCancelled => "EVENT_CANCELLED",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A booking as a customer sees it (CONTRACT.md), and what every booking
/// announcement carries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BookingSnapshot {
    pub booking_id: Uuid,
    pub customer_id: Uuid,
    pub event_id: i64,
    pub number_of_tickets: i64,
    pub status: BookingStatus,
    pub ticket_ids: Vec<Uuid>,
    /// Known once the seats are held.
    #[schema(value_type = Option<String>, example = "49.90")]
    pub amount: Option<Money>,
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    pub created_at: String,
    pub updated_at: String,
    /// When the seats were held (the hold then lasts TICKET_HOLD_TTL_SECONDS).
    pub held_at: Option<String>,
}

macro_rules! booking_news {
    ($($(#[$doc:meta])* $name:ident),+ $(,)?) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Serialize, Deserialize)]
            #[serde(transparent)]
            pub struct $name(pub BookingSnapshot);
        )+
        crate::message!(crate::exchanges::BOOKING => $($name),+);
    };
}

booking_news!(
    /// Accepted, PENDING: the saga has started.
    BookingCreated,
    /// Seats sold and paid for.
    BookingConfirmed,
    /// The saga gave up; `failure_reason` says why.
    BookingFailed,
    /// Cancelled after confirmation: refunded, seats back on sale.
    BookingCancelled,
);

/// Hold this many seats for the booking (they are its own until the hold
/// expires).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldTickets {
    pub booking_id: Uuid,
    pub event_id: i64,
    pub customer_id: Uuid,
    pub quantity: i64,
    /// How the seats are to be paid for, passed on in [`crate::TicketsHeld`]:
    /// the payment service charges on that news itself, without waiting for
    /// the saga to ask. Absent in commands written before it was carried,
    /// whose saga sends [`ProcessPayment`] once it hears of the hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<Charge>,
}

/// Who pays for a hold, and with what: a [`ProcessPayment`] without its
/// amount, which the ticket service's price decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub customer_id: Uuid,
    /// As in [`ProcessPayment`]: empty when a saved card is named instead.
    pub payment_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method_id: Option<Uuid>,
}

/// Turn the booking's hold into a sale.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveTickets {
    pub booking_id: Uuid,
    pub event_id: i64,
}

/// Give back whatever the booking holds or bought.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseTickets {
    pub booking_id: Uuid,
    pub event_id: i64,
}

/// Charge the customer for the held seats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessPayment {
    pub booking_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Money,
    pub currency: String,
    /// The provider's token given with the booking; empty when the booking
    /// names a saved method instead.
    pub payment_token: String,
    /// A card the customer saved with the payment service, which looks up
    /// its token (only among that customer's own cards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method_id: Option<Uuid>,
}

/// Refund the booking's charge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundPayment {
    pub booking_id: Uuid,
}

crate::message!(crate::exchanges::BOOKING =>
    HoldTickets, ReserveTickets, ReleaseTickets, ProcessPayment, RefundPayment);
