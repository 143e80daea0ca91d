//! Event operations: load, apply the rules, store with the outgoing message.

use chrono::{DateTime, Utc};
use ticketer_contract::{
    EventCancelled, EventCompleted, EventCreated, EventPublished, EventSnapshot, EventUpdated, Message,
};
use ticketer_db::{enqueue, Db, DbError, Outbound};
use ticketer_http::{ApiError, AuthUser, FieldError, PageRequest, Role};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{self, transition, Action, EventStatus, Patch, RawDetails},
    store::{self, Event, ListFilter},
};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("invalid event")]
    Invalid(Vec<FieldError>),
    #[error("event not found")]
    NotFound,
    #[error("only the event's organizer may change it")]
    NotOwner,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for EventsError {
    fn from(e: sqlx::Error) -> Self {
        EventsError::Db(e.into())
    }
}

impl From<EventsError> for ApiError {
    fn from(e: EventsError) -> Self {
        match e {
            EventsError::Invalid(errors) => ApiError::Validation(errors),
            EventsError::NotFound => ApiError::NotFound(e.to_string()),
            EventsError::NotOwner | EventsError::Forbidden(_) => ApiError::Forbidden(e.to_string()),
            EventsError::Conflict(m) => ApiError::Conflict(m),
            EventsError::Db(e) => ApiError::internal(e),
        }
    }
}

impl From<&Event> for EventSnapshot {
    fn from(e: &Event) -> Self {
        let d = &e.details;
        EventSnapshot {
            event_id: e.id,
            event_name: d.event_name.clone(),
            category: d.category.clone(),
            location: d.location.clone(),
            event_date: d.event_date.format("%Y-%m-%d").to_string(),
            start_time: d.start_time.format("%H:%M").to_string(),
            end_time: d.end_time.format("%H:%M").to_string(),
            ticket_capacity: d.ticket_capacity,
            ticket_price: d.ticket_price,
            currency: d.currency.clone(),
            organizer: e.organizer,
            status: e.status,
            version: e.version,
        }
    }
}

#[derive(Clone)]
pub struct EventsService {
    pub(crate) db: Db,
    /// Public searches count their matches up to this many.
    search_count_limit: i64,
}

impl EventsService {
    /// The service over an already migrated database.
    pub fn new(db: Db) -> Self {
        EventsService {
            db,
            search_count_limit: crate::settings::DEFAULT_SEARCH_COUNT_LIMIT,
        }
    }

    pub fn with_search_count_limit(self, limit: i64) -> Self {
        EventsService {
            search_count_limit: limit,
            ..self
        }
    }
}

fn today() -> chrono::NaiveDate {
    Utc::now().date_naive()
}

fn require_organizer(user: &AuthUser) -> Result<(), EventsError> {
    user.require(Role::Organizer)
        .map_err(|_| EventsError::Forbidden("only organizers manage events".into()))
}

impl EventsService {
    pub async fn create(&self, user: &AuthUser, raw: RawDetails) -> Result<Event, EventsError> {
        require_organizer(user)?;
        let details = domain::validate(&raw, today(), true).map_err(EventsError::Invalid)?;
        let mut tx = self.db.begin().await?;
        let event = store::insert(&mut tx, &details, user.id).await?;
        self.announce(&mut tx, EventCreated, &event).await?;
        tx.commit().await?;
        self.db.outbox_written();
        tracing::info!(event_id = event.id, "event created");
        Ok(event)
    }

    async fn announce<M: Message>(
        &self,
        conn: &mut ticketer_db::AnyConnection,
        news: fn(EventSnapshot) -> M,
        e: &Event,
    ) -> Result<(), DbError> {
        enqueue(conn, &[Outbound::new(&news(EventSnapshot::from(e)))]).await
    }

    /// An event as `viewer` may see it: drafts only to their organizer.
    pub async fn get(&self, id: i64, viewer: Option<&AuthUser>) -> Result<Event, EventsError> {
        let mut conn = self.db.reading().await?;
        let event = store::get(&mut conn, id).await?.ok_or(EventsError::NotFound)?;
        let owner_or_admin = viewer.is_some_and(|u| u.id == event.organizer || u.is_admin());
        if event.status == EventStatus::Draft && !owner_or_admin {
            return Err(EventsError::NotFound);
        }
        Ok(event)
    }

