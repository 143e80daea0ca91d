//! Bookings: what the HTTP operations do (make, read, wait for, cancel),
//! and the sweep that times out payments nobody answered. The saga's
//! steps themselves are taken in [`crate::driver`].

mod cancellation;
mod waiting_room;

pub use waiting_room::{PlaceView, RoomSettings, RoomView};

use std::time::Duration;
use ticketer_contract::{payment::TokenRule, HoldTickets, Message};

use ticketer_cache::{Cache, RoomRule};

use serde::Deserialize;
use ticketer_db::{Db, DbError};
use ticketer_http::{ApiError, Bearer, FieldError};
use uuid::Uuid;

use crate::{
    creations::{self, Creations, Made, ToMake},
    direct::Direct,
    driver::{advance, messages},
    lookups::{self, KeyLookups},
    rooms::Rooms,
    saga::{self, BookingStatus, Command, Input, Timeouts},
    store::{self, Booking, PaymentSource, RequestKey},
    waiters::{Waiters, Waiting},
};

/// When a buyer refused while seats are only held is told to come back.
/// A held seat returns when its buyer's payment fails or its hold runs
/// out; most payments settle within seconds, so this is when a retry has
/// a chance, not a promise.
const HELD_SEATS_RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct BookingService {
    pub(crate) db: Db,
    pub(crate) max_tickets: i64,
    pub(crate) timeouts: Timeouts,
    pub(crate) waiters: Waiters,
    /// How often a waiting request looks again without being woken.
    pub(crate) recheck: Duration,
    pub(crate) keys: KeyLookups,
    pub(crate) creations: Creations,
    pub(crate) by_id: lookups::ById,
    /// Reads of the ticket service's seats-for-sale figures, shared by
    /// requests that arrive together.
    pub(crate) figures: Option<lookups::Figures>,
    /// Which payment tokens a booking may name (the payment service's
    /// provider decides; PAYMENT_PROVIDER).
    pub(crate) tokens: TokenRule,
    /// Whether a new booking's hold is asked for directly (by `creations`,
    /// as it is committed) instead of sent through the queue.
    pub(crate) holds_directly: bool,
    /// Waiting rooms in front of crowded sales.
    pub(crate) rooms: Rooms,
}

/// The public view of a booking (CONTRACT.md), also what its
/// announcements carry.
pub use ticketer_contract::BookingSnapshot as BookingView;

impl From<&Booking> for BookingView {
    fn from(b: &Booking) -> Self {
        BookingView {
            booking_id: b.booking_id,
            customer_id: b.customer_id,
            event_id: b.event_id,
            number_of_tickets: b.number_of_tickets,
            status: b.saga.stage.status(),
            ticket_ids: b.saga.ticket_ids.clone(),
            amount: b.saga.amount,
            currency: b.currency.clone(),
            failure_reason: b.saga.failure,
            created_at: b.created_at.clone(),
            updated_at: b.updated_at.clone(),
            held_at: b.held_at.clone(),
        }
    }
}

/// What a new booking asks for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewBooking {
    pub event_id: i64,
    pub number_of_tickets: i64,
    /// A payment-method token; the sandbox knows tok_visa, tok_mastercard,
    /// tok_chargeDeclined, tok_insufficientFunds and tok_processingError.
    /// Give this or `payment_method_id`.
    #[serde(default)]
    pub payment_token: Option<String>,
    /// One of the customer's saved cards (`/api/v1/payments/methods`).
    #[serde(default)]
    pub payment_method_id: Option<String>,
}

/// A digest of what a booking request asks for, to tell a retry from a
/// different request under the same Idempotency-Key.
fn request_hash(req: &NewBooking) -> String {
    ticketer_http::idempotency::digest(&[
        req.event_id.to_string().as_bytes(),
        req.number_of_tickets.to_string().as_bytes(),
        req.payment_token.as_deref().unwrap_or_default().as_bytes(),
        req.payment_method_id.as_deref().unwrap_or_default().as_bytes(),
    ])
}

