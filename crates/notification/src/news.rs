//! What the notification service hears: registrations (contacts), event
//! changes (its copy of each event), booking outcomes and refunds. Each turns into
//! notifications stored in the same transaction as the inbox entry, so a
//! redelivered message creates nothing twice; sending is the delivery
//! worker's business, after the commit.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{
    incoming, BookingCancelled, BookingConfirmed, BookingFailed, BookingSnapshot, EventCancelled,
    EventCreated, EventPublished, EventSnapshot, EventUpdated, Money, PaymentRefunded, UserRegistered,
};
use ticketer_db::AnyConnection;
use tokio::sync::Notify;

use crate::{
    compose::{context, Composed, Contact, EventInfo, News, NotificationType},
    store::{self, Holding, NewNotification, Person, Preferences},
    templates::{self, Template, Wording},
};

incoming!(
    /// A booking's outcome: a sale sends these by the hundred, so a run of
    /// them is told together.
    // The variants are the messages' own type names.
    #[allow(clippy::enum_variant_names)]
    enum Outcome {
        BookingConfirmed,
        BookingFailed,
        BookingCancelled,
    }
);

incoming!(
    /// Everything else a notification queue is bound to: these are few,
    /// and applied one at a time.
    enum Other {
        UserRegistered,
        EventCreated,
        EventPublished,
        EventUpdated,
        EventCancelled,
        PaymentRefunded,
    }
);

/// The channels, as stored with each notification.
pub const EMAIL: &str = "EMAIL";
pub const SMS: &str = "SMS";
pub const PUSH: &str = "PUSH";

/// Turns what it hears into stored notifications and wakes the delivery
/// workers once some that wait to be sent are committed (a sale's outcomes
/// for buyers without an address wake nobody: each wake is a claim per
/// channel).
pub struct Listener {
    wake: Arc<Notify>,
    /// The batch being applied stored notifications to send. One batch at
    /// a time per queue, and each queue has its own listener; a wake
    /// missed after a failed batch is made up by the workers' poll.
    due: AtomicBool,
}

impl Listener {
    pub fn new(wake: Arc<Notify>) -> Self {
        Listener {
            wake,
            due: AtomicBool::new(false),
        }
    }
}

/// A stored notification still to be sent.
const PENDING: &str = "PENDING";

/// How many of the notifications stored wait to be sent.
type Due = usize;

fn info(s: &EventSnapshot) -> EventInfo {
    EventInfo {
        event_id: s.event_id,
        name: s.event_name.clone(),
        location: s.location.clone(),
        event_date: s.event_date.clone(),
        start_time: s.start_time.clone(),
        organizer: s.organizer.to_string(),
    }
}

/// Someone this service has no address for, to word a record with.
fn nobody(user_id: &str) -> Contact {
    Contact {
        user_id: user_id.to_string(),
        email: String::new(),
        first_name: String::new(),
        last_name: String::new(),
    }
}

/// The record of telling `recipient_id` through `channel` at `address`,
/// keyed by what it is told once for (see [`Telling::once_for`]). Without
/// an address (no contact known for an email) it is a FAILED record saying
/// so: an address is never guessed.
#[allow(clippy::too_many_arguments)]
fn record(
    once_for: &str,
    recipient_id: &str,
    channel: &'static str,
    address: Option<&str>,
    kind: NotificationType,
    words: Composed,
    event_id: Option<i64>,
    booking_id: Option<String>,
) -> NewNotification {
    let (recipient, status, last_error) = match address {
        Some(a) => (a.to_string(), PENDING, None),
        None => (
            String::new(),
            "FAILED",
            Some("no address is known for this user".to_string()),
        ),
    };
    // Email's key is the one it always had; other channels add their name.
    let dedup_key = match channel {
        EMAIL => format!("{once_for}:{recipient_id}:{}", kind.as_str()),
        other => format!("{once_for}:{recipient_id}:{}:{other}", kind.as_str()),
    };
    let body_html = if channel == EMAIL {
        words.html
    } else {
        String::new()
    };
    NewNotification {
        dedup_key,
        recipient_id: Some(recipient_id.to_string()),
        recipient,
        channel,
        notification_type: kind.as_str(),
        subject: words.subject,
        body_text: words.text,
        body_html,
        status,
        last_error,
        event_id,
        booking_id,
    }
}

/// One person to tell one piece of news, because of one message.
struct Telling<'a> {
    cause: &'a Envelope,
    recipient_id: String,
    news: News<'a>,
    event_id: Option<i64>,
    booking_id: Option<String>,
}

impl Telling<'_> {
    /// What this news is told once for: the message that brought it,
    /// except a refund. A booking is refunded in full at most once, but
    /// the refund may be answered more than once (a RefundPayment sent
    /// again after a timeout gets a PaymentRefunded of its own), so a
    /// refund is told once per booking.
    fn once_for(&self) -> String {
        match &self.news {
            News::Refunded(r) => format!("refund:{}", r.booking_id),
            _ => self.cause.message_id.to_string(),
        }
    }
}

