//! What each notification says: subject, plain text and HTML, from the
//! recipient, the event and the booking. No I/O; every type is tested.

use ticketer_contract::{BookingSnapshot, FailureReason};

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
}

impl News<'_> {
    pub fn kind(&self) -> NotificationType {
        match self {
            News::Welcome => NotificationType::Welcome,
            News::EventPublished(_) => NotificationType::EventPublished,
            News::EventCancelled(_) => NotificationType::EventCancelled,
            News::Booking(kind, _, _) => *kind,
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

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn event_line(event: Option<&EventInfo>, event_id: i64) -> String {
    match event {
        Some(e) => format!("{} at {}, {} {}", e.name, e.location, e.event_date, e.start_time),
        None => format!("event #{event_id}"),
    }
}

fn event_name(event: Option<&EventInfo>, event_id: i64) -> String {
    event.map_or_else(|| format!("event #{event_id}"), |e| e.name.clone())
}

fn amount(b: &BookingSnapshot) -> String {
    match (&b.amount, &b.currency) {
        (Some(a), Some(c)) => format!("{a} {c}"),
        (Some(a), None) => a.to_string(),
        _ => "0.00".into(),
    }
}

/// Paragraphs of plain text, turned into the text and the HTML bodies.
fn bodies(to: &Contact, paragraphs: &[String], list: &[String]) -> (String, String) {
    let greeting = format!("Hello {},", to.first_name);
    let mut text = format!("{greeting}\n\n");
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;color:#1f2933\"><p>{}</p>",
        escape(&greeting)
    );
    for p in paragraphs {
        text.push_str(p);
        text.push_str("\n\n");
        html.push_str(&format!("<p>{}</p>", escape(p)));
    }
    if !list.is_empty() {
        html.push_str("<ul>");
        for item in list {
            text.push_str(&format!("  - {item}\n"));
            html.push_str(&format!("<li><code>{}</code></li>", escape(item)));
        }
        html.push_str("</ul>");
        text.push('\n');
    }
    text.push_str("-- \nTicketer\n");
    html.push_str("<p style=\"color:#52606d\">Ticketer</p></body></html>");
    (text, html)
}

pub fn compose(to: &Contact, news: &News) -> Composed {
    let (subject, paragraphs, list) = match news {
        News::Welcome => (
            "Welcome to Ticketer".to_string(),
            vec!["Your account is ready. Browse the events on sale and book your seats.".to_string()],
            vec![],
        ),
        News::EventPublished(e) => (
            format!("{} is published", e.name),
            vec![format!(
                "Your event {} is published and its tickets are on sale.",
                event_line(Some(e), e.event_id)
            )],
            vec![],
        ),
        News::EventCancelled(e) => (
            format!("{} is cancelled", e.name),
            vec![format!(
                "We are sorry: {} has been cancelled by its organizer. Your booking is refunded in full.",
                event_line(Some(e), e.event_id)
            )],
            vec![],
        ),
        News::Booking(kind, b, event) => {
            let name = event_name(*event, b.event_id);
            let line = event_line(*event, b.event_id);
            match kind {
                NotificationType::BookingConfirmed => (
                    format!("Your tickets for {name}"),
                    vec![
                        format!(
                            "Your booking {} is confirmed: {} ticket(s) for {line}, {} paid.",
                            b.booking_id,
                            b.number_of_tickets,
                            amount(b)
                        ),
                        "Your tickets (show one per person at the door):".to_string(),
                    ],
                    b.ticket_ids.iter().map(|t| t.to_string()).collect(),
                ),
                NotificationType::BookingFailed => (
                    format!("Your booking for {name} did not go through"),
                    vec![format!(
                        "Your booking {} for {line} could not be completed: {}.",
                        b.booking_id,
                        in_plain_words(b.failure_reason)
                    )],
                    vec![],
                ),
                _ => (
                    format!("Your booking for {name} is cancelled"),
                    vec![format!(
                        "Your booking {} for {line} is cancelled and {} is refunded to your payment method.",
                        b.booking_id,
                        amount(b)
                    )],
                    vec![],
                ),
            }
        }
    };
    let (text, html) = bodies(to, &paragraphs, &list);
    Composed { subject, text, html }
}

#[cfg(test)]
mod tests {
    use ticketer_contract::{BookingStatus, Money};
    use uuid::Uuid;

    use super::*;

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
                _ => News::Booking(kind, &confirmed, Some(&e)),
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