/// What `create` did.
pub struct Created {
    pub booking: Booking,
    /// The booking was made earlier with the same Idempotency-Key.
    pub replayed: bool,
    /// Registered for changes when the caller means to wait.
    pub waiting: Option<Waiting>,
    /// The event's waiting room, if it has one: the buyer leaves it once
    /// answered.
    pub room: Option<RoomRule>,
}

impl BookingService {
    pub fn new(db: Db, max_tickets: i64, timeouts: Timeouts, cache: Option<Cache>) -> Self {
        BookingService {
            keys: lookups::start(db.clone()),
            creations: creations::start(db.clone(), timeouts, None),
            by_id: lookups::start_by_id(db.clone()),
            figures: cache
                .clone()
                .map(|c| lookups::start_figures(c, lookups::FIGURE_FRESH)),
            // Without a shared cache (a single process), rooms live in its memory.
            rooms: Rooms::new(db.clone(), cache.unwrap_or_else(Cache::memory)),
            db,
            max_tickets,
            timeouts,
            waiters: Waiters::default(),
            recheck: crate::waiters::RECHECK,
            tokens: TokenRule::Sandbox,
            holds_directly: false,
        }
    }

    /// Asks for each new booking's hold and charge directly through
    /// `direct`: the hold as the booking is committed, the charge once it
    /// is.
    pub(crate) fn with_direct(mut self, direct: Direct) -> Self {
        self.creations = creations::start(self.db.clone(), self.timeouts, Some(direct));
        self.holds_directly = true;
        self
    }

    /// The refusal, when the ticket service's latest figure says fewer
    /// than `n` seats are for sale: for now only (with a Retry-After) while
    /// enough are held for buyers still paying, since seats whose payment
    /// fails or whose hold runs out are sold again. None when the seats may
    /// be there, or the figure is unknown (no figure, cache down): the saga
    /// then asks the ticket service, which decides either way.
    async fn refusal(&self, event_id: i64, n: i64) -> Option<ApiError> {
        let seats = self.figures.as_ref()?.ask(event_id).await.ok()??;
        if seats.available >= n {
            return None;
        }
        Some(if seats.available + seats.held >= n {
            ApiError::SoldOutForNow {
                detail: "no tickets are left for this event for now: some are held for buyers still paying, and come back if they do not".into(),
                retry_after_secs: HELD_SEATS_RETRY_AFTER.as_secs(),
            }
        } else {
            ApiError::SoldOut("no tickets are left for this event".into())
        })
    }

    /// The booking this customer made with `key`, if the request matches.
    async fn earlier(&self, customer: Uuid, key: &RequestKey) -> Result<Option<Booking>, ApiError> {
        let found = self
            .keys
            .try_ask((customer, key.key.clone()))
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
        match found {
            Some((b, hash)) if hash == key.request_hash => Ok(Some(b)),
            Some(_) => Err(ApiError::Unprocessable(
                "this Idempotency-Key was used for a different request".into(),
            )),
            None => Ok(None),
        }
    }

    /// Gives up on payments that did not answer in time, a batch at a time.
    pub async fn time_out_overdue(&self) -> Result<usize, DbError> {
        let ids = store::overdue(&self.db, 100).await?;
        let mut done = 0;
        for id in ids {
            let mut tx = self.db.begin().await?;
            let Some(b) = store::lock(&mut tx, id).await? else {
                continue;
            };
            let overdue_now = store::is_overdue(&mut tx, id).await?;
            if !overdue_now {
                continue;
            }
            match advance(&mut tx, b, Input::Timeout, None, self.timeouts).await {
                Ok(_) => {
                    tx.commit().await?;
                    self.waiters.wake(id);
                    done += 1;
                }
                Err(e) => tracing::warn!(booking_id = %id, error = %e, "could not time out booking"),
            }
        }
        if done > 0 {
            self.db.outbox_written();
            tracing::info!(bookings = done, "payments timed out");
        }
        Ok(done)
    }

