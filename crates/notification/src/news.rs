//! What the notification service hears: registrations (contacts), event
//! changes (its copy of each event) and booking outcomes. Each turns into
//! notifications stored in the same transaction as the inbox entry, so a
//! redelivered message creates nothing twice; sending is the delivery
//! worker's business, after the commit.

use std::sync::Arc;

use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{
    incoming, BookingCancelled, BookingConfirmed, BookingFailed, EventCancelled, EventCreated,
    EventPublished, EventSnapshot, EventUpdated, UserRegistered,
};
use ticketer_db::AnyConnection;
use tokio::sync::Notify;

use crate::{
    compose::{compose, context, Composed, Contact, EventInfo, News, NotificationType},
    store::{self, NewNotification},
    templates::{self, Wording},
};

incoming!(
    /// Every message a notification queue is bound to.
    enum Heard {
        UserRegistered,
        EventCreated,
        EventPublished,
        EventUpdated,
        EventCancelled,
        BookingConfirmed,
        BookingFailed,
        BookingCancelled,
    }
);

/// The only channel so far.
pub const EMAIL: &str = "EMAIL";

/// Turns what it hears into stored notifications and wakes the delivery
/// worker once they are committed.
pub struct Listener {
    pub wake: Arc<Notify>,
}

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

/// The record of telling `recipient_id`, keyed by the message that caused
/// it. Someone with no known contact gets a FAILED record saying so: an
/// address is never guessed.
fn record(
    cause: &Envelope,
    recipient_id: &str,
    contact: Option<&Contact>,
    kind: NotificationType,
    words: Composed,
    event_id: Option<i64>,
    booking_id: Option<String>,
) -> NewNotification {
    let (recipient, status, last_error) = match contact {
        Some(c) => (c.email.clone(), "PENDING", None),
        None => (
            String::new(),
            "FAILED",
            Some("no address is known for this user".to_string()),
        ),
    };
    NewNotification {
        dedup_key: format!("{}:{recipient_id}:{}", cause.message_id, kind.as_str()),
        recipient_id: Some(recipient_id.to_string()),
        recipient,
        channel: EMAIL,
        notification_type: kind.as_str(),
        subject: words.subject,
        body_text: words.text,
        body_html: words.html,
        status,
        last_error,
        event_id,
        booking_id,
    }
}

/// Stores the notification of `news` for `recipient_id`, unless they
/// turned email off.
async fn tell(
    tx: &mut AnyConnection,
    cause: &Envelope,
    recipient_id: &str,
    news: &News<'_>,
    event_id: Option<i64>,
    booking_id: Option<String>,
) -> Result<(), HandleError> {
    if !store::preferences(tx, recipient_id).await?.email {
        // Email is the only channel so far, and this user turned it off.
        return Ok(());
    }
    let contact = store::contact(tx, recipient_id).await?;
    let words = match &contact {
        Some(c) => words(tx, c, news).await?,
        None => compose(&nobody(recipient_id), news),
    };
    let n = record(
        cause,
        recipient_id,
        contact.as_ref(),
        news.kind(),
        words,
        event_id,
        booking_id,
    );
    store::insert(tx, &n).await?;
    Ok(())
}

/// Every holder of the cancelled event told once: their contacts and
/// preferences read in one statement, the template parsed once, the
/// notifications stored a few hundred per statement, all in the message's
/// transaction; the delivery worker then sends them at its own pace.
async fn tell_holders(
    tx: &mut AnyConnection,
    cause: &Envelope,
    event: &EventInfo,
) -> Result<(), HandleError> {
    let kind = NotificationType::EventCancelled;
    let stored = store::template(tx, kind.as_str(), EMAIL).await?;
    let shipped = templates::default_for(kind);
    let wording = Wording::new(kind, stored.as_ref(), &shipped).map_err(unrenderable)?;
    let news = News::EventCancelled(event);
    let mut rows = Vec::new();
    for h in store::holders_to_tell(tx, event.event_id).await? {
        if !h.wants_email {
            continue;
        }
        let to = h.contact.clone().unwrap_or_else(|| nobody(&h.user_id));
        let context = context(&to, &news);
        let words = wording.render(&context).map_err(unrenderable)?;
        let n = record(
            cause,
            &h.user_id,
            h.contact.as_ref(),
            kind,
            words,
            Some(event.event_id),
            None,
        );
        rows.push(n);
    }
    store::insert_all(tx, &rows).await?;
    Ok(())
}

/// The words of `news` for `to`, from the administrator's template when
/// there is one.
async fn words(tx: &mut AnyConnection, to: &Contact, news: &News<'_>) -> Result<Composed, HandleError> {
    let kind = news.kind();
    let stored = store::template(tx, kind.as_str(), EMAIL).await?;
    let shipped = templates::default_for(kind);
    let wording = Wording::new(kind, stored.as_ref(), &shipped).map_err(unrenderable)?;
    wording.render(&context(to, news)).map_err(unrenderable)
}

