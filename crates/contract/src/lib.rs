//! The contract between the services (CONTRACT.md, "Messages"): every
//! message is a type that knows its kind and the exchange it travels on,
//! and a consumer names the messages it takes as one enum. Producer and
//! consumer share the type, so a booking can be followed across crates by
//! its types alone:
//!
//! POST /bookings -> [`BookingCreated`] + [`HoldTickets`] (with its
//! [`Charge`]) -> [`TicketsHeld`] (the payment service charges on it) ->
//! [`PaymentSucceeded`] (the ticket service sells on it) ->
//! [`BookingConfirmed`]. Late in a hold the saga asks for the sale itself:
//! [`ReserveTickets`] -> [`TicketsReserved`]; a hold asked without a charge
//! (written by an earlier version) is paid through [`ProcessPayment`].
//!
//! Nothing here does I/O; the bus wraps these in envelopes.

pub mod auth;
pub mod booking;
pub mod events;
pub mod exchanges;
mod money;
pub mod payment;
pub mod ticket;

pub use auth::{Role, UserRegistered};
pub use booking::{
    BookingCancelled, BookingConfirmed, BookingCreated, BookingFailed, BookingSnapshot, BookingStatus,
    Charge, FailureReason, HoldTickets, ProcessPayment, RefundPayment, ReleaseTickets, ReserveTickets,
};
pub use events::{
    EventCancelled, EventCompleted, EventCreated, EventPublished, EventSnapshot, EventStatus, EventUpdated,
    SaleNews,
};
pub use money::Money;
pub use payment::{PaymentFailed, PaymentFailure, PaymentRefunded, PaymentSettlement, PaymentSucceeded};
pub use ticket::{
    HoldRefusal, ReleaseReason, ReserveRefusal, TicketsHeld, TicketsHoldFailed, TicketsReleased,
    TicketsReserveFailed, TicketsReserved,
};

use serde::{de::DeserializeOwned, Serialize};

// For `incoming!` in crates that do not name serde themselves.
#[doc(hidden)]
pub use serde;
#[doc(hidden)]
pub use serde_json;

/// A message of the contract: its payload is `Self`.
pub trait Message: Serialize + DeserializeOwned {
    /// The envelope's `type`, also the routing key.
    const KIND: &'static str;
    /// The exchange its producer publishes it on.
    const EXCHANGE: &'static str;
}

/// The messages one consumer takes, as one enum (declared with
/// [`incoming!`]): decoding a message of another kind says so instead of
/// guessing.
pub trait Incoming: Sized {
    /// The kinds this enum covers, for binding queues and for tests.
    const KINDS: &'static [&'static str];

    /// `Ok(None)` for a kind this consumer does not take; an error for a
    /// payload that does not fit its kind's type.
    fn decode(kind: &str, payload: &serde_json::Value) -> Result<Option<Self>, serde_json::Error>;
}

/// Declares what one consumer takes: `incoming!(pub enum SagaReply {
/// TicketsHeld, PaymentSucceeded })` makes an enum with one variant per
/// message type, named after it, and its [`Incoming`] decoding.
#[macro_export]
macro_rules! incoming {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($msg:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis enum $name {
            $($msg($msg),)+
        }

        impl $crate::Incoming for $name {
            const KINDS: &'static [&'static str] = &[$(<$msg as $crate::Message>::KIND),+];

            fn decode(
                kind: &str,
                payload: &$crate::serde_json::Value,
            ) -> Result<Option<Self>, $crate::serde_json::Error> {
                $(
                    if kind == <$msg as $crate::Message>::KIND {
                        return <$msg as $crate::serde::Deserialize>::deserialize(payload)
                            .map(|m| Some($name::$msg(m)));
                    }
                )+
                Ok(None)
            }
        }
    };
}

/// Implements [`Message`] for payload types: `message!(EXCHANGE: A, B)`.
macro_rules! message {
    ($exchange:expr => $($ty:ident),+ $(,)?) => {
        $(impl $crate::Message for $ty {
            const KIND: &'static str = stringify!($ty);
            const EXCHANGE: &'static str = $exchange;
        })+
    };
}
pub(crate) use message;

