//! Undoing a confirmed booking: cancelled by its customer before the event,
//! or refunded by the event's organizer. Either way the saga refunds the
//! charge and gives the seats back.

use ticketer_http::ApiError;
use uuid::Uuid;

use super::BookingService;
use crate::{
    driver::advance,
    saga::{Input, Stage},
    store::{self, Booking},
};

impl BookingService {
    /// The customer asks to cancel a confirmed booking: refund, then seats back.
    #[tracing::instrument(skip(self), fields(booking_id = %id))]
    pub async fn cancel(&self, customer: Uuid, is_admin: bool, id: Uuid) -> Result<Booking, ApiError> {
        self.undo(id, |b, event| {
            if b.customer_id != customer && !is_admin {
                return Err(ApiError::Forbidden("not your booking".into()));
            }
            if let Some(event) = event {
                let starts = format!("{}T{}", event.event_date, event.start_time);
                if starts <= chrono::Utc::now().format("%Y-%m-%dT%H:%M").to_string() {
                    return Err(ApiError::Conflict(
                        "the event has started; bookings can no longer be cancelled".into(),
                    ));
                }
            }
            Ok(())
        })
        .await
    }

    /// The event's organizer (or an administrator) refunds one confirmed
    /// booking in full, whenever: it ends CANCELLED like a cancellation,
    /// the seats sellable again under new ticket ids, the customer told.
    #[tracing::instrument(skip(self), fields(booking_id = %id))]
    pub async fn refund(&self, user: Uuid, is_admin: bool, id: Uuid) -> Result<Booking, ApiError> {
        self.undo(id, |_, event| {
            let organizes = event.is_some_and(|e| e.organizer == user.to_string());
            if organizes || is_admin {
                Ok(())
            } else {
                Err(ApiError::Forbidden(
                    "only the event's organizer or an administrator refunds its bookings".into(),
                ))
            }
        })
        .await
    }

    /// Cancels a confirmed booking (refund, seats given back) if `allowed`
    /// says the caller may; asked again while it is being undone, the same
    /// answer.
    async fn undo(
        &self,
        id: Uuid,
        allowed: impl FnOnce(&Booking, Option<&store::EventInfo>) -> Result<(), ApiError>,
    ) -> Result<Booking, ApiError> {
        let mut tx = self.db.begin().await?;
        let b = store::lock(&mut tx, id)
            .await?
            .ok_or_else(|| ApiError::NotFound("no such booking".into()))?;
        let event = store::event(&mut tx, b.event_id).await?;
        allowed(&b, event.as_ref())?;
        if b.saga.stage == Stage::Refunding || b.saga.stage == Stage::Cancelled {
            return Ok(b);
        }
        // Confirmed, whether or not the sale is recorded yet.
        if !matches!(b.saga.stage, Stage::Confirmed | Stage::Recording) {
            return Err(ApiError::Conflict(format!(
                "a {} booking cannot be cancelled",
                b.saga.stage.status().as_str()
            )));
        }
        let b = advance(&mut tx, b, Input::CancelRequested, None, self.timeouts)
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        tx.commit().await?;
        self.db.outbox_written();
        Ok(b)
    }
}
