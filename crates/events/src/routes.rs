//! HTTP handlers for `/api/v1/events`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticketer_contract::Money;
use ticketer_http::{
    positive_id, ApiError, ApiResult, AuthUser, Json, MaybeAuthUser, Page, PageQuery, Query,
};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::{
    domain::{parse_date, EventStatus, Patch, RawDetails},
    service::EventsService,
    store::{Event, ListFilter},
};

#[derive(Debug, Serialize, ToSchema)]
pub struct EventResponse {
    pub id: i64,
    pub event_name: String,
    pub description: String,
    pub category: String,
    pub location: String,
    pub event_date: String,
    pub start_time: String,
    pub end_time: String,
    pub ticket_capacity: i64,
    #[schema(value_type = String, example = "25.50")]
    pub ticket_price: Money,
    pub currency: String,
    pub organizer: Uuid,
    pub status: EventStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Organizer views only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tickets_sold: Option<i64>,
    /// Organizer views only: tickets sold times price.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub revenue: Option<Money>,
}

impl EventResponse {
    fn new(e: Event, with_sales: bool) -> Self {
        let d = e.details;
        EventResponse {
            id: e.id,
            event_name: d.event_name,
            description: d.description,
            category: d.category,
            location: d.location,
            event_date: d.event_date.format("%Y-%m-%d").to_string(),
            start_time: d.start_time.format("%H:%M").to_string(),
            end_time: d.end_time.format("%H:%M").to_string(),
            ticket_capacity: d.ticket_capacity,
            ticket_price: d.ticket_price,
            currency: d.currency,
            organizer: e.organizer,
            status: e.status,
            created_at: e.created_at,
            updated_at: e.updated_at,
            tickets_sold: with_sales.then_some(e.tickets_sold),
            revenue: with_sales.then(|| d.ticket_price.checked_mul(e.tickets_sold).unwrap_or(Money::ZERO)),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Words to find in the name or description (all of them; at most 10
    /// words, 200 characters).
    pub q: Option<String>,
    pub category: Option<String>,
    pub location: Option<String>,
    /// Earliest event date, YYYY-MM-DD.
    pub from: Option<String>,
    /// Latest event date, YYYY-MM-DD.
    pub to: Option<String>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Ticketer events"),
    paths(create_event, list_events, my_events, get_event, update_event, publish_event, cancel_event),
    tags((name = "events", description = "The event catalogue"))
)]
pub struct ApiDoc;

pub fn router(service: EventsService) -> Router {
    Router::new()
        .route("/api/v1/events", post(create_event).get(list_events))
        .route("/api/v1/events/mine", get(my_events))
        .route("/api/v1/events/{id}", get(get_event).patch(update_event))
        .route("/api/v1/events/{id}/publish", post(publish_event))
        .route("/api/v1/events/{id}/cancel", post(cancel_event))
        .with_state(service)
}

#[utoipa::path(post, path = "/api/v1/events", tag = "events", security(("bearer" = [])),
    request_body = RawDetails,
    responses((status = 201, body = EventResponse), (status = 400, body = ticketer_http::Problem),
              (status = 401, body = ticketer_http::Problem), (status = 403, body = ticketer_http::Problem)))]
async fn create_event(
    State(svc): State<EventsService>,
    user: AuthUser,
    Json(raw): Json<RawDetails>,
) -> ApiResult<(StatusCode, axum::Json<EventResponse>)> {
    let event = svc.create(&user, raw).await?;
    Ok((StatusCode::CREATED, axum::Json(EventResponse::new(event, true))))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(ListQuery),
    responses((status = 200, description = "published events, by date", body = Page<EventResponse>)))]
