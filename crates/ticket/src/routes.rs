//! HTTP handlers for `/api/v1/tickets`.

use axum::{
    extract::{Path, State},
    routing::get,
    Router,
};
use serde::Serialize;
use ticketer_db::Db;
use ticketer_http::{ApiError, ApiResult};
use utoipa::{OpenApi, ToSchema};

use crate::store::{self, SaleStatus};

#[derive(Debug, Serialize, ToSchema)]
pub struct Availability {
    pub event_id: i64,
    pub capacity: i64,
    /// Seats that can be bought now (0 when the event is not on sale).
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    /// ON_SALE, CANCELLED or CLOSED.
    pub status: &'static str,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Ticketer tickets"),
    paths(availability),
    tags((name = "tickets", description = "Ticket inventory"))
)]
pub struct ApiDoc;

pub fn router(db: Db) -> Router {
    Router::new()
        .route("/api/v1/tickets/availability/{event_id}", get(availability))
        .with_state(db)
}

#[utoipa::path(get, path = "/api/v1/tickets/availability/{event_id}", tag = "tickets",
    responses((status = 200, body = Availability),
              (status = 404, description = "no such event on sale (yet)", body = ticketer_http::Problem)))]
async fn availability(
    State(db): State<Db>,
    Path(event_id): Path<String>,
) -> ApiResult<axum::Json<Availability>> {
    let id = event_id
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::field("event_id", "must be a positive integer"))?;
    let inv = store::get(&db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no inventory for this event".into()))?;
    let c = inv.counters;
    Ok(axum::Json(Availability {
        event_id: inv.event_id,
        capacity: c.capacity,
        available: if inv.status == SaleStatus::OnSale {
            c.available
        } else {
            0
        },
        held: c.held,
        sold: c.sold,
        status: inv.status.as_str(),
    }))
}
