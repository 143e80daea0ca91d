//! Waiting rooms, as the HTTP operations use them: organizers open and
//! close them; buyers join, wait to be admitted, book, and leave, which
//! admits the next. A booking for an event with an open room is taken only
//! from a buyer the room has admitted.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ticketer_cache::{Place, RoomRule};
use ticketer_http::{ApiError, AuthUser, Bearer, FieldError};
use uuid::Uuid;

use super::BookingService;
use crate::store;

/// How often a request waiting in a room looks whether the sale sold out,
/// when it is not woken by an admission.
const SOLD_OUT_RECHECK: Duration = Duration::from_millis(250);

/// How an organizer sets a room.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RoomSettings {
    /// Buyers admitted and not yet done, at most (1 to 10,000).
    pub admitted_at_once: i64,
    /// How long an admitted buyer may take to book before their turn
    /// passes to the next (10 to 3,600 seconds; 120 if not given).
    #[serde(default)]
    pub claim_seconds: Option<i64>,
}

/// An event's waiting room.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoomView {
    pub event_id: i64,
    pub admitted_at_once: u32,
    pub claim_seconds: u64,
}

impl RoomView {
    fn of(event_id: i64, rule: RoomRule) -> Self {
        RoomView {
            event_id,
            admitted_at_once: rule.admitted_at_once,
            claim_seconds: rule.claim.as_secs(),
        }
    }
}

/// Where a buyer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlaceState {
    /// Not admitted yet.
    Waiting,
    /// May book now (also when the event has no room).
    Admitted,
    /// Was admitted, but did not book in time: join again.
    Lapsed,
    /// Nothing is left to sell: no need to wait, or to book.
    SoldOut,
}

/// A buyer's place in an event's waiting room.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlaceView {
    pub event_id: i64,
    pub state: PlaceState,
    /// The buyer's number in the queue (none when the event has no room).
    pub number: Option<u64>,
    /// Numbers before theirs still waiting, while they wait.
    pub ahead: Option<u64>,
    /// While admitted: seconds left to book before the turn passes on.
    pub claim_seconds_left: Option<u64>,
}

impl PlaceView {
    fn of(event_id: i64, place: Place) -> Self {
        let (state, ahead, left) = match place {
            Place::Waiting { ahead, .. } => (PlaceState::Waiting, Some(ahead), None),
            Place::Admitted { claim_left, .. } => (
                PlaceState::Admitted,
                None,
                Some(claim_left.as_secs_f64().ceil() as u64),
            ),
            Place::Lapsed { .. } => (PlaceState::Lapsed, None, None),
        };
        PlaceView {
            event_id,
            state,
            number: Some(place.number()),
            ahead,
            claim_seconds_left: left,
        }
    }

    /// The event has no room: anyone may book.
    fn open(event_id: i64) -> Self {
        PlaceView {
            event_id,
            state: PlaceState::Admitted,
            number: None,
            ahead: None,
            claim_seconds_left: None,
        }
    }
}

fn unavailable(e: ticketer_cache::CacheError) -> ApiError {
    tracing::warn!(error = %e, "waiting room unreachable");
    ApiError::Unavailable("the waiting room cannot be reached; try again shortly".into())
}

impl BookingService {
    /// 404 unless the booking service knows the event; 403 unless `user`
    /// organizes it or is an administrator.
    async fn organizes(&self, user: &AuthUser, event_id: i64) -> Result<(), ApiError> {
        let mut conn = self.db.reading().await?;
        let event = store::event(&mut conn, event_id)
            .await?
            .ok_or_else(|| ApiError::NotFound("no such event".into()))?;
        if event.organizer != user.id.to_string() && !user.is_admin() {
            return Err(ApiError::Forbidden(
                "only the event's organizer sets its waiting room".into(),
            ));
        }
        Ok(())
    }