/// A fieldless enum with its `ALL` list, written once, so that a variant
/// cannot be added without being listed (the lists drive parsing and the
/// exhaustive tests of the state machines).
#[macro_export]
macro_rules! listed {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in the order they are declared.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_listed_enum_lists_every_variant_in_order() {
        crate::listed! {
            #[derive(Debug, Clone, Copy, PartialEq)]
            enum Light {
                Red,
                Amber,
                Green,
            }
        }
        assert_eq!(Light::ALL, [Light::Red, Light::Amber, Light::Green]);
    }

    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    incoming!(
        // Only some variants are looked into here.
        #[allow(dead_code)]
        enum SagaReplies {
            TicketsHeld,
            TicketsHoldFailed,
            PaymentFailed,
        }
    );

    #[test]
    fn kinds_are_the_type_names_on_their_producers_exchanges() {
        assert_eq!(HoldTickets::KIND, "HoldTickets");
        assert_eq!(HoldTickets::EXCHANGE, "ticketer.booking");
        assert_eq!(BookingConfirmed::KIND, "BookingConfirmed");
        assert_eq!(TicketsHeld::EXCHANGE, "ticketer.ticket");
        assert_eq!(PaymentSucceeded::EXCHANGE, "ticketer.payment");
        assert_eq!(EventPublished::EXCHANGE, "ticketer.events");
        assert_eq!(UserRegistered::EXCHANGE, "ticketer.auth");
        assert_eq!(
            SagaReplies::KINDS,
            ["TicketsHeld", "TicketsHoldFailed", "PaymentFailed"]
        );
    }

    #[test]
    fn a_consumer_decodes_its_kinds_refuses_misfits_and_passes_over_others() {
        let id = Uuid::now_v7();
        let failed = json!({"booking_id": id, "event_id": 3, "reason": "SOLD_OUT"});
        match SagaReplies::decode("TicketsHoldFailed", &failed) {
            Ok(Some(SagaReplies::TicketsHoldFailed(m))) => {
                assert_eq!(
                    (m.booking_id, m.event_id, m.reason),
                    (id, 3, HoldRefusal::SoldOut)
                )
            }
            other => panic!("decoded as {other:?}"),
        }
        // The same payload under another of its kinds does not fit.
        assert!(SagaReplies::decode("TicketsHeld", &failed).is_err());
        // A reason outside the contract is not guessed at.
        let odd = json!({"booking_id": id, "reason": "MAYBE", "detail": "?"});
        assert!(SagaReplies::decode("PaymentFailed", &odd).is_err());
        assert!(SagaReplies::decode("TicketsReserved", &failed).unwrap().is_none());
    }

    #[test]
    fn statuses_and_reasons_travel_as_the_contract_spells_them() {
        for s in [
            BookingStatus::Pending,
            BookingStatus::Confirmed,
            BookingStatus::Failed,
            BookingStatus::Cancelled,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        let names = FailureReason::ALL.map(FailureReason::as_str);
        assert_eq!(
            names,
            [
                "SOLD_OUT",
                "PAYMENT_DECLINED",
                "PAYMENT_ERROR",
                "EVENT_NOT_ON_SALE",
                "HOLD_EXPIRED",
                "EVENT_CANCELLED"
            ]
        );
        for r in FailureReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
            assert_eq!(FailureReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(
            serde_json::to_value(ReleaseReason::HoldExpired).unwrap(),
            json!("HOLD_EXPIRED")
        );
        assert_eq!(
            serde_json::to_value(PaymentFailure::PaymentDeclined).unwrap(),
            json!("PAYMENT_DECLINED")
        );
        assert_eq!(
            serde_json::to_value(EventStatus::Published).unwrap(),
            json!("PUBLISHED")
        );
        assert_eq!(serde_json::to_value(Role::Organizer).unwrap(), json!("ORGANIZER"));
    }

    #[test]
    fn event_news_carry_the_snapshot_as_it_stands() {
        let snapshot = json!({
            "event_id": 7, "event_name": "Gig", "category": "Music", "location": "Here",
            "event_date": "2031-01-01", "start_time": "18:00", "end_time": "20:00",
            "ticket_capacity": 10, "ticket_price": "12.50", "currency": "EUR",
            "organizer": Uuid::nil(), "status": "CANCELLED", "version": 4
        });
        let news = SaleNews::decode("EventCancelled", &snapshot).unwrap().unwrap();
        let s = news.snapshot();
        assert_eq!(
            (s.event_id, s.status, s.ticket_price.minor()),
            (7, EventStatus::Cancelled, 1250)
        );
        assert!(SaleNews::decode("EventCreated", &snapshot).unwrap().is_none());
    }
}