/// The shipped templates render every context (tested): this is a bug.
fn unrenderable(e: templates::TemplateError) -> HandleError {
    HandleError::Permanent(format!(
        "the shipped {} template does not render: {}",
        e.part, e.message
    ))
}

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for Listener {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        let Some(heard) = msg.decode::<Heard>()? else {
            return Ok(());
        };
        match heard {
            Heard::UserRegistered(u) => {
                let contact = Contact {
                    user_id: u.user_id.to_string(),
                    email: u.email,
                    first_name: u.first_name,
                    last_name: u.last_name,
                };
                store::save_contact(tx, &contact).await?;
                tell(tx, msg, &contact.user_id, &News::Welcome, None, None).await
            }
            Heard::EventCreated(EventCreated(s)) | Heard::EventUpdated(EventUpdated(s)) => {
                store::save_event(tx, &info(&s), s.version).await?;
                Ok(())
            }
            Heard::EventPublished(EventPublished(s)) => {
                let event = info(&s);
                store::save_event(tx, &event, s.version).await?;
                let news = News::EventPublished(&event);
                tell(tx, msg, &event.organizer, &news, Some(s.event_id), None).await
            }
            Heard::EventCancelled(EventCancelled(s)) => {
                let event = info(&s);
                store::save_event(tx, &event, s.version).await?;
                tell_holders(tx, msg, &event).await
            }
            Heard::BookingConfirmed(BookingConfirmed(b)) => {
                let (booking, customer) = (b.booking_id.to_string(), b.customer_id.to_string());
                store::hold(tx, &booking, b.event_id, &customer).await?;
                let event = store::event(tx, b.event_id).await?;
                let news = News::Booking(NotificationType::BookingConfirmed, &b, event.as_ref());
                tell(tx, msg, &customer, &news, Some(b.event_id), Some(booking)).await
            }
            Heard::BookingFailed(BookingFailed(b)) => {
                let event = store::event(tx, b.event_id).await?;
                let news = News::Booking(NotificationType::BookingFailed, &b, event.as_ref());
                let customer = b.customer_id.to_string();
                tell(
                    tx,
                    msg,
                    &customer,
                    &news,
                    Some(b.event_id),
                    Some(b.booking_id.to_string()),
                )
                .await
            }
            Heard::BookingCancelled(BookingCancelled(b)) => {
                let (booking, customer) = (b.booking_id.to_string(), b.customer_id.to_string());
                store::release(tx, &booking).await?;
                let event = store::event(tx, b.event_id).await?;
                let news = News::Booking(NotificationType::BookingCancelled, &b, event.as_ref());
                tell(tx, msg, &customer, &news, Some(b.event_id), Some(booking)).await
            }
        }
    }

    fn committed(&self, _batch: &[Envelope]) {
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use ticketer_contract::{BookingSnapshot, BookingStatus, EventSnapshot, FailureReason};
    use ticketer_db::{testing::TestDatabase, Db, MessageHandler};
    use uuid::Uuid;

    use super::*;
    use crate::store::{Filter, Preferences};

    async fn registered(db: &Db, listener: &Listener, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        let msg = Envelope::of(&UserRegistered {
            user_id: id,
            email: format!("{name}@example.com"),
            first_name: name.into(),
            last_name: "Test".into(),
            roles: vec![],
        });
        heard(db, listener, &msg).await;
        id
    }

    async fn heard(db: &Db, listener: &Listener, msg: &Envelope) {
        let mut tx = db.begin().await.unwrap();
        listener.handle(&mut tx, msg).await.unwrap();
        tx.commit().await.unwrap();
    }

    fn failed(customer: Uuid) -> Envelope {
        Envelope::of(&BookingFailed(BookingSnapshot {
            booking_id: Uuid::new_v4(),
            customer_id: customer,
            event_id: 1,
            number_of_tickets: 1,
            status: BookingStatus::Failed,
            ticket_ids: vec![],
            amount: None,
            currency: None,
            failure_reason: Some(FailureReason::PaymentDeclined),
            created_at: String::new(),
            updated_at: String::new(),
            held_at: None,
        }))
    }

    async fn told(db: &Db, user: Uuid) -> Vec<String> {
        let filter = Filter {
            recipient_id: Some(user.to_string()),
            ..Filter::default()
        };
        let (items, _) = store::page(db, &filter, 100, 0).await.unwrap();
        items.into_iter().map(|n| n.notification_type).collect()
    }

    /// Someone who turned email off is not written to; someone else is,
    /// once per message however often it is heard; someone unknown gets a
    /// FAILED record, not a guessed address.
    #[tokio::test]
    async fn who_is_told_and_how_often() {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("notification", crate::MIGRATIONS).await.unwrap();
        let listener = Listener {
            wake: Arc::new(Notify::new()),
        };
        let (ada, carol) = (
            registered(&db, &listener, "ada").await,
            registered(&db, &listener, "carol").await,
        );
        store::save_preferences(&db, &carol.to_string(), Preferences { email: false })
            .await
            .unwrap();

        let ada_failed = failed(ada);
        heard(&db, &listener, &ada_failed).await;
        heard(&db, &listener, &ada_failed).await;
        heard(&db, &listener, &failed(carol)).await;
        assert_eq!(told(&db, ada).await, vec!["BOOKING_FAILED", "WELCOME"]);
        assert_eq!(told(&db, carol).await, vec!["WELCOME"], "email off: nothing more");

        let stranger = Uuid::new_v4();
        heard(&db, &listener, &failed(stranger)).await;
        let filter = Filter {
            recipient_id: Some(stranger.to_string()),
            ..Filter::default()
        };
        let (items, _) = store::page(&db, &filter, 10, 0).await.unwrap();
        assert_eq!(
            (items[0].status.as_str(), items[0].recipient.as_str()),
            ("FAILED", "")
        );
        assert!(items[0].last_error.as_deref().unwrap().contains("no address"));
        db.close().await;
    }

    /// An event with 10,000 ticket holders is cancelled: each is told once
    /// in the message's one transaction (a holder of two bookings once, one
    /// who turned email off not at all, one without an address as FAILED).
    /// (Hearing a message twice adds nothing: `who_is_told_and_how_often`.)
    #[tokio::test]
    async fn ten_thousand_holders_are_told_once_each() {
        // 50,000 passes too (25 s in a debug build); 10,000 keeps the
        // suite's other tests from starving on this box's two cores.
        const HOLDERS: usize = 10_000;
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("notification", crate::MIGRATIONS).await.unwrap();
        let users: Vec<String> = (0..HOLDERS).map(|_| Uuid::new_v4().to_string()).collect();
        let mut tx = db.begin().await.unwrap();
        for chunk in users.chunks(1000) {
            // The last holder has no contact here.
            let known: Vec<&String> = chunk.iter().filter(|u| *u != &users[HOLDERS - 1]).collect();
            let sql = format!(
                "INSERT INTO contacts (user_id, email, first_name, last_name, updated_at) VALUES {}",
                ticketer_db::value_rows(known.len(), 5)
            );
            let mut q = sqlx::query(&sql);
            for u in known {
                q = q
                    .bind(u)
                    .bind(format!("{u}@example.com"))
                    .bind("Holder")
                    .bind("Test")
                    .bind("");
            }
            q.execute(&mut *tx).await.unwrap();
            let sql = format!(
                "INSERT INTO holdings (booking_id, event_id, customer_id) VALUES {}",
                ticketer_db::value_rows(chunk.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for u in chunk {
                q = q.bind(Uuid::new_v4().to_string()).bind(9i64).bind(u);
            }
            q.execute(&mut *tx).await.unwrap();
        }
        store::hold(&mut tx, &Uuid::new_v4().to_string(), 9, &users[0])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        store::save_preferences(&db, &users[1], Preferences { email: false })
            .await
            .unwrap();

        let listener = Listener {
            wake: Arc::new(Notify::new()),
        };
        let cancelled = Envelope::of(&EventCancelled(EventSnapshot {
            event_id: 9,
            event_name: "Big show".into(),
            category: "Music".into(),
            location: "Stadium".into(),
            event_date: "2030-06-01".into(),
            start_time: "19:00".into(),
            end_time: "23:00".into(),
            ticket_capacity: 60_000,
            ticket_price: ticketer_contract::Money::from_minor(5000),
            currency: "EUR".into(),
            organizer: Uuid::new_v4(),
            status: ticketer_contract::EventStatus::Cancelled,
            version: 3,
        }));
        heard(&db, &listener, &cancelled).await;

        let count = |status: &'static str| {
            let db = db.clone();
            async move {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n, COUNT(DISTINCT recipient_id) AS people FROM notifications
                     WHERE notification_type = 'EVENT_CANCELLED' AND status = $1",
                )
                .bind(status)
                .fetch_one(db.pool())
                .await
                .unwrap();
                use ticketer_db::Row;
                (
                    row.try_get::<i64, _>("n").unwrap(),
                    row.try_get::<i64, _>("people").unwrap(),
                )
            }
        };
        let pending = (HOLDERS - 2) as i64;
        assert_eq!(count("PENDING").await, (pending, pending), "everyone once");
        assert_eq!(count("FAILED").await, (1, 1), "the holder without an address");
        let filter = Filter {
            recipient_id: Some(users[7].clone()),
            ..Filter::default()
        };
        let (items, _) = store::page(&db, &filter, 10, 0).await.unwrap();
        assert!(items[0].subject.contains("Big show") && items[0].body_text.contains("Hello Holder"));
        db.close().await;
    }
}
