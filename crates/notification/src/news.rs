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
    templates,
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

/// Stores the notification of `news` for `recipient_id`, keyed by the
/// message that caused it. Someone this service has no address for gets
/// a FAILED record saying so: an address is never guessed.
async fn tell(
    tx: &mut AnyConnection,
    cause: &Envelope,
    recipient_id: &str,
    news: &News<'_>,
    event_id: Option<i64>,
    booking_id: Option<String>,
) -> Result<(), HandleError> {
    let kind = news.kind();
    if !store::preferences(tx, recipient_id).await?.email {
        // Email is the only channel so far, and this user turned it off.
        return Ok(());
    }
    let contact = store::contact(tx, recipient_id).await?;
    let (recipient, composed, status, error) = match &contact {
        Some(c) => (c.email.clone(), words(tx, c, news).await?, "PENDING", None),
        None => {
            let nobody = Contact {
                user_id: recipient_id.to_string(),
                email: String::new(),
                first_name: String::new(),
                last_name: String::new(),
            };
            (
                String::new(),
                compose(&nobody, news),
                "FAILED",
                Some("no address is known for this user".to_string()),
            )
        }
    };
    store::insert(
        tx,
        &NewNotification {
            dedup_key: format!("{}:{recipient_id}:{}", cause.message_id, kind.as_str()),
            recipient_id: Some(recipient_id.to_string()),
            recipient,
            channel: EMAIL,
            notification_type: kind.as_str(),
            subject: composed.subject,
            body_text: composed.text,
            body_html: composed.html,
            status,
            last_error: error,
            event_id,
            booking_id,
        },
    )
    .await?;
    Ok(())
}

/// The words of `news` for `to`: the administrator's template when there
/// is one (it rendered a sample when saved; should it fail on real data,
/// the shipped words go out instead of nothing).
async fn words(tx: &mut AnyConnection, to: &Contact, news: &News<'_>) -> Result<Composed, HandleError> {
    let kind = news.kind();
    if let Some(template) = store::template(tx, kind.as_str(), EMAIL).await? {
        match templates::render(&template, &context(to, news)) {
            Ok(words) => return Ok(words),
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), part = e.part, error = %e.message, "template did not render; the default is used")
            }
        }
    }
    Ok(compose(to, news))
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
                // Every holder once, however many bookings they hold; one
                // transaction stores them all, the delivery worker sends
                // them at its own pace.
                for holder in store::holders(tx, s.event_id).await? {
                    tell(
                        tx,
                        msg,
                        &holder,
                        &News::EventCancelled(&event),
                        Some(s.event_id),
                        None,
                    )
                    .await?;
                }
                Ok(())
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
    use ticketer_contract::{BookingSnapshot, BookingStatus, FailureReason};
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
}
