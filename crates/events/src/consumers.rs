//! What the events service hears back: bookings confirmed and cancelled,
//! for the organizer's sales figures.

use serde::Deserialize;
use ticketer_bus::{Envelope, HandleError};
use ticketer_db::AnyConnection;

#[derive(Debug, Deserialize)]
struct BookingNews {
    event_id: i64,
    number_of_tickets: i64,
}

/// Keeps `tickets_sold` in step with confirmed bookings. The inbox makes
/// each announcement count once.
pub struct Sales;

#[async_trait::async_trait]
impl ticketer_db::MessageHandler for Sales {
    async fn handle(&self, tx: &mut AnyConnection, msg: &Envelope) -> Result<(), HandleError> {
        let news: BookingNews = msg.payload_as()?;
        let delta = match msg.kind.as_str() {
            "BookingConfirmed" => news.number_of_tickets,
            "BookingCancelled" => -news.number_of_tickets,
            _ => return Ok(()),
        };
        crate::store::add_sold(tx, news.event_id, delta)
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))
    }
}
