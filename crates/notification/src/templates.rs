//! The words of each notification as templates (minijinja): a subject, a
//! plain-text body and an HTML body per type and channel. The defaults ship
//! in `templates/email/`; an administrator may replace them, and a
//! replacement is rendered against a sample of its type's context before it
//! is accepted, so a template that does not render is refused when saved,
//! not found out when a customer should have been told. Undefined
//! variables are errors; the HTML body is escaped, so nothing an organizer
//! types into an event name becomes markup.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

use crate::compose::{Composed, Contact, EventInfo, News, NotificationType};

/// The channels that have templates. SMS and push use a template's
/// subject and text (the HTML part may be empty); until an administrator
/// gives them their own, they say what the email says.
pub const CHANNELS: [&str; 3] = ["EMAIL", "SMS", "PUSH"];

/// Longest subject and body a template may have, in bytes.
pub const MAX_SUBJECT: usize = 300;
pub const MAX_BODY: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub subject: String,
    pub text: String,
    /// The part of the HTML body inside the house layout.
    pub html: String,
}

/// Which part of a template is wrong, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub part: &'static str,
    pub message: String,
}

macro_rules! shipped {
    ($($kind:ident => $file:literal),+ $(,)?) => {
        /// The shipped template of `kind`.
        pub fn default_for(kind: NotificationType) -> Template {
            match kind {
                $(NotificationType::$kind => Template {
                    subject: include_str!(concat!("../templates/email/", $file, ".subject")).to_string(),
                    text: include_str!(concat!("../templates/email/", $file, ".txt")).to_string(),
                    html: include_str!(concat!("../templates/email/", $file, ".html")).to_string(),
                },)+
            }
        }
    };
}

shipped!(
    Welcome => "WELCOME",
    EventPublished => "EVENT_PUBLISHED",
    EventCancelled => "EVENT_CANCELLED",
    BookingConfirmed => "BOOKING_CONFIRMED",
    BookingFailed => "BOOKING_FAILED",
    BookingCancelled => "BOOKING_CANCELLED",
    PaymentRefunded => "PAYMENT_REFUNDED",
);

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

const LAYOUT_HEAD: &str =
    "<!doctype html><html><body style=\"font-family:sans-serif;color:#1f2933;max-width:36em\">";
const LAYOUT_FOOT: &str = "<p style=\"color:#52606d\">Ticketer</p></body></html>";

/// A template parsed once, to render for many recipients (an event's
/// cancellation goes to every ticket holder).
pub struct Renderer<'t> {
    env: Environment<'t>,
}

const PARTS: [(&str, &str); 3] = [
    ("subject", "subject.txt"),
    ("text", "text.txt"),
    ("html", "body.html"),
];

impl<'t> Renderer<'t> {
    pub fn new(template: &'t Template) -> Result<Self, TemplateError> {
        let mut env = environment();
        for ((part, name), source) in
            PARTS
                .into_iter()
                .zip([&template.subject, &template.text, &template.html])
        {
            env.add_template(name, source).map_err(|e| TemplateError {
                part,
                message: e.to_string(),
            })?;
        }
        Ok(Renderer { env })
    }

    /// The notification the template makes of `context`.
    pub fn render(&self, context: &Value) -> Result<Composed, TemplateError> {
        let [subject, text, html] = PARTS.map(|(part, name)| {
            self.env
                .get_template(name)
                .and_then(|t| t.render(context))
                .map_err(|e| TemplateError {
                    part,
                    message: e.to_string(),
                })
        });
        // One line, whatever the template or the data hold: it is a header.
        let subject = subject?
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if subject.is_empty() {
            return Err(TemplateError {
                part: "subject",
                message: "renders empty".into(),
            });
        }
        let text = format!("{}\n\n-- \nTicketer\n", text?.trim_end());
        let html = format!("{LAYOUT_HEAD}{}{LAYOUT_FOOT}", html?);
        Ok(Composed { subject, text, html })
    }
}

/// The notification `template` makes of `context`.
pub fn render(template: &Template, context: &Value) -> Result<Composed, TemplateError> {
    Renderer::new(template)?.render(context)
}

/// The words of one kind of notification: the administrator's template
/// when there is one, the shipped one otherwise. A replacement rendered a
/// sample when it was saved; should it fail on real data, the shipped
/// words go out (with a warning) instead of nothing.
pub struct Wording<'t> {
    kind: NotificationType,
    custom: Option<Renderer<'t>>,
    shipped: Renderer<'t>,
}

impl<'t> Wording<'t> {
    pub fn new(
        kind: NotificationType,
        custom: Option<&'t Template>,
        shipped: &'t Template,
    ) -> Result<Self, TemplateError> {
        let custom = custom.and_then(|t| Renderer::new(t).map_err(|e| unusable(kind, &e)).ok());
        Ok(Wording {
            kind,
            custom,
            shipped: Renderer::new(shipped)?,
        })
    }

    pub fn render(&self, context: &Value) -> Result<Composed, TemplateError> {
        if let Some(custom) = &self.custom {
            match custom.render(context) {
                Ok(words) => return Ok(words),
                Err(e) => unusable(self.kind, &e),
            }
        }
        self.shipped.render(context)
    }
}

