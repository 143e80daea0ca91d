//! HTTP handlers for `/api/v1/bookings`.

use std::time::Duration;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post, put},
    Router,
};
use serde::Deserialize;
use ticketer_http::{idempotency, ApiError, ApiResult, AuthUser, Bearer, Json, Page, PageQuery, Query, Role};
use utoipa::{IntoParams, OpenApi};
use uuid::Uuid;

use crate::{
    saga::BookingStatus,
    service::{BookingService, BookingView, NewBooking},
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Ticketer bookings"),
    paths(create_booking, my_bookings, list_bookings, get_booking, cancel_booking, refund_booking,
          rooms::open_room, rooms::get_room, rooms::close_room, rooms::join_room, rooms::my_place),
    tags((name = "bookings", description = "Buying tickets"),
         (name = "waiting rooms", description = "A queue in front of a crowded sale"))
)]
pub struct ApiDoc;

pub fn router(service: BookingService) -> Router {
    Router::new()
        .route("/api/v1/bookings", post(create_booking).get(list_bookings))
        .route("/api/v1/bookings/mine", get(my_bookings))
        .route("/api/v1/bookings/{id}", get(get_booking))
        .route("/api/v1/bookings/{id}/cancel", post(cancel_booking))
        .route("/api/v1/bookings/{id}/refund", post(refund_booking))
        .route(
            "/api/v1/bookings/waiting-rooms/{event_id}",
            put(rooms::open_room)
                .get(rooms::get_room)
                .delete(rooms::close_room),
        )
        .route(
            "/api/v1/bookings/waiting-rooms/{event_id}/places",
            post(rooms::join_room),
        )
        .route(
            "/api/v1/bookings/waiting-rooms/{event_id}/places/mine",
            get(rooms::my_place),
        )
        .with_state(service)
}

mod rooms;

/// `Prefer: wait=N`, capped at 30 seconds.
fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .map(|n| Duration::from_secs(n.min(30)))
        .next()
}

fn booking_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::field("id", "must be a UUID"))
}

#[utoipa::path(post, path = "/api/v1/bookings", tag = "bookings", security(("bearer" = [])),
    request_body = NewBooking,
    params(("Prefer" = Option<String>, Header, description = "wait=N: answer when the booking is settled, up to N (<= 30) seconds"),
           ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key gets the booking the first request made")),
    responses((status = 202, description = "accepted, still PENDING", body = BookingView),
              (status = 201, description = "settled within the wait", body = BookingView),
              (status = 400, body = ticketer_http::Problem), (status = 403, body = ticketer_http::Problem),
              (status = 409, description = "sold out (problem type sold-out): nothing was booked; with Retry-After while the missing seats are only held for buyers still paying", body = ticketer_http::Problem),
              (status = 422, description = "the Idempotency-Key was used for a different request", body = ticketer_http::Problem)))]
