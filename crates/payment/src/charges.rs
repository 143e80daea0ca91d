//! Charges asked for over HTTP by the booking service, beside the queue
//! (`ticketer_contract::payment::DIRECT_CHARGES_PATH`): the holds it has
//! just heard of from the ticket service, each carrying its booking's
//! charge. They are applied by the very consumer of `payment.commands`,
//! with its inbox, so the same messages arriving later on the queue are
//! skipped, and one arriving while it is applied here waits for it: the
//! provider is asked once, whichever way comes first. The charges'
//! outcomes are written to the outbox as always and also returned; on the
//! bus they reach the ticket service, which sells on them, and not the
//! booking service's queue (`ticketer_bus::topology::ANSWERED`).

use std::sync::Arc;

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post, Router};
use ticketer_bus::Envelope;
use ticketer_config::ServiceToken;
use ticketer_contract::{
    payment::{DIRECT_CHARGES_MAX, DIRECT_CHARGES_PATH},
    TicketsHeld,
};
use ticketer_http::ApiResult;
use ticketer_runtime::direct;

use crate::commands::PaymentConsumer;

#[derive(Clone)]
struct Charges {
    consumer: Arc<PaymentConsumer>,
    token: ServiceToken,
}

/// The route, only when a service token is set: without one nobody may
/// call it, and it answers 404 like any unknown path.
pub fn router(consumer: Arc<PaymentConsumer>, token: Option<ServiceToken>) -> Router {
    let Some(token) = token else {
        return Router::new();
    };
    let state = Charges { consumer, token };
    Router::new()
        .route(DIRECT_CHARGES_PATH, post(charge))
        .with_state(state)
}

async fn charge(
    State(c): State<Charges>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Vec<Envelope>>> {
    let held = direct::asked::<TicketsHeld>(&headers, &body, &c.token, DIRECT_CHARGES_MAX)?;
    if held.is_empty() {
        return Ok(axum::Json(Vec::new()));
    }
    let (applied, told) = c.consumer.charge_now(&held).await;
    applied.map_err(direct::refusal)?;
    Ok(axum::Json(told))
}