    /// Runs [`Self::time_out_overdue`] every `every` until `shutdown`.
    pub async fn run_deadlines(self, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            if let Err(e) = self.time_out_overdue().await {
                tracing::warn!(error = %e, "checking booking deadlines failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Makes a booking and starts its saga. With an Idempotency-Key, the
    /// key is stored in the booking's own row: a retry gets the booking
    /// made the first time, and a key is never left claimed by a request
    /// that did not commit.
    ///
    /// The caller's token signature is checked only when something is
    /// booked or shown: a sold-out answer is public, and most of a flash
    /// sale's requests get it.
    #[tracing::instrument(skip_all, fields(customer = %caller.claimed_id(), event_id = req.event_id, tickets = req.number_of_tickets))]
    pub async fn create(
        &self,
        caller: &Bearer,
        req: NewBooking,
        idempotency_key: Option<String>,
        wait: bool,
    ) -> Result<Created, ApiError> {
        let mut errors = Vec::new();
        if req.event_id <= 0 {
            errors.push(FieldError::new("event_id", "must be a positive integer"));
        }
        if !(1..=self.max_tickets).contains(&req.number_of_tickets) {
            errors.push(FieldError::new(
                "number_of_tickets",
                format!("must be between 1 and {}", self.max_tickets),
            ));
        }
        let payment = match (&req.payment_token, &req.payment_method_id) {
            (Some(token), None) => {
                if !self.tokens.accepts(token) {
                    errors.push(FieldError::new(
                        "payment_token",
                        "is not a payment method the provider knows",
                    ));
                }
                Some(PaymentSource::Token(token.clone()))
            }
            (None, Some(method)) => match Uuid::parse_str(method) {
                Ok(id) => Some(PaymentSource::Method(id)),
                Err(_) => {
                    errors.push(FieldError::new("payment_method_id", "must be a UUID"));
                    None
                }
            },
            (None, None) => {
                errors.push(FieldError::new(
                    "payment_token",
                    "is required, unless payment_method_id names a saved card",
                ));
                None
            }
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    "payment_method_id",
                    "give payment_token or payment_method_id, not both",
                ));
                None
            }
        };
        let Some(payment) = payment.filter(|_| errors.is_empty()) else {
            return Err(ApiError::Validation(errors));
        };
        let key = idempotency_key.map(|key| RequestKey {
            key,
            request_hash: request_hash(&req),
        });
        let room = self.rooms.rule(req.event_id).await?;
        if let Some(refused) = self.refusal(req.event_id, req.number_of_tickets).await {
            // A retry of a request accepted before the seats ran out still
            // gets its booking.
            if let Some(earlier) = self.retried(caller, key.as_ref(), wait, room).await? {
                return Ok(earlier);
            }
            // A buyer the room admitted is done with it; only the token's
            // owner gives up their place.
            if let Some(rule) = room {
                if let Ok(buyer) = caller.verified().await {
                    self.leave_room(req.event_id, buyer.id, rule).await;
                }
            }
            return Err(refused);
        }
        if let Some(rule) = room {
            if !self.admitted(req.event_id, rule, caller.claimed_id()).await {
                if let Some(earlier) = self.retried(caller, key.as_ref(), wait, room).await? {
                    return Ok(earlier);
                }
                return Err(ApiError::NotAdmitted(format!(
                    "event {} sells through a waiting room: join it (POST /api/v1/bookings/waiting-rooms/{}/places) and book once admitted",
                    req.event_id, req.event_id
                )));
            }
        }
        let customer = caller.verified().await?.id;
        // Otherwise a repeated key shows up as a unique violation below.
        let (saga, commands) = saga::start();
        let booking = Booking::new(customer, req.event_id, req.number_of_tickets, payment, saga);
        // Announced first, then the saga's first commands.
        let announced = std::iter::once(Command::Announce(BookingStatus::Pending));
        let mut first = messages(&booking, announced.chain(commands).collect(), None);
        // Asked for directly as the booking is committed, if it can be.
        let hold = if self.holds_directly {
            first
                .iter()
                .position(|m| m.envelope().is_some_and(|e| e.kind == HoldTickets::KIND))
                .and_then(|i| first.remove(i).envelope().cloned())
        } else {
            None
        };
        // Before the commit: the saga may answer before we would register.
        let waiting = wait.then(|| self.waiters.register(booking.booking_id));
        let new = ToMake {
            booking: booking.clone(),
            key: key.clone(),
            messages: first,
            hold,
        };
        let made = self
            .creations
            .try_ask(new)
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
        if made == Made::KeyTaken {
            // The same key, concurrently: the other request made it.
            drop(waiting);
            let key = key.as_ref().expect("only a key can be taken");
            return match self.earlier(customer, key).await? {
                Some(booking) => self.replay(booking, wait, room).await,
                None => Err(ApiError::Conflict("retry the request".into())),
            };
        }
        tracing::info!(booking_id = %booking.booking_id, event_id = booking.event_id, "booking created");
        Ok(Created {
            booking,
            replayed: false,
            waiting,
            room,
        })
    }

