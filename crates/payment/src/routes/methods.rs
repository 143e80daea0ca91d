//! `/api/v1/payments/methods`: a customer's saved cards. Each customer
//! sees, uses and deletes only their own; the provider's token is kept
//! and never shown.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, get},
    Router,
};
use serde::{Deserialize, Serialize};
use ticketer_db::Db;
use ticketer_http::{ApiError, ApiResult, AuthUser, FieldError, Json, Role};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    provider::PaymentProvider,
    store::methods::{self, Method, NotSaved},
};

/// How many cards one customer may keep.
pub const LIMIT: i64 = 20;

/// Longest provider token accepted.
const MAX_TOKEN: usize = 255;

#[derive(Clone)]
pub struct Methods {
    db: Db,
    provider: Arc<dyn PaymentProvider>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMethod {
    /// The provider's token for the card (the sandbox's: tok_visa, ...).
    pub payment_token: String,
    /// Make it the default (the first card saved is the default anyway).
    #[serde(default)]
    pub make_default: bool,
}

/// A saved card as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MethodView {
    pub id: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub is_default: bool,
    pub created_at: String,
}

impl From<Method> for MethodView {
    fn from(m: Method) -> Self {
        MethodView {
            id: m.id,
            brand: m.brand,
            last4: m.last4,
            exp_month: m.exp_month,
            exp_year: m.exp_year,
            is_default: m.is_default,
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MethodList {
    /// The default first, then the newest.
    pub items: Vec<MethodView>,
}

pub fn router(db: Db, provider: Arc<dyn PaymentProvider>) -> Router {
    Router::new()
        .route("/api/v1/payments/methods", get(list).post(save))
        .route("/api/v1/payments/methods/{id}", delete(remove))
        .with_state(Methods { db, provider })
}

#[utoipa::path(post, path = "/api/v1/payments/methods", tag = "payments", security(("bearer" = [])),
    request_body = NewMethod,
    responses((status = 201, body = MethodView), (status = 400, body = ticketer_http::Problem),
              (status = 403, body = ticketer_http::Problem), (status = 409, body = ticketer_http::Problem),
              (status = 422, body = ticketer_http::Problem)))]
pub async fn save(
    State(s): State<Methods>,
    user: AuthUser,
    Json(req): Json<NewMethod>,
) -> ApiResult<(StatusCode, axum::Json<MethodView>)> {
    user.require(Role::Customer)?;
    let token = req.payment_token.trim();
    // Providers' tokens are plain words; anything else is not one (and
    // must not reach a provider's URL).
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if token.is_empty() || token.len() > MAX_TOKEN || !token.chars().all(plain) {
        return Err(ApiError::field(
            "payment_token",
            format!("must be a provider's card token: 1 to {MAX_TOKEN} letters, digits, '_' or '-'"),
        ));
    }
    let Some(card) = s.provider.describe(token).await else {
        return Err(ApiError::UnprocessableFields(vec![FieldError::new(
            "payment_token",
            "the payment provider does not know this token",
        )]));
    };
    let method = Method {
        id: Uuid::now_v7().to_string(),
        customer_id: user.id.to_string(),
        provider_token: token.to_string(),
        brand: card.brand,
        last4: card.last4,
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        is_default: req.make_default,
        created_at: String::new(),
    };
    match methods::save(&s.db, &method, LIMIT).await? {
        Ok(saved) => Ok((StatusCode::CREATED, axum::Json(saved.into()))),
        Err(NotSaved::Full { limit }) => Err(ApiError::Conflict(format!(
            "at most {limit} payment methods may be saved; delete one first"
        ))),
    }
}

#[utoipa::path(get, path = "/api/v1/payments/methods", tag = "payments", security(("bearer" = [])),
    responses((status = 200, body = MethodList), (status = 403, body = ticketer_http::Problem)))]
pub async fn list(State(s): State<Methods>, user: AuthUser) -> ApiResult<axum::Json<MethodList>> {
    user.require(Role::Customer)?;
    let items = methods::of_customer(&s.db, &user.id.to_string()).await?;
    Ok(axum::Json(MethodList {
        items: items.into_iter().map(MethodView::from).collect(),
    }))
}

/// Someone else's method is answered as not found: its existence is
/// none of the caller's business.
#[utoipa::path(delete, path = "/api/v1/payments/methods/{id}", tag = "payments", security(("bearer" = [])),
    responses((status = 204), (status = 400, body = ticketer_http::Problem), (status = 403, body = ticketer_http::Problem),
              (status = 404, body = ticketer_http::Problem)))]
pub async fn remove(
    State(s): State<Methods>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    user.require(Role::Customer)?;
    Uuid::parse_str(&id).map_err(|_| ApiError::field("id", "must be a UUID"))?;
    if methods::delete(&s.db, &user.id.to_string(), &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no such payment method".into()))
    }
}