    /// An organizer's change: checks the role and ownership, then [`Self::modify`].
    async fn change<M: Message>(
        &self,
        user: &AuthUser,
        id: i64,
        news: fn(EventSnapshot) -> M,
        change: impl FnOnce(Event) -> Result<Event, EventsError>,
    ) -> Result<Event, EventsError> {
        require_organizer(user)?;
        self.modify(id, news, |current| {
            if current.organizer != user.id && !user.is_admin() {
                return Err(EventsError::NotOwner);
            }
            change(current)
        })
        .await
    }

    /// Loads, applies `change`, stores with a version check, and announces
    /// the result as `news`, all in one transaction.
    async fn modify<M: Message>(
        &self,
        id: i64,
        news: fn(EventSnapshot) -> M,
        change: impl FnOnce(Event) -> Result<Event, EventsError>,
    ) -> Result<Event, EventsError> {
        let mut tx = self.db.begin().await?;
        let current = store::get(&mut tx, id).await?.ok_or(EventsError::NotFound)?;
        let next = change(current)?;
        let stored = store::update(&mut tx, &next)
            .await?
            .ok_or_else(|| EventsError::Conflict("the event was changed concurrently; retry".into()))?;
        self.announce(&mut tx, news, &stored).await?;
        tx.commit().await?;
        self.db.outbox_written();
        tracing::info!(event_id = id, kind = M::KIND, "event changed");
        Ok(stored)
    }

    /// Marks published events whose end has passed (at `now`, UTC) as
    /// COMPLETED, a batch at a time; returns how many.
    pub async fn complete_finished(&self, now: DateTime<Utc>) -> Result<usize, EventsError> {
        let ids = store::finished_ids(&self.db, now.naive_utc(), 100).await?;
        let mut done = 0;
        for id in ids {
            let completed = self
                .modify(id, EventCompleted, |mut event| {
                    event.status =
                        transition(event.status, Action::Complete).map_err(EventsError::Conflict)?;
                    Ok(event)
                })
                .await;
            match completed {
                Ok(_) => done += 1,
                // Cancelled or edited meanwhile: the next round decides again.
                Err(EventsError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Runs [`Self::complete_finished`] every `every` until `shutdown`.
    pub async fn run_completion(self, every: std::time::Duration, shutdown: CancellationToken) {
        loop {
            match self.complete_finished(Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "events completed"),
                Err(e) => tracing::warn!(error = %e, "completing finished events failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    pub async fn update(&self, user: &AuthUser, id: i64, patch: Patch) -> Result<Event, EventsError> {
        self.change(user, id, EventUpdated, |mut event| {
            transition(event.status, Action::Edit).map_err(EventsError::Conflict)?;
            let date_changed = patch.event_date.is_some();
            let raw = patch.apply_to(&event.details);
            let mut details = domain::validate(&raw, today(), date_changed).map_err(EventsError::Invalid)?;
            if details.ticket_capacity < event.tickets_sold {
                return Err(EventsError::Invalid(vec![FieldError::new(
                    "ticket_capacity",
                    format!(
                        "cannot drop below the {} tickets already sold",
                        event.tickets_sold
                    ),
                )]));
            }
            std::mem::swap(&mut event.details, &mut details);
            Ok(event)
        })
        .await
    }

    #[tracing::instrument(skip(self, user), fields(event_id = id))]
    pub async fn publish(&self, user: &AuthUser, id: i64) -> Result<Event, EventsError> {
        self.change(user, id, EventPublished, |mut event| {
            event.status = transition(event.status, Action::Publish).map_err(EventsError::Conflict)?;
            Ok(event)
        })
        .await
    }

    #[tracing::instrument(skip(self, user), fields(event_id = id))]
    pub async fn cancel(&self, user: &AuthUser, id: i64) -> Result<Event, EventsError> {
        self.change(user, id, EventCancelled, |mut event| {
            event.status = transition(event.status, Action::Cancel).map_err(EventsError::Conflict)?;
            Ok(event)
        })
        .await
    }

    /// Published events matching `filter`, with how many match (counted
    /// up to the search count limit; true when there are more).
    pub async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<store::Found, EventsError> {
        let counting = store::Counting::UpTo(self.search_count_limit);
        Ok(store::list_published(&self.db, filter, page, counting).await?)
    }

    pub async fn mine(&self, user: &AuthUser, page: PageRequest) -> Result<(Vec<Event>, i64), EventsError> {
        require_organizer(user)?;
        Ok(store::list_by_organizer(&self.db, user.id, page).await?)
    }
}