async fn list_events(
    State(svc): State<EventsService>,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<EventResponse>>> {
    let page = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .validate()?;
    let date = |field: &str, v: Option<String>| -> ApiResult<Option<chrono::NaiveDate>> {
        v.map(|s| parse_date(&s).ok_or_else(|| ApiError::field(field, "must be a date like 2026-12-31")))
            .transpose()
    };
    search_bounds(&q)?;
    let filter = ListFilter {
        q: q.q,
        category: q.category,
        location: q.location,
        from: date("from", q.from)?,
        to: date("to", q.to)?,
    };
    let (events, total, capped) = svc.list(&filter, page).await?;
    let items = events.into_iter().map(|e| EventResponse::new(e, false)).collect();
    Ok(axum::Json(Page::new(items, page, total).capped(capped)))
}

/// What an anonymous search may ask: enough for any real query, little
/// enough that no query string costs more than a few index look-ups.
const MAX_QUERY_CHARS: usize = 200;
const MAX_QUERY_WORDS: usize = 10;
const MAX_FILTER_CHARS: usize = 100;

fn search_bounds(q: &ListQuery) -> ApiResult<()> {
    let mut v = ticketer_http::Validator::default();
    for (field, value, max) in [
        ("q", &q.q, MAX_QUERY_CHARS),
        ("category", &q.category, MAX_FILTER_CHARS),
        ("location", &q.location, MAX_FILTER_CHARS),
    ] {
        let Some(value) = value else { continue };
        if value.chars().count() > max {
            v.error(field, format!("must be at most {max} characters"));
        } else if ticketer_http::forbidden_char(value, false).is_some() {
            v.error(field, ticketer_http::FORBIDDEN_CHAR);
        }
    }
    if let Some(words) = q.q.as_deref().map(|t| t.split_whitespace().count()) {
        v.check(
            words <= MAX_QUERY_WORDS,
            "q",
            &format!("must be at most {MAX_QUERY_WORDS} words"),
        );
    }
    v.finish()
}

#[utoipa::path(get, path = "/api/v1/events/mine", tag = "events", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, description = "the caller's events in any status, with sales", body = Page<EventResponse>)))]
async fn my_events(
    State(svc): State<EventsService>,
    user: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<EventResponse>>> {
    let page = q.validate()?;
    let (events, total) = svc.mine(&user, page).await?;
    let items = events.into_iter().map(|e| EventResponse::new(e, true)).collect();
    Ok(axum::Json(Page::new(items, page, total)))
}

#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    responses((status = 200, body = EventResponse), (status = 404, body = ticketer_http::Problem)))]
async fn get_event(
    State(svc): State<EventsService>,
    MaybeAuthUser(user): MaybeAuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<EventResponse>> {
    let event = svc.get(positive_id(&id, "id")?, user.as_ref()).await?;
    let owner = user.is_some_and(|u| u.id == event.organizer || u.is_admin());
    Ok(axum::Json(EventResponse::new(event, owner)))
}

#[utoipa::path(patch, path = "/api/v1/events/{id}", tag = "events", security(("bearer" = [])),
    request_body = Patch,
    responses((status = 200, body = EventResponse), (status = 400, body = ticketer_http::Problem),
              (status = 403, body = ticketer_http::Problem), (status = 404, body = ticketer_http::Problem),
              (status = 409, body = ticketer_http::Problem)))]
async fn update_event(
    State(svc): State<EventsService>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(patch): Json<Patch>,
) -> ApiResult<axum::Json<EventResponse>> {
    let event = svc.update(&user, positive_id(&id, "id")?, patch).await?;
    Ok(axum::Json(EventResponse::new(event, true)))
}

#[utoipa::path(post, path = "/api/v1/events/{id}/publish", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = EventResponse), (status = 403, body = ticketer_http::Problem),
              (status = 409, description = "not a draft", body = ticketer_http::Problem)))]
async fn publish_event(
    State(svc): State<EventsService>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<EventResponse>> {
    let event = svc.publish(&user, positive_id(&id, "id")?).await?;
    Ok(axum::Json(EventResponse::new(event, true)))
}

#[utoipa::path(post, path = "/api/v1/events/{id}/cancel", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = EventResponse), (status = 403, body = ticketer_http::Problem),
              (status = 409, description = "already cancelled or completed", body = ticketer_http::Problem)))]
async fn cancel_event(
    State(svc): State<EventsService>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<EventResponse>> {
    let event = svc.cancel(&user, positive_id(&id, "id")?).await?;
    Ok(axum::Json(EventResponse::new(event, true)))
}
