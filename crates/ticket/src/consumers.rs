//! What the ticket service hears from the events service: the event as it
//! now stands, at a version. Snapshots are applied only if newer than what
//! is stored, so duplicates and reordering change nothing.

use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{EventStatus, SaleNews};
use ticketer_db::AnyConnection;

use crate::{
    inventory::Counters,
    store::{self, Inventory, SaleStatus},
};

pub struct EventFeed;

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for EventFeed {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        let Some(news) = msg.decode::<SaleNews>()? else {
            return Ok(());
        };
        let e = news.snapshot();
        let wanted = match e.status {
            EventStatus::Published => SaleStatus::OnSale,
            EventStatus::Cancelled => SaleStatus::Cancelled,
            EventStatus::Completed => SaleStatus::Closed,
            // Drafts have nothing on sale yet.
            EventStatus::Draft => return Ok(()),
        };
        let current = store::lock(tx, e.event_id).await?;
        let next = match current {
            None if wanted == SaleStatus::OnSale => {
                let fresh = Inventory {
                    event_id: e.event_id,
                    organizer: e.organizer.to_string(),
                    status: SaleStatus::OnSale,
                    counters: Counters::new(e.ticket_capacity),
                    price_minor: e.ticket_price.minor(),
                    currency: e.currency,
                    event_date: e.event_date,
                    event_version: e.version,
                };
                if store::insert(tx, &fresh).await? {
                    tracing::info!(
                        event_id = e.event_id,
                        capacity = e.ticket_capacity,
                        "inventory on sale"
                    );
                    return Ok(());
                }
                // Created concurrently: let a retry apply this snapshot as an update.
                return Err(HandleError::Transient("inventory created concurrently".into()));
            }
            // Cancelled or completed before it was ever on sale here.
            None => return Ok(()),
            Some(inv) if inv.event_version >= e.version => return Ok(()),
            Some(inv) => Inventory {
                status: wanted,
                counters: inv.counters.resize(e.ticket_capacity),
                price_minor: e.ticket_price.minor(),
                currency: e.currency,
                event_date: e.event_date,
                event_version: e.version,
                ..inv
            },
        };
        store::update(tx, &next).await?;
        if next.status == SaleStatus::Cancelled {
            let n = store::cancel_tickets(tx, e.event_id).await?;
            tracing::info!(
                event_id = e.event_id,
                tickets = n,
                "event cancelled; tickets cancelled"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use ticketer_db::MessageHandler;
    use ticketer_testkit::TestDatabase;
    use uuid::Uuid;

    use super::*;

    fn snapshot(kind: &str, status: &str, capacity: i64, version: i64) -> Envelope {
        let payload = json!({
            "event_id": 7, "event_name": "Gig", "category": "Music", "location": "Here",
            "event_date": "2031-01-01", "start_time": "18:00", "end_time": "20:00",
            "ticket_capacity": capacity, "ticket_price": "12.50", "currency": "EUR",
            "organizer": Uuid::nil(), "status": status, "version": version
        });
        Envelope::new(kind, &payload).unwrap()
    }

    async fn apply(db: &ticketer_db::Db, env: Envelope) {
        let mut tx = db.begin().await.unwrap();
        EventFeed.handle(&mut tx, &env).await.unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn snapshots_apply_in_version_order_whatever_order_they_arrive_in() {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("ticket", store::MIGRATIONS).await.unwrap();

        // A draft has nothing on sale.
        apply(&db, snapshot("EventCreated", "DRAFT", 100, 1)).await;
        assert_eq!(store::get(&db, 7).await.unwrap(), None);

        // The update (v3) overtakes the publish (v2): the newer snapshot wins.
        apply(&db, snapshot("EventUpdated", "PUBLISHED", 150, 3)).await;
        apply(&db, snapshot("EventPublished", "PUBLISHED", 100, 2)).await;
        let inv = store::get(&db, 7).await.unwrap().unwrap();
        assert_eq!(
            (inv.counters, inv.status, inv.price_minor),
            (Counters::new(150), SaleStatus::OnSale, 1250)
        );

        // A duplicate of an old message changes nothing; a newer one does.
        apply(&db, snapshot("EventUpdated", "PUBLISHED", 90, 3)).await;
        assert_eq!(store::get(&db, 7).await.unwrap().unwrap().counters.capacity, 150);
        apply(&db, snapshot("EventCancelled", "CANCELLED", 150, 4)).await;
        let inv = store::get(&db, 7).await.unwrap().unwrap();
        assert_eq!((inv.status, inv.event_version), (SaleStatus::Cancelled, 4));
        assert!(inv.counters.is_consistent());
    }
}
