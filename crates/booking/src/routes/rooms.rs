//! HTTP handlers for `/api/v1/bookings/waiting-rooms`.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use ticketer_http::{positive_id, ApiError, ApiResult, AuthUser, Bearer, Json, Role};

use super::prefer_wait;
use crate::service::{BookingService, PlaceView, RoomSettings, RoomView};

#[utoipa::path(put, path = "/api/v1/bookings/waiting-rooms/{event_id}", tag = "waiting rooms", security(("bearer" = [])),
    request_body = RoomSettings,
    responses((status = 200, description = "open: from now on only buyers it admits may book the event", body = RoomView),
              (status = 400, body = ticketer_http::Problem), (status = 403, body = ticketer_http::Problem),
              (status = 404, body = ticketer_http::Problem)))]
pub(super) async fn open_room(
    State(svc): State<BookingService>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(settings): Json<RoomSettings>,
) -> ApiResult<axum::Json<RoomView>> {
    Ok(axum::Json(
        svc.open_room(&user, positive_id(&id, "event_id")?, settings)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/bookings/waiting-rooms/{event_id}", tag = "waiting rooms", security(("bearer" = [])),
    responses((status = 200, body = RoomView), (status = 404, description = "the event has no waiting room", body = ticketer_http::Problem)))]
pub(super) async fn get_room(
    State(svc): State<BookingService>,
    _user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<RoomView>> {
    Ok(axum::Json(svc.room(positive_id(&id, "event_id")?).await?))
}

#[utoipa::path(delete, path = "/api/v1/bookings/waiting-rooms/{event_id}", tag = "waiting rooms", security(("bearer" = [])),
    responses((status = 204, description = "closed: anyone may book the event again"),
              (status = 403, body = ticketer_http::Problem), (status = 404, body = ticketer_http::Problem)))]
pub(super) async fn close_room(
    State(svc): State<BookingService>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    svc.close_room(&user, positive_id(&id, "event_id")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/bookings/waiting-rooms/{event_id}/places", tag = "waiting rooms", security(("bearer" = [])),
    params(("Prefer" = Option<String>, Header, description = "wait=N: answer once admitted (or sold out), up to N (<= 30) seconds")),
    responses((status = 200, description = "the buyer's place (kept if they already had one); ADMITTED at once when the event has no room", body = PlaceView),
              (status = 403, body = ticketer_http::Problem), (status = 503, body = ticketer_http::Problem)))]
pub(super) async fn join_room(
    State(svc): State<BookingService>,
    caller: Bearer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<PlaceView>> {
    // Taken on the token's word here; the service checks the signature
    // before giving a place (a sold-out sale is anyone's to know).
    if !caller.claims_role(Role::Customer) {
        return Err(ApiError::Forbidden("only customers join a waiting room".into()));
    }
    let place = svc
        .join_room(positive_id(&id, "event_id")?, &caller, prefer_wait(&headers))
        .await?;
    Ok(axum::Json(place))
}

#[utoipa::path(get, path = "/api/v1/bookings/waiting-rooms/{event_id}/places/mine", tag = "waiting rooms", security(("bearer" = [])),
    params(("Prefer" = Option<String>, Header, description = "wait=N: answer once admitted (or sold out), up to N (<= 30) seconds")),
    responses((status = 200, body = PlaceView), (status = 404, description = "no place: join", body = ticketer_http::Problem)))]
pub(super) async fn my_place(
    State(svc): State<BookingService>,
    user: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<PlaceView>> {
    let place = svc
        .my_place(positive_id(&id, "event_id")?, user.id, prefer_wait(&headers))
        .await?;
    Ok(axum::Json(place))
}
