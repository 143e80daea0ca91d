//! Holds asked for over HTTP by the booking service, beside the queue
//! (`ticketer_contract::ticket::DIRECT_HOLDS_PATH`). Each request is one
//! batch of `HoldTickets`, applied exactly as a batch from the queue would
//! be ([`TicketCommands::hold_now`]): one transaction, the answers returned,
//! so the booking's saga moves without waiting for the relay and the
//! broker. They are also sent on the bus unless the caller says
//! `publish=false`: the booking service, which then passes each on itself
//! (to the payment service directly, or through the queue when that fails).
//!
//! Only holds: they are keyed by booking, so one asked here and again
//! through the queue (the booking service fell back, or its saga timed out
//! waiting) is answered with the seats it already has. A hold refused as
//! sold out is left unanswered unless asked (`?answer_sold_out=true`): see
//! [`TicketCommands::hold_now`].

use std::sync::Arc;

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post, Router};
use serde::Deserialize;
use ticketer_bus::Envelope;
use ticketer_config::ServiceToken;
use ticketer_contract::{
    ticket::{DIRECT_HOLDS_MAX, DIRECT_HOLDS_PATH},
    HoldTickets,
};
use ticketer_db::Db;
use ticketer_http::{ApiResult, Query};
use ticketer_runtime::direct;

use crate::commands::TicketCommands;

#[derive(Clone)]
struct Holds {
    db: Db,
    commands: Arc<TicketCommands>,
    token: ServiceToken,
}

/// The route, only when a service token is set: without one nobody may
/// call it, and it answers 404 like any unknown path.
pub fn router(db: Db, commands: TicketCommands, token: Option<ServiceToken>) -> Router {
    let Some(token) = token else {
        return Router::new();
    };
    let state = Holds {
        db,
        commands: Arc::new(commands),
        token,
    };
    Router::new()
        .route(DIRECT_HOLDS_PATH, post(hold))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct Asked {
    /// Answer a hold refused as sold out too, instead of leaving it to the
    /// queue.
    #[serde(default)]
    answer_sold_out: bool,
    /// Also send the answers on the bus (the default). `false` when the
    /// caller takes them on from here: a second copy of each would only
    /// cost the broker and every consumer a message to skip.
    #[serde(default = "yes")]
    publish: bool,
}

fn yes() -> bool {
    true
}

async fn hold(
    State(h): State<Holds>,
    Query(asked): Query<Asked>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Vec<Envelope>>> {
    let holds = direct::asked::<HoldTickets>(&headers, &body, &h.token, DIRECT_HOLDS_MAX)?;
    if holds.is_empty() {
        return Ok(axum::Json(Vec::new()));
    }
    let answers = h
        .commands
        .hold_now(&h.db, &holds, asked.answer_sold_out, asked.publish)
        .await
        .map_err(direct::refusal)?;
    Ok(axum::Json(answers))
}
