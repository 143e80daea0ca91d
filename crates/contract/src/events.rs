//! Events: every change announced with the event as it now stands.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventStatus {
    Draft,
    Published,
    Cancelled,
    Completed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Draft => "DRAFT",
            EventStatus::Published => "PUBLISHED",
            EventStatus::Cancelled => "CANCELLED",
            EventStatus::Completed => "COMPLETED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Draft, Self::Published, Self::Cancelled, Self::Completed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every event message carries: the event as it now stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventSnapshot {
    pub event_id: i64,
    pub event_name: String,
    pub category: String,
    pub location: String,
    /// YYYY-MM-DD
    pub event_date: String,
    /// HH:MM
    pub start_time: String,
    /// HH:MM
    pub end_time: String,
    pub ticket_capacity: i64,
    pub ticket_price: Money,
    pub currency: String,
    pub organizer: Uuid,
    pub status: EventStatus,
    /// Grows with every change, so consumers can drop stale snapshots.
    pub version: i64,
}

macro_rules! event_news {
    ($($(#[$doc:meta])* $name:ident),+ $(,)?) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Serialize, Deserialize)]
            #[serde(transparent)]
            pub struct $name(pub EventSnapshot);
        )+
        crate::message!(crate::exchanges::EVENTS => $($name),+);
    };
}

event_news!(
    /// A draft was created.
    EventCreated,
    /// Put on sale.
    EventPublished,
    /// Details changed.
    EventUpdated,
    /// Called off: bookings unwind, holders are refunded.
    EventCancelled,
    /// It took place.
    EventCompleted,
);

crate::incoming!(
    /// A change to an event that was on sale or is going on sale: what
    /// the ticket and booking services keep their copies in step with.
    pub enum SaleNews {
        EventPublished,
        EventUpdated,
        EventCancelled,
        EventCompleted,
    }
);

impl SaleNews {
    /// The event as it now stands.
    pub fn snapshot(self) -> EventSnapshot {
        match self {
            SaleNews::EventPublished(EventPublished(s))
            | SaleNews::EventUpdated(EventUpdated(s))
            | SaleNews::EventCancelled(EventCancelled(s))
            | SaleNews::EventCompleted(EventCompleted(s)) => s,
        }
    }
}
