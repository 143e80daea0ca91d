//! The parts of an event's life no HTTP request drives: completion once it
//! is over, announced through the outbox.

use chrono::{TimeZone, Utc};
use ticketer_events::{domain::RawDetails, EventsService, MIGRATIONS};
use ticketer_http::{AuthUser, Role};
use ticketer_testkit::TestDatabase;

fn organizer() -> AuthUser {
    AuthUser {
        id: uuid::Uuid::new_v4(),
        email: "o@example.com".into(),
        roles: vec![Role::Organizer],
    }
}

fn details(date: &str, end: &str) -> RawDetails {
    RawDetails {
        event_name: "Gig".into(),
        description: String::new(),
        category: "Music".into(),
        location: "Here".into(),
        event_date: date.into(),
        start_time: "18:00".into(),
        end_time: end.into(),
        ticket_capacity: 10,
        ticket_price: "10".parse().unwrap(),
        currency: "EUR".into(),
    }
}

#[tokio::test]
async fn published_events_complete_once_they_are_over() {
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("events", MIGRATIONS).await.unwrap();
    let svc = EventsService::new(db.clone());
    let who = organizer();

    let early = svc.create(&who, details("2031-06-01", "20:00")).await.unwrap();
    let late = svc.create(&who, details("2031-06-01", "23:00")).await.unwrap();
    let draft = svc.create(&who, details("2031-05-01", "20:00")).await.unwrap();
    svc.publish(&who, early.id).await.unwrap();
    svc.publish(&who, late.id).await.unwrap();

    // 21:00 on the day: only the event that ended at 20:00 is over.
    let at = Utc.with_ymd_and_hms(2031, 6, 1, 21, 0, 0).unwrap();
    assert_eq!(svc.complete_finished(at).await.unwrap(), 1);
    let status = |id| {
        let svc = svc.clone();
        let who = who.clone();
        async move { svc.get(id, Some(&who)).await.unwrap().status.as_str() }
    };
    assert_eq!(status(early.id).await, "COMPLETED");
    assert_eq!(status(late.id).await, "PUBLISHED");
    assert_eq!(status(draft.id).await, "DRAFT", "drafts never complete");

    // A completed event can no longer be cancelled, and nothing completes twice.
    assert!(svc.cancel(&who, early.id).await.is_err());
    let next_day = Utc.with_ymd_and_hms(2031, 6, 2, 0, 0, 0).unwrap();
    assert_eq!(svc.complete_finished(next_day).await.unwrap(), 1);

    let (completed,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE routing_key = 'EventCompleted'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(completed, 2);
}
