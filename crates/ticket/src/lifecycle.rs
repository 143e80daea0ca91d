//! The ticket status lifecycle from the contract, as one pure function.
//!
//! AVAILABLE -> HELD -> SOLD; HELD -> AVAILABLE when released or when the
//! hold expires; SOLD -> VOID when its booking is cancelled and refunded
//! (the seat is sold again under a new ticket id: a ticket id is what a
//! door scanner trusts, so one that was refunded never admits anyone);
//! anything but VOID -> CANCELLED when the event is cancelled.

use std::fmt;

ticketer_contract::listed! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum TicketStatus {
        Available,
        Held,
        Sold,
        Cancelled,
        /// Sold, then refunded: kept as a record, never valid again.
        Void,
    }
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Available => "AVAILABLE",
            TicketStatus::Held => "HELD",
            TicketStatus::Sold => "SOLD",
            TicketStatus::Cancelled => "CANCELLED",
            TicketStatus::Void => "VOID",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for TicketStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

ticketer_contract::listed! {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TicketAction {
        /// A booking takes the ticket for a while.
        Hold,
        /// The booking gives it back (payment failed, booking abandoned).
        Release,
        /// The hold ran out before the booking completed.
        Expire,
        /// The booking paid: the ticket is theirs.
        Sell,
        /// The booking was cancelled and refunded: the seat is sellable again,
    /// under a new ticket.
        Refund,
        /// The event was cancelled.
        CancelEvent,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} ticket cannot {action:?}")]
pub struct InvalidTransition {
    pub from: TicketStatus,
    pub action: TicketAction,
}

pub fn transition(from: TicketStatus, action: TicketAction) -> Result<TicketStatus, InvalidTransition> {
    use TicketAction::*;
    use TicketStatus::*;
    match (from, action) {
        // A refunded ticket stays void whatever happens to its event.
        (Void, CancelEvent) => Ok(Void),
        (_, CancelEvent) => Ok(Cancelled),
        (Available, Hold) => Ok(Held),
        (Held, Release | Expire) => Ok(Available),
        (Held, Sell) => Ok(Sold),
        (Sold, Refund) => Ok(Void),
        (from, action) => Err(InvalidTransition { from, action }),
    }
}

#[cfg(test)]
mod tests {
    use super::{TicketAction::*, TicketStatus::*, *};

    #[test]
    fn every_status_and_action() {
        let allowed = [
            (Available, Hold, Held),
            (Held, Release, Available),
            (Held, Expire, Available),
            (Held, Sell, Sold),
            (Sold, Refund, Void),
            (Available, CancelEvent, Cancelled),
            (Held, CancelEvent, Cancelled),
            (Sold, CancelEvent, Cancelled),
            (Cancelled, CancelEvent, Cancelled),
            (Void, CancelEvent, Void),
        ];
        for from in TicketStatus::ALL {
            for action in TicketAction::ALL {
                let expected = allowed
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .map(|(_, _, to)| *to);
                assert_eq!(transition(from, action).ok(), expected, "{from} {action:?}");
            }
        }
    }

    #[test]
    fn a_ticket_is_never_sold_without_being_held_first() {
        assert!(transition(Available, Sell).is_err());
        assert!(transition(Sold, Hold).is_err());
        assert!(transition(Sold, Sell).is_err());
        assert!(transition(Cancelled, Hold).is_err());
        assert!(
            transition(Void, Hold).is_err(),
            "a refunded ticket is never held again"
        );
    }

    #[test]
    fn statuses_round_trip() {
        for st in TicketStatus::ALL {
            assert_eq!(TicketStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(TicketStatus::parse("GONE"), None);
    }
}
