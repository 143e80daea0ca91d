//! HTTP handlers for `/api/v1/tickets`.

use axum::{
    extract::{Path, State},
    routing::get,
    Router,
};
use serde::{Deserialize, Serialize};
use ticketer_db::Db;
use ticketer_http::{positive_id, ApiError, ApiResult, AuthUser, Page, PageQuery, Query, Role};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::store::{self, SaleStatus, Ticket, TicketFilter};

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

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketResponse {
    pub ticket_id: String,
    pub event_id: i64,
    /// AVAILABLE, HELD, SOLD or CANCELLED.
    pub status: String,
    pub booking_id: Option<String>,
    pub customer_id: Option<String>,
    pub hold_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Ticket> for TicketResponse {
    fn from(t: Ticket) -> Self {
        TicketResponse {
            ticket_id: t.ticket_id,
            event_id: t.event_id,
            status: t.status,
            booking_id: t.booking_id,
            customer_id: t.customer_id,
            hold_expires_at: t.hold_expires_at,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventTicketsQuery {
    pub event_id: Option<String>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Ticketer tickets"),
    paths(availability, my_tickets, event_tickets, get_ticket),
    tags((name = "tickets", description = "Ticket inventory and tickets"))
)]
pub struct ApiDoc;

pub fn router(db: Db) -> Router {
    Router::new()
        .route("/api/v1/tickets", get(event_tickets))
        .route("/api/v1/tickets/mine", get(my_tickets))
        .route("/api/v1/tickets/availability/{event_id}", get(availability))
        .route("/api/v1/tickets/{ticket_id}", get(get_ticket))
        .with_state(db)
}

#[utoipa::path(get, path = "/api/v1/tickets/availability/{event_id}", tag = "tickets",
    responses((status = 200, body = Availability),
              (status = 404, description = "no such event on sale (yet)", body = ticketer_http::Problem)))]
async fn availability(State(db): State<Db>, Path(raw): Path<String>) -> ApiResult<axum::Json<Availability>> {
    let inv = store::get(&db, positive_id(&raw, "event_id")?)
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

#[utoipa::path(get, path = "/api/v1/tickets/mine", tag = "tickets", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, description = "the caller's held, bought and cancelled tickets", body = Page<TicketResponse>)))]
async fn my_tickets(
    State(db): State<Db>,
    user: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<TicketResponse>>> {
    user.require(Role::Customer)?;
    let page = q.validate()?;
    let (tickets, total) = store::tickets_where(
        &db,
        TicketFilter::Customer,
        &user.id.to_string(),
        page.limit(),
        page.offset(),
    )
    .await?;
    Ok(axum::Json(Page::new(
        tickets.into_iter().map(Into::into).collect(),
        page,
        total,
    )))
}

#[utoipa::path(get, path = "/api/v1/tickets", tag = "tickets", security(("bearer" = [])), params(EventTicketsQuery),
    responses((status = 200, body = Page<TicketResponse>), (status = 403, body = ticketer_http::Problem)))]
async fn event_tickets(
    State(db): State<Db>,
    user: AuthUser,
    Query(q): Query<EventTicketsQuery>,
) -> ApiResult<axum::Json<Page<TicketResponse>>> {
    let id = positive_id(q.event_id.as_deref().unwrap_or_default(), "event_id")?;
    let page = PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .validate()?;
    let inv = store::get(&db, id).await?;
    let owner = inv.as_ref().is_some_and(|i| i.organizer == user.id.to_string());
    if !(owner || user.is_admin()) {
        return Err(ApiError::Forbidden(
            "only the event's organizer sees its tickets".into(),
        ));
    }
    let (tickets, total) = store::tickets_where(
        &db,
        TicketFilter::Event,
        &id.to_string(),
        page.limit(),
        page.offset(),
    )
    .await?;
    Ok(axum::Json(Page::new(
        tickets.into_iter().map(Into::into).collect(),
        page,
        total,
    )))
}

#[utoipa::path(get, path = "/api/v1/tickets/{ticket_id}", tag = "tickets", security(("bearer" = [])),
    responses((status = 200, body = TicketResponse), (status = 403, body = ticketer_http::Problem),
              (status = 404, body = ticketer_http::Problem)))]
async fn get_ticket(
    State(db): State<Db>,
    user: AuthUser,
    Path(ticket_id): Path<String>,
) -> ApiResult<axum::Json<TicketResponse>> {
    uuid::Uuid::parse_str(&ticket_id).map_err(|_| ApiError::field("ticket_id", "must be a UUID"))?;
    let ticket = store::ticket(&db, &ticket_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such ticket".into()))?;
    let me = user.id.to_string();
    let holder = ticket.customer_id.as_deref() == Some(me.as_str());
    let organizer = store::get(&db, ticket.event_id)
        .await?
        .is_some_and(|i| i.organizer == me);
    if !(holder || organizer || user.is_admin()) {
        return Err(ApiError::Forbidden("not your ticket".into()));
    }
    Ok(axum::Json(ticket.into()))
}
