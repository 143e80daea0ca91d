//! What each notification says: subject, plain text and HTML, from the
//! recipient, the event and the booking. No I/O; every type is tested.

use serde_json::json;
use ticketer_contract::{BookingSnapshot, FailureReason, PaymentSettlement};

ticketer_contract::listed! {
    /// The kinds of notification (the contract's `notification_type`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum NotificationType {
        Welcome,
        EventPublished,
        EventCancelled,
        BookingConfirmed,
        BookingFailed,
        BookingCancelled,
        PaymentRefunded,
    }
}

impl NotificationType {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::Welcome => "WELCOME",
            NotificationType::EventPublished => "EVENT_PUBLISHED",
            NotificationType::EventCancelled => "EVENT_CANCELLED",
            NotificationType::BookingConfirmed => "BOOKING_CONFIRMED",
            NotificationType::BookingFailed => "BOOKING_FAILED",
            NotificationType::BookingCancelled => "BOOKING_CANCELLED",
            NotificationType::PaymentRefunded => "PAYMENT_REFUNDED",
        }
    }
}

/// Who is written to, from auth's own record of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub user_id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

/// An event as its last snapshot said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    pub event_id: i64,
    pub name: String,
    pub location: String,
    pub event_date: String,
    pub start_time: String,
    pub organizer: String,
}

