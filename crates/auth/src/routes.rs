//! HTTP handlers for `/api/v1/auth`.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode},
    routing::{delete, get, post},
    Extension, Router,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticketer_http::{ApiError, ApiResult, AuthUser, Json, Role};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::{
    service::{AuthService, TokenPair},
    store::User,
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    /// CUSTOMER (default) or ORGANIZER.
    pub role: Option<Role>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateMeRequest {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password: Option<String>,
    /// Required with `password`: the password being replaced.
    pub current_password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleRequest {
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        UserResponse {
            id: u.id,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            roles: u.roles,
            created_at: u.created_at,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Ticketer auth"),
    paths(register, login, refresh, logout, me, update_me, list_users, grant_role, revoke_role, jwks),
    tags((name = "auth", description = "Accounts, tokens and roles"))
)]
pub struct ApiDoc;

pub fn router(service: AuthService) -> Router {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me).patch(update_me))
        .route("/api/v1/auth/users", get(list_users))
        .route("/api/v1/auth/users/{id}/roles", post(grant_role))
        .route("/api/v1/auth/users/{id}/roles/{role}", delete(revoke_role))
        .route("/api/v1/auth/.well-known/jwks.json", get(jwks))
        .with_state(service)
}

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = UserResponse), (status = 400, body = ticketer_http::Problem),
              (status = 409, description = "email already registered", body = ticketer_http::Problem)))]
async fn register(
    State(svc): State<AuthService>,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<(StatusCode, axum::Json<UserResponse>)> {
    let user = svc
        .register(
            &req.email,
            &req.password,
            &req.first_name,
            &req.last_name,
            req.role,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = ticketer_http::Problem)))]
async fn login(
    State(svc): State<AuthService>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> ApiResult<axum::Json<TokenPair>> {
    let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let from = svc
        .throttle
        .caller(peer.map(|Extension(ConnectInfo(a))| a.ip()), forwarded);
    Ok(axum::Json(svc.login(&req.email, &req.password, from).await?))
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair),
              (status = 401, description = "unknown, expired or reused token", body = ticketer_http::Problem)))]
async fn refresh(
    State(svc): State<AuthService>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<axum::Json<TokenPair>> {
    Ok(axum::Json(svc.refresh(&req.refresh_token).await?))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "session ended")))]
async fn logout(State(svc): State<AuthService>, Json(req): Json<RefreshRequest>) -> ApiResult<StatusCode> {
    svc.logout(&req.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserResponse), (status = 401, body = ticketer_http::Problem)))]
async fn me(State(svc): State<AuthService>, user: AuthUser) -> ApiResult<axum::Json<UserResponse>> {
    Ok(axum::Json(svc.user(user.id).await?.into()))
}

#[utoipa::path(patch, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])),
    request_body = UpdateMeRequest,
    responses((status = 200, body = UserResponse), (status = 400, body = ticketer_http::Problem)))]
async fn update_me(
    State(svc): State<AuthService>,
    user: AuthUser,
    Json(req): Json<UpdateMeRequest>,
) -> ApiResult<axum::Json<UserResponse>> {
    let updated = svc
        .update_me(
            user.id,
            req.first_name,
            req.last_name,
            req.password,
            req.current_password,
        )
        .await?;
    Ok(axum::Json(updated.into()))
}

fn parse_user_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::field("id", "must be a UUID"))
}

#[utoipa::path(post, path = "/api/v1/auth/users/{id}/roles", tag = "auth", security(("bearer" = [])),
    request_body = RoleRequest,
    responses((status = 200, body = UserResponse), (status = 403, body = ticketer_http::Problem),
              (status = 404, body = ticketer_http::Problem)))]
async fn grant_role(
    State(svc): State<AuthService>,
    caller: AuthUser,
    Path(id): Path<String>,
    Json(req): Json<RoleRequest>,
) -> ApiResult<axum::Json<UserResponse>> {
    caller.require(Role::Admin)?;
    Ok(axum::Json(svc.grant(parse_user_id(&id)?, req.role).await?.into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UsersQuery {
    /// Part of an email or a name, any case.
    pub q: Option<String>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/auth/users", tag = "auth", security(("bearer" = [])), params(UsersQuery),
    responses((status = 200, description = "a page of users with their roles, newest first"),
              (status = 403, body = ticketer_http::Problem)))]
async fn list_users(
    State(svc): State<AuthService>,
    caller: AuthUser,
    ticketer_http::Query(q): ticketer_http::Query<UsersQuery>,
) -> ApiResult<axum::Json<ticketer_http::Page<UserResponse>>> {
    caller.require(Role::Admin)?;
    if q.q.as_deref().is_some_and(|s| s.chars().count() > 200) {
        return Err(ApiError::field("q", "at most 200 characters"));
    }
    let page = ticketer_http::PageQuery {
        page: q.page,
        page_size: q.page_size,
    }
    .validate()?;
    let (users, total) = svc.users(q.q.as_deref(), page).await?;
    Ok(axum::Json(ticketer_http::Page::new(
        users.into_iter().map(Into::into).collect(),
        page,
        total,
    )))
}

#[utoipa::path(delete, path = "/api/v1/auth/users/{id}/roles/{role}", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserResponse), (status = 403, body = ticketer_http::Problem),
              (status = 404, body = ticketer_http::Problem)))]
async fn revoke_role(
    State(svc): State<AuthService>,
    caller: AuthUser,
    Path((id, role)): Path<(String, String)>,
) -> ApiResult<axum::Json<UserResponse>> {
    caller.require(Role::Admin)?;
    let role: Role = role.parse().map_err(|m: String| ApiError::field("role", m))?;
    Ok(axum::Json(svc.revoke(parse_user_id(&id)?, role).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/auth/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "the public keys that sign access tokens")))]
async fn jwks(State(svc): State<AuthService>) -> axum::Json<serde_json::Value> {
    axum::Json(svc.key.jwks())
}