    /// Opens the event's waiting room, or changes how it admits.
    pub async fn open_room(
        &self,
        user: &AuthUser,
        event_id: i64,
        s: RoomSettings,
    ) -> Result<RoomView, ApiError> {
        let mut errors = Vec::new();
        if !(1..=10_000).contains(&s.admitted_at_once) {
            errors.push(FieldError::new("admitted_at_once", "must be between 1 and 10000"));
        }
        let claim = s.claim_seconds.unwrap_or(120);
        if !(10..=3_600).contains(&claim) {
            errors.push(FieldError::new("claim_seconds", "must be between 10 and 3600"));
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        self.organizes(user, event_id).await?;
        let rule = RoomRule {
            admitted_at_once: s.admitted_at_once as u32,
            claim: Duration::from_secs(claim as u64),
        };
        let read = Instant::now();
        store::open_room(&self.db, event_id, rule, &user.id.to_string()).await?;
        self.rooms.remember(event_id, Some(rule), read);
        tracing::info!(
            event_id,
            admitted_at_once = rule.admitted_at_once,
            "waiting room opened"
        );
        Ok(RoomView::of(event_id, rule))
    }

    /// Closes the event's waiting room: anyone may book again.
    pub async fn close_room(&self, user: &AuthUser, event_id: i64) -> Result<(), ApiError> {
        self.organizes(user, event_id).await?;
        let read = Instant::now();
        let closed = store::close_room(&self.db, event_id).await?;
        self.rooms.remember(event_id, None, read);
        if !closed {
            return Err(ApiError::NotFound("the event has no waiting room".into()));
        }
        tracing::info!(event_id, "waiting room closed");
        Ok(())
    }

    /// The event's room, 404 if it has none.
    pub async fn room(&self, event_id: i64) -> Result<RoomView, ApiError> {
        match self.rooms.rule(event_id).await? {
            Some(rule) => Ok(RoomView::of(event_id, rule)),
            None => Err(ApiError::NotFound("the event has no waiting room".into())),
        }
    }

    /// Joins the event's room (keeping the place of a buyer already in
    /// it), waiting up to `wait` to be admitted.
    ///
    /// The caller's token signature is checked only before a place is
    /// given: that the sale sold out is anyone's to know, and most of a
    /// crowd that joins late is told only that.
    pub async fn join_room(
        &self,
        event_id: i64,
        caller: &Bearer,
        wait: Option<Duration>,
    ) -> Result<PlaceView, ApiError> {
        let Some(rule) = self.rooms.rule(event_id).await? else {
            return Ok(PlaceView::open(event_id));
        };
        if self.sold_out(event_id).await {
            return Ok(sold_out(event_id, None));
        }
        let who = caller.verified().await?.id.to_string();
        let place = self.rooms.join(event_id, &who, rule).await.map_err(unavailable)?;
        self.await_turn(event_id, &who, rule, place, wait).await
    }

    /// The buyer's place, waiting up to `wait` to be admitted; 404 if they
    /// have none.
    pub async fn my_place(
        &self,
        event_id: i64,
        user: Uuid,
        wait: Option<Duration>,
    ) -> Result<PlaceView, ApiError> {
        let Some(rule) = self.rooms.rule(event_id).await? else {
            return Ok(PlaceView::open(event_id));
        };
        let who = user.to_string();
        let place = self
            .rooms
            .place(event_id, &who, rule)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ApiError::NotFound("no place in this waiting room: join it".into()))?;
        self.await_turn(event_id, &who, rule, place, wait).await
    }

    /// Nothing is left to sell, for good (not merely held for others).
    async fn sold_out(&self, event_id: i64) -> bool {
        matches!(self.refusal(event_id, 1).await, Some(ApiError::SoldOut(_)))
    }

    /// Waits until the place is admitted, the sale sells out or `wait`
    /// passes, whichever comes first.
    async fn await_turn(
        &self,
        event_id: i64,
        who: &str,
        rule: RoomRule,
        mut place: Place,
        wait: Option<Duration>,
    ) -> Result<PlaceView, ApiError> {
        let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
        let mut turn = None;
        loop {
            // Admitted or waiting, there is no point booking a sold-out sale.
            if !matches!(place, Place::Lapsed { .. }) && self.sold_out(event_id).await {
                return Ok(sold_out(event_id, Some(place.number())));
            }
            let Place::Waiting { number, ahead } = place else {
                if let Place::Admitted { claim_left, .. } = place {
                    self.rooms.told_admitted(event_id, who, claim_left);
                }
                return Ok(PlaceView::of(event_id, place));
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(PlaceView::of(event_id, place));
            }
            let until = deadline.min(now + SOLD_OUT_RECHECK);
            let admitted = number.saturating_sub(ahead + 1);
            let woken = turn.get_or_insert_with(|| self.rooms.turn_of(event_id, rule, number, admitted));
            let came_up = tokio::time::timeout_at(until, woken).await.is_ok();
            if came_up {
                // Admitted just now, as this process heard: the claim is
                // whole, and the cache need not be asked again.
                place = Place::Admitted {
                    number,
                    claim_left: rule.claim,
                };
            } else if until == deadline {
                place = self
                    .rooms
                    .place(event_id, who, rule)
                    .await
                    .map_err(unavailable)?
                    // Left meanwhile (booked through another replica).
                    .unwrap_or(Place::Lapsed { number });
            }
        }
    }

    /// For a booking of an event behind a room: whether the caller (by the
    /// token's word; the booking checks it) is admitted. A room that cannot
    /// be reached admits: it only shapes the load, the ticket service still
    /// decides every seat.
    pub(crate) async fn admitted(&self, event_id: i64, rule: RoomRule, user: Uuid) -> bool {
        let who = user.to_string();
        if self.rooms.was_told(event_id, &who) {
            return true;
        }
        match self.rooms.place(event_id, &who, rule).await {
            Ok(place) => matches!(place, Some(Place::Admitted { .. })),
            Err(e) => {
                tracing::warn!(event_id, error = %e, "waiting room unreachable; booking let through");
                true
            }
        }
    }

    /// The buyer is done with the event's room (their booking was made or
    /// refused): the next in line is admitted.
    pub async fn leave_room(&self, event_id: i64, user: Uuid, rule: RoomRule) {
        if let Err(e) = self.rooms.leave(event_id, &user.to_string(), rule).await {
            tracing::warn!(event_id, error = %e, "could not leave the waiting room; the claim will lapse");
        }
    }
}

fn sold_out(event_id: i64, number: Option<u64>) -> PlaceView {
    PlaceView {
        event_id,
        state: PlaceState::SoldOut,
        number,
        ahead: None,
        claim_seconds_left: None,
    }
}