fn unusable(kind: NotificationType, e: &TemplateError) {
    tracing::warn!(kind = kind.as_str(), part = e.part, error = %e.message, "template did not render; the default is used");
}

/// A context of `kind`'s shape with made-up values, to try a template on.
pub fn sample_context(kind: NotificationType) -> Value {
    use ticketer_contract::{BookingSnapshot, BookingStatus, FailureReason, Money};
    let to = Contact {
        user_id: uuid::Uuid::nil().to_string(),
        email: "ada@example.com".into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
    };
    let event = EventInfo {
        event_id: 1,
        name: "Sample concert".into(),
        location: "Main hall".into(),
        event_date: "2030-01-01".into(),
        start_time: "20:00".into(),
        organizer: uuid::Uuid::nil().to_string(),
    };
    let booking = BookingSnapshot {
        booking_id: uuid::Uuid::nil(),
        customer_id: uuid::Uuid::nil(),
        event_id: 1,
        number_of_tickets: 2,
        status: BookingStatus::Confirmed,
        ticket_ids: vec![uuid::Uuid::nil(), uuid::Uuid::max()],
        amount: Some(Money::from_minor(5000)),
        currency: Some("EUR".into()),
        failure_reason: Some(FailureReason::PaymentDeclined),
        created_at: String::new(),
        updated_at: String::new(),
        held_at: None,
    };
    let refund = ticketer_contract::PaymentSettlement {
        booking_id: uuid::Uuid::nil(),
        payment_id: uuid::Uuid::nil(),
        customer_id: Some(uuid::Uuid::nil()),
        amount: Money::from_minor(5000),
        currency: "EUR".into(),
        provider_reference: Some("re_sample".into()),
    };
    let news = match kind {
        NotificationType::Welcome => News::Welcome,
        NotificationType::EventPublished => News::EventPublished(&event),
        NotificationType::EventCancelled => News::EventCancelled(&event),
        NotificationType::BookingConfirmed
        | NotificationType::BookingFailed
        | NotificationType::BookingCancelled => News::Booking(kind, &booking, Some(&event)),
        NotificationType::PaymentRefunded => News::Refunded(&refund),
    };
    crate::compose::context(&to, &news)
}

/// Whether `template` may stand for `kind`: within the size limits, and
/// rendering its type's sample context.
pub fn validate(kind: NotificationType, channel: &str, template: &Template) -> Result<(), TemplateError> {
    for (part, value, max) in [
        ("subject", &template.subject, MAX_SUBJECT),
        ("text", &template.text, MAX_BODY),
        ("html", &template.html, MAX_BODY),
    ] {
        // Only email has an HTML body.
        let may_be_empty = part == "html" && channel != "EMAIL";
        if (value.trim().is_empty() && !may_be_empty) || value.len() > max {
            return Err(TemplateError {
                part,
                message: format!("must hold between 1 and {max} bytes"),
            });
        }
    }
    render(template, &sample_context(kind)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_renders_its_sample() {
        for kind in NotificationType::ALL {
            validate(kind, "EMAIL", &default_for(kind)).unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        }
    }

    #[test]
    fn a_template_that_does_not_render_is_refused_naming_its_part() {
        let good = default_for(NotificationType::BookingFailed);
        let cases = [
            (
                "subject",
                Template {
                    subject: "{{ booking.nope }}".into(),
                    ..good.clone()
                },
            ),
            (
                "text",
                Template {
                    text: "{% for x in %}".into(),
                    ..good.clone()
                },
            ),
            (
                "html",
                Template {
                    html: "{{ recipient.first_name | no_such_filter }}".into(),
                    ..good.clone()
                },
            ),
            (
                "subject",
                Template {
                    subject: "  ".into(),
                    ..good.clone()
                },
            ),
            (
                "text",
                Template {
                    text: "x".repeat(MAX_BODY + 1),
                    ..good.clone()
                },
            ),
        ];
        for (part, t) in cases {
            assert_eq!(
                validate(NotificationType::BookingFailed, "EMAIL", &t)
                    .unwrap_err()
                    .part,
                part
            );
        }
        // A booking's variables do not exist for a welcome.
        let welcome = Template {
            subject: "{{ booking.id }}".into(),
            ..default_for(NotificationType::Welcome)
        };
        assert_eq!(
            validate(NotificationType::Welcome, "EMAIL", &welcome)
                .unwrap_err()
                .part,
            "subject"
        );
    }

    #[test]
    fn the_html_body_escapes_and_the_subject_stays_one_line() {
        let t = Template {
            subject: "Hi\r\nBcc: {{ recipient.first_name }}".into(),
            text: "{{ recipient.first_name }}".into(),
            html: "<b>{{ recipient.first_name }}</b>".into(),
        };
        let context = serde_json::json!({"recipient": {"first_name": "<script>x</script>"}});
        let c = render(&t, &context).unwrap();
        assert_eq!(c.subject, "Hi Bcc: <script>x</script>");
        assert!(
            c.html.contains("<b>&lt;script&gt;x&lt;&#x2f;script&gt;</b>"),
            "{}",
            c.html
        );
        assert!(c.text.starts_with("<script>x</script>"), "plain text is not HTML");
    }
}