async fn create_booking(
    State(svc): State<BookingService>,
    caller: Bearer,
    headers: HeaderMap,
    Json(req): Json<NewBooking>,
) -> ApiResult<axum::response::Response> {
    // Taken on the token's word here; the service checks the signature
    // before anything is booked or shown.
    if !caller.claims_role(Role::Customer) {
        return Err(ApiError::Forbidden("only customers book tickets".into()));
    }
    let key = idempotency::key_of(&headers)?;
    let wait = prefer_wait(&headers);
    let created = svc.create(&caller, req, key, wait.is_some()).await?;
    let replayed = created.replayed;
    let booking = match (wait, created.waiting) {
        (Some(wait), Some(waiting)) => svc.wait_settled(waiting, created.booking, wait).await?,
        _ => created.booking,
    };
    // Answered: the buyer's turn in the event's waiting room, if it has
    // one, passes to the next. (Passed on as soon as the booking is made
    // instead, the sale's work in flight grew past the room's bound and
    // the holds of those admitted slowed: measured, docs/benchmarks.md.)
    if let Some(rule) = created.room {
        svc.leave_room(booking.event_id, booking.customer_id, rule).await;
    }
    let status = if booking.saga.stage.status() == BookingStatus::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let mut resp = (status, axum::Json(BookingView::from(&booking))).into_response();
    if replayed {
        resp.headers_mut().insert(
            ticketer_http::idempotency::REPLAYED,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/api/v1/bookings/{id}", tag = "bookings", security(("bearer" = [])),
    responses((status = 200, body = BookingView), (status = 403, body = ticketer_http::Problem),
              (status = 404, body = ticketer_http::Problem)))]
async fn get_booking(
    State(svc): State<BookingService>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<BookingView>> {
    let b = svc
        .get(booking_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such booking".into()))?;
    if b.customer_id != user.id && !user.is_admin() {
        return Err(ApiError::Forbidden("not your booking".into()));
    }
    Ok(axum::Json(BookingView::from(&b)))
}

#[utoipa::path(get, path = "/api/v1/bookings/mine", tag = "bookings", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<BookingView>)))]
async fn my_bookings(
    State(svc): State<BookingService>,
    user: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<BookingView>>> {
    let page = q.validate()?;
    let (items, total) =
        crate::store::page(&svc.db, Some(user.id), None, None, page.limit(), page.offset()).await?;
    Ok(axum::Json(Page::new(
        items.iter().map(BookingView::from).collect(),
        page,
        total,
    )))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    pub event_id: Option<i64>,
    /// PENDING, CONFIRMED, FAILED or CANCELLED.
    pub status: Option<String>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/bookings", tag = "bookings", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Page<BookingView>), (status = 403, body = ticketer_http::Problem)))]
async fn list_bookings(
    State(svc): State<BookingService>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<BookingView>>> {
    if !user.is_admin() {
        // An organizer sees the bookings of their own event.
        let Some(event_id) = q.event_id else {
            return Err(ApiError::Forbidden("organizers list bookings by event_id".into()));
        };
        let mut conn = svc.db.reading().await?;
        let event = crate::store::event(&mut conn, event_id).await?;
        if event.is_none_or(|e| e.organizer != user.id.to_string()) {
            return Err(ApiError::Forbidden(
                "only the event's organizer sees its bookings".into(),
            ));
        }
    }
    if let Some(s) = &q.status {
        if !["PENDING", "CONFIRMED", "FAILED", "CANCELLED"].contains(&s.as_str()) {
            return Err(ApiError::field(
                "status",
                "must be PENDING, CONFIRMED, FAILED or CANCELLED",
            ));
        }
    }
    let page = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .validate()?;
    let (items, total) = crate::store::page(
        &svc.db,
        None,
        q.event_id,
        q.status.as_deref(),
        page.limit(),
        page.offset(),
    )
    .await?;
    Ok(axum::Json(Page::new(
        items.iter().map(BookingView::from).collect(),
        page,
        total,
    )))
}

#[utoipa::path(post, path = "/api/v1/bookings/{id}/cancel", tag = "bookings", security(("bearer" = [])),
    responses((status = 200, description = "cancelling: refund under way, then CANCELLED", body = BookingView),
              (status = 403, body = ticketer_http::Problem), (status = 409, body = ticketer_http::Problem)))]
async fn cancel_booking(
    State(svc): State<BookingService>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<BookingView>> {
    let b = svc.cancel(user.id, user.is_admin(), booking_id(&id)?).await?;
    Ok(axum::Json(BookingView::from(&b)))
}

#[utoipa::path(post, path = "/api/v1/bookings/{id}/refund", tag = "bookings", security(("bearer" = [])),
    responses((status = 200, description = "refund under way, then CANCELLED", body = BookingView),
              (status = 403, body = ticketer_http::Problem), (status = 404, body = ticketer_http::Problem),
              (status = 409, body = ticketer_http::Problem)))]
async fn refund_booking(
    State(svc): State<BookingService>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<BookingView>> {
    let b = svc.refund(user.id, user.is_admin(), booking_id(&id)?).await?;
    Ok(axum::Json(BookingView::from(&b)))
}
