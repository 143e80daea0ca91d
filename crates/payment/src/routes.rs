//! HTTP handlers for `/api/v1/payments`.

use axum::{
    extract::{Path, State},
    routing::get,
    Router,
};
use serde::Serialize;
use ticketer_contract::Money;
use ticketer_db::Db;
use ticketer_http::{ApiError, ApiResult, AuthUser};
use utoipa::{OpenApi, ToSchema};

use std::sync::Arc;

use crate::{provider::PaymentProvider, store};

pub mod methods;

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentResponse {
    pub payment_id: String,
    pub booking_id: String,
    #[schema(value_type = String, example = "49.90")]
    pub amount: Money,
    pub currency: String,
    /// PROCESSING (the provider has not answered yet), SUCCEEDED, FAILED or
    /// REFUNDED.
    pub status: String,
    pub provider_reference: Option<String>,
    pub failure_reason: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Ticketer payments"),
    paths(payment_of_booking, methods::save, methods::list, methods::remove),
    tags((name = "payments", description = "Charges and refunds"))
)]
pub struct ApiDoc;

pub fn router(db: Db, provider: Arc<dyn PaymentProvider>) -> Router {
    Router::new()
        .route("/api/v1/payments/booking/{booking_id}", get(payment_of_booking))
        .with_state(db.clone())
        .merge(methods::router(db, provider))
}

#[utoipa::path(get, path = "/api/v1/payments/booking/{booking_id}", tag = "payments", security(("bearer" = [])),
    responses((status = 200, body = PaymentResponse), (status = 403, body = ticketer_http::Problem),
              (status = 404, body = ticketer_http::Problem)))]
async fn payment_of_booking(
    State(db): State<Db>,
    user: AuthUser,
    Path(booking_id): Path<String>,
) -> ApiResult<axum::Json<PaymentResponse>> {
    uuid::Uuid::parse_str(&booking_id).map_err(|_| ApiError::field("booking_id", "must be a UUID"))?;
    let p = store::find(&db, &booking_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no payment for this booking".into()))?;
    if p.customer_id != user.id.to_string() && !user.is_admin() {
        return Err(ApiError::Forbidden("not your payment".into()));
    }
    Ok(axum::Json(PaymentResponse {
        payment_id: p.payment_id,
        booking_id: p.booking_id,
        amount: Money::from_minor(p.amount_minor),
        currency: p.currency,
        status: p.status,
        provider_reference: p.provider_reference,
        failure_reason: p.failure_reason,
    }))
}
