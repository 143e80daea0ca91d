//! What the events service hears back: bookings confirmed and cancelled,
//! for the organizer's sales figures.

use std::collections::BTreeMap;

use ticketer_bus::{Envelope, HandleError};
use ticketer_contract::{incoming, BookingCancelled, BookingConfirmed};
use ticketer_db::AnyConnection;

incoming!(
    /// The booking news that move an event's sales figure.
    enum SalesNews {
        BookingConfirmed,
        BookingCancelled,
    }
);

/// Keeps `tickets_sold` in step with confirmed bookings. The inbox makes
/// each announcement count once.
pub struct Sales;

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for Sales {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        self.handle_all(tx, &[msg]).await
    }

    /// A batch's news summed per event: one update per event, however many
    /// bookings of a flash sale the batch announces (events in id order).
    async fn handle_all(&self, tx: &mut AnyConnection, msgs: &[&Envelope]) -> Result<(), HandleError> {
        let mut sold: BTreeMap<i64, i64> = BTreeMap::new();
        for msg in msgs {
            let (event_id, delta) = match msg.decode::<SalesNews>()? {
                Some(SalesNews::BookingConfirmed(BookingConfirmed(b))) => (b.event_id, b.number_of_tickets),
                Some(SalesNews::BookingCancelled(BookingCancelled(b))) => (b.event_id, -b.number_of_tickets),
                None => continue,
            };
            *sold.entry(event_id).or_default() += delta;
        }
        for (event_id, delta) in sold.into_iter().filter(|(_, d)| *d != 0) {
            crate::store::add_sold(tx, event_id, delta)
                .await
                .map_err(|e| HandleError::Transient(e.to_string()))?;
        }
        Ok(())
    }
}