/// What happened, with what the message needs to say about it.
pub enum News<'a> {
    Welcome,
    EventPublished(&'a EventInfo),
    EventCancelled(&'a EventInfo),
    /// The event is None when its snapshot never arrived here.
    Booking(NotificationType, &'a BookingSnapshot, Option<&'a EventInfo>),
    /// Money given back to the customer who paid it.
    Refunded(&'a PaymentSettlement),
}

impl News<'_> {
    pub fn kind(&self) -> NotificationType {
        match self {
            News::Welcome => NotificationType::Welcome,
            News::EventPublished(_) => NotificationType::EventPublished,
            News::EventCancelled(_) => NotificationType::EventCancelled,
            News::Booking(kind, _, _) => *kind,
            News::Refunded(_) => NotificationType::PaymentRefunded,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A failure reason in words a customer understands.
pub fn in_plain_words(reason: Option<FailureReason>) -> &'static str {
    match reason {
        Some(FailureReason::SoldOut) => "the event sold out before your seats could be held",
        Some(FailureReason::PaymentDeclined) => "your payment was declined, so nothing was charged",
        Some(FailureReason::PaymentError) => {
            "the payment could not be completed in time; any amount taken is refunded"
        }
        Some(FailureReason::EventNotOnSale) => "the event is not on sale",
        Some(FailureReason::HoldExpired) => {
            "your seats were released before the payment was confirmed; any amount taken is refunded"
        }
        Some(FailureReason::EventCancelled) => "the event was cancelled",
        None => "the booking could not be completed",
    }
}

/// What a template may use: `recipient` (first_name, last_name, email),
/// `event` (id, name, location, date, time, and description: name, place
/// and time in one phrase, or "event #id" when this service has not heard
/// of the event), and for bookings `booking` (id, number_of_tickets,
/// tickets, amount, currency, reason in plain words); for refunds
/// `refund` (booking_id, amount, currency, reference: the provider's, or
/// empty).
pub fn context(to: &Contact, news: &News) -> serde_json::Value {
    let event = |e: Option<&EventInfo>, id: i64| match e {
        Some(e) => json!({
            "id": e.event_id, "name": e.name, "location": e.location, "date": e.event_date,
            "time": e.start_time,
            "description": format!("{} at {}, {} {}", e.name, e.location, e.event_date, e.start_time),
        }),
        None => json!({
            "id": id, "name": format!("event #{id}"), "location": "", "date": "", "time": "",
            "description": format!("event #{id}"),
        }),
    };
    let recipient = json!({"first_name": to.first_name, "last_name": to.last_name, "email": to.email});
    match news {
        News::Welcome => json!({"recipient": recipient}),
        News::EventPublished(e) | News::EventCancelled(e) => {
            json!({"recipient": recipient, "event": event(Some(e), e.event_id)})
        }
        News::Booking(_, b, e) => json!({
            "recipient": recipient,
            "event": event(*e, b.event_id),
            "booking": {
                "id": b.booking_id,
                "number_of_tickets": b.number_of_tickets,
                "tickets": b.ticket_ids,
                "amount": b.amount.map_or_else(|| "0.00".to_string(), |a| a.to_string()),
                "currency": b.currency.clone().unwrap_or_default(),
                "reason": in_plain_words(b.failure_reason),
            },
        }),
        News::Refunded(r) => json!({
            "recipient": recipient,
            "refund": {
                "booking_id": r.booking_id,
                "amount": r.amount.to_string(),
                "currency": r.currency,
                "reference": r.provider_reference.clone().unwrap_or_default(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use ticketer_contract::{BookingStatus, Money};
    use uuid::Uuid;

    use super::*;

    /// The notification in the shipped default words.
    fn compose(to: &Contact, news: &News) -> Composed {
        crate::templates::render(&crate::templates::default_for(news.kind()), &context(to, news))
            .expect("the default templates render every context")
    }

    fn ada() -> Contact {
        Contact {
            user_id: Uuid::nil().to_string(),
            email: "ada@example.com".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        }
    }

    fn gig() -> EventInfo {
        EventInfo {
            event_id: 7,
            name: "Rust & <Roll>".into(),
            location: "Hall 1".into(),
            event_date: "2027-05-01".into(),
            start_time: "20:00".into(),
            organizer: Uuid::nil().to_string(),
        }
    }

    fn booking(status: BookingStatus, reason: Option<FailureReason>) -> BookingSnapshot {
        BookingSnapshot {
            booking_id: Uuid::new_v4(),
            customer_id: Uuid::nil(),
            event_id: 7,
            number_of_tickets: 2,
            status,
            ticket_ids: vec![Uuid::new_v4(), Uuid::new_v4()],
            amount: Some(Money::from_minor(5000)),
            currency: Some("EUR".into()),
            failure_reason: reason,
            created_at: String::new(),
            updated_at: String::new(),
            held_at: None,
        }
    }

    #[test]
    fn every_type_has_its_words() {
        let refund = refund(Some("re_123"));
        let (e, confirmed, failed) = (
            gig(),
            booking(BookingStatus::Confirmed, None),
            booking(BookingStatus::Failed, Some(FailureReason::SoldOut)),
        );
        for kind in NotificationType::ALL {
            let news = match kind {
                NotificationType::Welcome => News::Welcome,
                NotificationType::EventPublished => News::EventPublished(&e),
                NotificationType::EventCancelled => News::EventCancelled(&e),
                NotificationType::BookingFailed => News::Booking(kind, &failed, Some(&e)),
                NotificationType::PaymentRefunded => News::Refunded(&refund),
                NotificationType::BookingConfirmed | NotificationType::BookingCancelled => {
                    News::Booking(kind, &confirmed, Some(&e))
                }
            };
            assert_eq!(news.kind(), kind);
            let c = compose(&ada(), &news);
            assert!(
                !c.subject.is_empty() && c.text.starts_with("Hello Ada,"),
                "{kind:?}"
            );
            assert!(c.html.contains("Hello Ada,"), "{kind:?}");
        }
    }

    #[test]
    fn a_confirmation_lists_the_tickets_the_event_and_the_amount() {
        let b = booking(BookingStatus::Confirmed, None);
        let c = compose(
            &ada(),
            &News::Booking(NotificationType::BookingConfirmed, &b, Some(&gig())),
        );
        assert_eq!(c.subject, "Your tickets for Rust & <Roll>");
        for t in &b.ticket_ids {
            assert!(c.text.contains(&t.to_string()) && c.html.contains(&t.to_string()));
        }
        assert!(c.text.contains("Hall 1, 2027-05-01 20:00") && c.text.contains("50.00 EUR"));
        // Organizers' text is escaped in the HTML body, never markup.
        assert!(c.html.contains("Rust &amp; &lt;Roll&gt;") && !c.html.contains("<Roll>"));
    }

    #[test]
    fn a_failure_says_why_in_plain_words() {
        for reason in FailureReason::ALL {
            let b = booking(BookingStatus::Failed, Some(reason));
            let c = compose(&ada(), &News::Booking(NotificationType::BookingFailed, &b, None));
            assert!(c.text.contains(in_plain_words(Some(reason))), "{reason:?}");
            assert!(!c.text.contains(reason.as_str()), "no codes: {}", c.text);
            assert!(c.text.contains("event #7"), "an event not known here by its id");
        }
    }

    fn refund(reference: Option<&str>) -> PaymentSettlement {
        PaymentSettlement {
            booking_id: Uuid::from_u128(5),
            payment_id: Uuid::from_u128(6),
            customer_id: Some(Uuid::nil()),
            amount: Money::from_minor(5000),
            currency: "EUR".into(),
            provider_reference: reference.map(String::from),
        }
    }

    #[test]
    fn a_refund_says_how_much_went_back_and_the_providers_reference_if_any() {
        let c = compose(&ada(), &News::Refunded(&refund(Some("re_123"))));
        assert_eq!(c.subject, "Your refund of 50.00 EUR");
        assert!(c
            .text
            .contains("refunded 50.00 EUR for booking 00000000-0000-0000-0000-000000000005"));
        assert!(c.text.contains("re_123") && c.html.contains("re_123"));
        let c = compose(&ada(), &News::Refunded(&refund(None)));
        assert!(!c.text.contains("reference"), "{}", c.text);
    }

    #[test]
    fn a_cancellation_says_what_is_refunded() {
        let b = booking(BookingStatus::Cancelled, None);
        let c = compose(
            &ada(),
            &News::Booking(NotificationType::BookingCancelled, &b, Some(&gig())),
        );
        assert!(c.subject.contains("cancelled") && c.text.contains("50.00 EUR is refunded"));
    }
}