    /// The booking an earlier request with the same Idempotency-Key made,
    /// if there was one, once the token proves whose it is.
    async fn retried(
        &self,
        caller: &Bearer,
        key: Option<&RequestKey>,
        wait: bool,
        room: Option<RoomRule>,
    ) -> Result<Option<Created>, ApiError> {
        let Some(key) = key else { return Ok(None) };
        let Some(booking) = self.earlier(caller.claimed_id(), key).await? else {
            return Ok(None);
        };
        caller.verified().await?;
        self.replay(booking, wait, room).await.map(Some)
    }

    /// The answer to a retry of an earlier request.
    async fn replay(
        &self,
        booking: Booking,
        wait: bool,
        room: Option<RoomRule>,
    ) -> Result<Created, ApiError> {
        let (booking, waiting) = if wait {
            let (b, w) = self.watch(booking.booking_id).await?;
            (b, Some(w))
        } else {
            (booking, None)
        };
        Ok(Created {
            booking,
            replayed: true,
            waiting,
            room,
        })
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Booking>, ApiError> {
        self.by_id
            .try_ask(id)
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))
    }

    /// Waits until `current` leaves PENDING or `wait` passes. The saga
    /// consumer hands over the settled booking; other changes wake the
    /// waiter to read it again, and so does every recheck interval.
    pub async fn wait_settled(
        &self,
        waiting: Waiting,
        mut current: Booking,
        wait: Duration,
    ) -> Result<Booking, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Armed before looking: a change committed after it wakes us.
            let changed = waiting.slot.notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(settled) = waiting.settled() {
                return Ok(settled);
            }
            let now = tokio::time::Instant::now();
            if current.saga.stage.status() != BookingStatus::Pending || now >= deadline {
                return Ok(current);
            }
            if tokio::time::timeout((deadline - now).min(self.recheck), changed)
                .await
                .is_ok()
            {
                if let Some(settled) = waiting.settled() {
                    return Ok(settled);
                }
            }
            current = self
                .get(current.booking_id)
                .await?
                .ok_or_else(|| ApiError::NotFound("no such booking".into()))?;
        }
    }

    /// A booking to wait on, registered before it is read again, so that
    /// no change after the read is missed.
    async fn watch(&self, id: Uuid) -> Result<(Booking, Waiting), ApiError> {
        let waiting = self.waiters.register(id);
        let booking = self
            .get(id)
            .await?
            .ok_or_else(|| ApiError::NotFound("no such booking".into()))?;
        Ok((booking, waiting))
    }
}