/// Stores the notification of each telling on each channel its recipient
/// chose. However many they are, the recipients' contacts and
/// preferences, the templates and the inserts are a few statements: a
/// sale's outcomes arrive by the hundred.
async fn tell_all(tx: &mut AnyConnection, tellings: &[Telling<'_>]) -> Result<Due, HandleError> {
    if tellings.is_empty() {
        return Ok(0);
    }
    let mut recipients: Vec<&str> = tellings.iter().map(|t| t.recipient_id.as_str()).collect();
    recipients.sort_unstable();
    recipients.dedup();
    let people = store::people(tx, &recipients).await?;
    store_told(tx, tellings, &people).await
}

/// The channels `wants` chose, each with the address it goes to (None:
/// an email to someone whose address this service never heard).
fn chosen<'a>(wants: &'a Preferences, contact: Option<&'a Contact>) -> Vec<(&'static str, Option<&'a str>)> {
    [
        (EMAIL, wants.email, contact.map(|c| c.email.as_str())),
        (SMS, wants.sms, wants.phone_number.as_deref()),
        (PUSH, wants.push, wants.push_token.as_deref()),
    ]
    .into_iter()
    .filter(|(_, on, _)| *on)
    .map(|(channel, _, address)| (channel, address))
    .collect()
}

/// Renders and stores the notification of each telling on each channel
/// its recipient, as `people` knows them, chose (email unless turned off);
/// an email to someone `people` does not know is a FAILED record (no
/// address is guessed). Each channel's template of each type is read and
/// parsed once for all.
async fn store_told(
    tx: &mut AnyConnection,
    tellings: &[Telling<'_>],
    people: &HashMap<String, Person>,
) -> Result<Due, HandleError> {
    let defaults = Preferences::default();
    let wants = |t: &Telling| people.get(&t.recipient_id).map_or(&defaults, |p| &p.preferences);
    let mut kinds: Vec<NotificationType> = tellings.iter().map(|t| t.news.kind()).collect();
    kinds.sort_unstable_by_key(|k| k.as_str());
    kinds.dedup();
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let mut channels: Vec<&'static str> = tellings
        .iter()
        .flat_map(|t| chosen(wants(t), None).into_iter().map(|(c, _)| c))
        .collect();
    channels.sort_unstable();
    channels.dedup();
    let shipped: HashMap<NotificationType, Template> =
        kinds.iter().map(|k| (*k, templates::default_for(*k))).collect();
    let mut stored = HashMap::with_capacity(channels.len());
    for channel in &channels {
        stored.insert(*channel, store::templates(tx, &names, channel).await?);
    }
    let mut wordings = HashMap::with_capacity(kinds.len() * channels.len());
    for (kind, template) in &shipped {
        for channel in &channels {
            let custom = stored[channel].get(kind.as_str());
            wordings.insert(
                (*kind, *channel),
                Wording::new(*kind, custom, template).map_err(unrenderable)?,
            );
        }
    }
    let mut rows = Vec::with_capacity(tellings.len());
    for t in tellings {
        let person = people.get(&t.recipient_id);
        let contact = person.and_then(|p| p.contact.as_ref());
        let chosen = chosen(wants(t), contact);
        if chosen.is_empty() {
            continue;
        }
        let to = contact.cloned().unwrap_or_else(|| nobody(&t.recipient_id));
        let kind = t.news.kind();
        let context = context(&to, &t.news);
        let once_for = t.once_for();
        for (channel, address) in chosen {
            let words = wordings[&(kind, channel)]
                .render(&context)
                .map_err(unrenderable)?;
            rows.push(record(
                &once_for,
                &t.recipient_id,
                channel,
                address,
                kind,
                words,
                t.event_id,
                t.booking_id.clone(),
            ));
        }
    }
    store::insert_all(tx, &rows).await?;
    Ok(rows.iter().filter(|r| r.status == PENDING).count())
}

/// Tells the customers of a run of booking outcomes, and keeps the copy of
/// who holds tickets for what current, a few statements for the run.
async fn tell_outcomes(
    tx: &mut AnyConnection,
    outcomes: &[(&Envelope, NotificationType, BookingSnapshot)],
) -> Result<Due, HandleError> {
    if outcomes.is_empty() {
        return Ok(0);
    }
    let of = |kind: NotificationType| outcomes.iter().filter(move |(_, k, _)| *k == kind);
    let holdings: Vec<Holding> = of(NotificationType::BookingConfirmed)
        .map(|(_, _, b)| Holding {
            booking_id: b.booking_id.to_string(),
            event_id: b.event_id,
            customer_id: b.customer_id.to_string(),
        })
        .collect();
    store::hold_all(tx, &holdings).await?;
    // A booking confirmed and cancelled in the same run was held first.
    let cancelled: Vec<String> = of(NotificationType::BookingCancelled)
        .map(|(_, _, b)| b.booking_id.to_string())
        .collect();
    store::release_all(tx, &cancelled).await?;
    let mut event_ids: Vec<i64> = outcomes.iter().map(|(_, _, b)| b.event_id).collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    let events = store::events(tx, &event_ids).await?;
    let tellings: Vec<Telling> = outcomes
        .iter()
        .map(|(cause, kind, b)| Telling {
            cause,
            recipient_id: b.customer_id.to_string(),
            news: News::Booking(*kind, b, events.get(&b.event_id)),
            event_id: Some(b.event_id),
            booking_id: Some(b.booking_id.to_string()),
        })
        .collect();
    tell_all(tx, &tellings).await
}

/// Tells one person one piece of news.
async fn tell(
    tx: &mut AnyConnection,
    cause: &Envelope,
    recipient_id: &str,
    news: News<'_>,
    event_id: Option<i64>,
) -> Result<Due, HandleError> {
    let telling = Telling {
        cause,
        recipient_id: recipient_id.to_string(),
        news,
        event_id,
        booking_id: None,
    };
    tell_all(tx, std::slice::from_ref(&telling)).await
}

/// Every holder of the cancelled event told once: their contacts and
/// preferences read in one statement, the template parsed once, the
/// notifications stored a few hundred per statement, all in the message's
/// transaction; the delivery worker then sends them at its own pace.
async fn tell_holders(
    tx: &mut AnyConnection,
    cause: &Envelope,
    event: &EventInfo,
) -> Result<Due, HandleError> {
    let holders = store::holders_to_tell(tx, event.event_id).await?;
    let tellings: Vec<Telling> = holders
        .keys()
        .map(|holder| Telling {
            cause,
            recipient_id: holder.clone(),
            news: News::EventCancelled(event),
            event_id: Some(event.event_id),
            booking_id: None,
        })
        .collect();
    store_told(tx, &tellings, &holders).await
}

/// The shipped templates render every context (tested): this is a bug.
fn unrenderable(e: templates::TemplateError) -> HandleError {
    HandleError::Permanent(format!(
        "the shipped {} template does not render: {}",
        e.part, e.message
    ))
}

impl Outcome {
    fn split(self) -> (NotificationType, BookingSnapshot) {
        match self {
            Outcome::BookingConfirmed(BookingConfirmed(b)) => (NotificationType::BookingConfirmed, b),
            Outcome::BookingFailed(BookingFailed(b)) => (NotificationType::BookingFailed, b),
            Outcome::BookingCancelled(BookingCancelled(b)) => (NotificationType::BookingCancelled, b),
        }
    }
}

/// Anything but a booking's outcome, one message at a time: these are few.
async fn apply(tx: &mut AnyConnection, msg: &Envelope, other: Other) -> Result<Due, HandleError> {
    match other {
        Other::UserRegistered(u) => {
            let contact = Contact {
                user_id: u.user_id.to_string(),
                email: u.email,
                first_name: u.first_name,
                last_name: u.last_name,
            };
            store::save_contact(tx, &contact).await?;
            tell(tx, msg, &contact.user_id, News::Welcome, None).await
        }
        Other::EventCreated(EventCreated(s)) | Other::EventUpdated(EventUpdated(s)) => {
            store::save_event(tx, &info(&s), s.version).await?;
            Ok(0)
        }
        Other::EventPublished(EventPublished(s)) => {
            let event = info(&s);
            store::save_event(tx, &event, s.version).await?;
            tell(
                tx,
                msg,
                &event.organizer,
                News::EventPublished(&event),
                Some(s.event_id),
            )
            .await
        }
        Other::EventCancelled(EventCancelled(s)) => {
            let event = info(&s);
            store::save_event(tx, &event, s.version).await?;
            tell_holders(tx, msg, &event).await
        }
        Other::PaymentRefunded(PaymentRefunded(refund)) => {
            // A refund of nothing (nothing was taken) is not news; one
            // without its customer (written before they were carried)
            // has nobody to tell.
            let Some(customer) = refund.customer_id.filter(|_| refund.amount > Money::ZERO) else {
                return Ok(0);
            };
            let telling = Telling {
                cause: msg,
                recipient_id: customer.to_string(),
                news: News::Refunded(&refund),
                event_id: None,
                booking_id: Some(refund.booking_id.to_string()),
            };
            tell_all(tx, std::slice::from_ref(&telling)).await
        }
    }
}

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for Listener {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        self.handle_all(tx, &[msg]).await
    }

    /// In the batch's order, except that a run of booking outcomes (the
    /// bulk of a sale) is told together; any other message is applied
    /// after the outcomes before it and before those after it.
    async fn handle_all(&self, tx: &mut AnyConnection, msgs: &[&Envelope]) -> Result<(), HandleError> {
        let mut run = Vec::new();
        let mut due = 0;
        for msg in msgs {
            if let Some(outcome) = msg.decode::<Outcome>()? {
                let (kind, b) = outcome.split();
                run.push((*msg, kind, b));
            } else if let Some(other) = msg.decode::<Other>()? {
                due += tell_outcomes(tx, &run).await?;
                run.clear();
                due += apply(tx, msg, other).await?;
            }
        }
        due += tell_outcomes(tx, &run).await?;
        if due > 0 {
            self.due.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn committed(&self, _batch: &[&Envelope]) {
        if self.due.swap(false, Ordering::Relaxed) {
            crate::delivery::wake_workers(&self.wake);
        }
    }
}

#[cfg(test)]
mod tests;
