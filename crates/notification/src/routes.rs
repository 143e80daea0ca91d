//! HTTP handlers for `/api/v1/notifications`.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
    Router,
};
use serde::{Deserialize, Serialize};
use ticketer_db::Db;
use ticketer_http::{ApiError, ApiResult, AuthUser, Json, Page, PageQuery, Query};
use tokio::sync::Notify;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{
    compose::NotificationType,
    store::{self, Filter, Notification, Preferences},
    templates::{self, Template},
};

/// A notification as the contract shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: String,
    pub recipient: String,
    /// EMAIL.
    pub channel: String,
    /// WELCOME, EVENT_PUBLISHED, EVENT_CANCELLED, BOOKING_CONFIRMED,
    /// BOOKING_FAILED or BOOKING_CANCELLED.
    pub notification_type: String,
    pub subject: String,
    /// PENDING, SENT or FAILED.
    pub status: String,
    pub retry_count: i64,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub event_id: Option<i64>,
    pub booking_id: Option<String>,
}

impl From<Notification> for NotificationView {
    fn from(n: Notification) -> Self {
        NotificationView {
            id: n.id,
            recipient: n.recipient,
            channel: n.channel,
            notification_type: n.notification_type,
            subject: n.subject,
            status: n.status,
            retry_count: n.retry_count,
            created_at: n.created_at,
            sent_at: n.sent_at,
            event_id: n.event_id,
            booking_id: n.booking_id,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Ticketer notifications"),
    paths(my_notifications, list_notifications, my_preferences, set_preferences, get_template, put_template, reset_template, retry),
    tags((name = "notifications", description = "What customers and organizers were told"))
)]
pub struct ApiDoc;

pub fn router(db: Db, wake: Arc<Notify>) -> Router {
    let retries = Router::new()
        .route("/api/v1/notifications/{id}/retry", post(retry))
        .with_state((db.clone(), wake));
    Router::new()
        .route("/api/v1/notifications/mine", get(my_notifications))
        .route("/api/v1/notifications", get(list_notifications))
        .route(
            "/api/v1/notifications/preferences",
            get(my_preferences).put(set_preferences),
        )
        .route(
            "/api/v1/notifications/templates/{kind}/{channel}",
            get(get_template).put(put_template).delete(reset_template),
        )
        .with_state(db)
        .merge(retries)
}

/// An administrator sends a FAILED notification again (the mail server is
/// back, an address was corrected): queued now, sent by the delivery
/// worker. One without an address, or not FAILED, cannot be.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/retry", tag = "notifications", security(("bearer" = [])),
    responses((status = 202, body = NotificationView), (status = 403, body = ticketer_http::Problem),
              (status = 404, body = ticketer_http::Problem), (status = 409, body = ticketer_http::Problem)))]
async fn retry(
    State((db, wake)): State<(Db, Arc<Notify>)>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<NotificationView>)> {
    if !user.is_admin() {
        return Err(ApiError::Forbidden(
            "only administrators retry notifications".into(),
        ));
    }
    uuid::Uuid::parse_str(&id).map_err(|_| ApiError::field("id", "must be a UUID"))?;
    let mut n = store::by_id(&db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such notification".into()))?;
    if n.recipient.is_empty() {
        return Err(ApiError::Conflict(
            "no address is known for this recipient; there is nothing to send to".into(),
        ));
    }
    if !store::requeue(&db, &id).await? {
        return Err(ApiError::Conflict(format!(
            "only a FAILED notification is retried; this one is {}",
            n.status
        )));
    }
    crate::delivery::wake_workers(&wake);
    // What was queued (the worker may be sending it already).
    n.status = "PENDING".into();
    Ok((StatusCode::ACCEPTED, axum::Json(n.into())))
}

async fn page_of(db: &Db, filter: Filter, q: PageQuery) -> ApiResult<axum::Json<Page<NotificationView>>> {
    let page = q.validate()?;
    let (items, total) = store::page(db, &filter, page.limit(), page.offset()).await?;
    Ok(axum::Json(Page::new(
        items.into_iter().map(NotificationView::from).collect(),
        page,
        total,
    )))
}

#[utoipa::path(get, path = "/api/v1/notifications/mine", tag = "notifications", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = Page<NotificationView>)))]
async fn my_notifications(
    State(db): State<Db>,
    user: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<NotificationView>>> {
    let filter = Filter {
        recipient_id: Some(user.id.to_string()),
        ..Filter::default()
    };
    page_of(&db, filter, q).await
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    pub booking_id: Option<uuid::Uuid>,
    pub event_id: Option<i64>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(ListQuery), responses((status = 200, body = Page<NotificationView>), (status = 403, body = ticketer_http::Problem)))]
async fn list_notifications(
    State(db): State<Db>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> ApiResult<axum::Json<Page<NotificationView>>> {
    if !user.is_admin() {
        return Err(ApiError::Forbidden(
            "only administrators list notifications".into(),
        ));
    }
    if q.event_id.is_some_and(|e| e <= 0) {
        return Err(ApiError::field("event_id", "must be a positive integer"));
    }
    let filter = Filter {
        recipient_id: None,
        booking_id: q.booking_id.map(|b| b.to_string()),
        event_id: q.event_id,
    };
    let page = PageQuery {
        page: q.page,
        page_size: q.page_size,
    };
    page_of(&db, filter, page).await
}

#[utoipa::path(get, path = "/api/v1/notifications/preferences", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = Preferences)))]
async fn my_preferences(State(db): State<Db>, user: AuthUser) -> ApiResult<axum::Json<Preferences>> {
    let mut conn = db.reading().await?;
    Ok(axum::Json(
        store::preferences(&mut conn, &user.id.to_string()).await?,
    ))
}

/// Email is on by default; turned off, nothing is sent to this user (and
/// nothing stored to send). SMS and push are off until turned on with a
/// phone number (E.164) or a device's push token; 400 names a missing or
/// malformed one.
#[utoipa::path(put, path = "/api/v1/notifications/preferences", tag = "notifications", security(("bearer" = [])),
    request_body = Preferences, responses((status = 200, body = Preferences), (status = 400, body = ticketer_http::Problem)))]
async fn set_preferences(
    State(db): State<Db>,
    user: AuthUser,
    Json(p): Json<Preferences>,
) -> ApiResult<axum::Json<Preferences>> {
    let wrong = p.problems();
    if !wrong.is_empty() {
        return Err(ApiError::Validation(
            wrong
                .into_iter()
                .map(|(field, why)| ticketer_http::FieldError::new(field, why))
                .collect(),
        ));
    }
    store::save_preferences(&db, &user.id.to_string(), &p).await?;
    Ok(axum::Json(p))
}

/// A template as an administrator sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub notification_type: String,
    pub channel: String,
    #[serde(flatten)]
    pub template: Template,
    /// True while the shipped template is in use.
    pub is_default: bool,
}

/// The type and channel a template path names, for an administrator.
fn template_key(
    user: &AuthUser,
    kind: &str,
    channel: &str,
) -> Result<(NotificationType, &'static str), ApiError> {
    if !user.is_admin() {
        return Err(ApiError::Forbidden("only administrators manage templates".into()));
    }
    let kind = NotificationType::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| ApiError::NotFound(format!("no notification type {kind}")))?;
    let channel = templates::CHANNELS
        .into_iter()
        .find(|c| *c == channel)
        .ok_or_else(|| ApiError::NotFound(format!("no channel {channel}")))?;
    Ok((kind, channel))
}

#[utoipa::path(get, path = "/api/v1/notifications/templates/{kind}/{channel}", tag = "notifications",
    security(("bearer" = [])), responses((status = 200, body = TemplateView), (status = 403, body = ticketer_http::Problem),
    (status = 404, body = ticketer_http::Problem)))]
async fn get_template(
    State(db): State<Db>,
    user: AuthUser,
    Path((kind, channel)): Path<(String, String)>,
) -> ApiResult<axum::Json<TemplateView>> {
    let (kind, channel) = template_key(&user, &kind, &channel)?;
    let mut conn = db.reading().await?;
    let stored = store::template(&mut conn, kind.as_str(), channel).await?;
    Ok(axum::Json(TemplateView {
        notification_type: kind.as_str().into(),
        channel: channel.into(),
        is_default: stored.is_none(),
        template: stored.unwrap_or_else(|| templates::default_for(kind)),
    }))
}

/// Replaces the template, once it renders a sample of its type's data;
/// 422 naming the part (subject, text or html) that does not.
#[utoipa::path(put, path = "/api/v1/notifications/templates/{kind}/{channel}", tag = "notifications",
    security(("bearer" = [])), request_body = Template,
    responses((status = 200, body = TemplateView), (status = 403, body = ticketer_http::Problem),
    (status = 404, body = ticketer_http::Problem), (status = 422, body = ticketer_http::Problem)))]
async fn put_template(
    State(db): State<Db>,
    user: AuthUser,
    Path((kind, channel)): Path<(String, String)>,
    Json(template): Json<Template>,
) -> ApiResult<axum::Json<TemplateView>> {
    let (kind, channel) = template_key(&user, &kind, &channel)?;
    templates::validate(kind, channel, &template).map_err(|e| {
        ApiError::UnprocessableFields(vec![ticketer_http::FieldError::new(e.part, e.message)])
    })?;
    store::save_template(&db, kind.as_str(), channel, &template).await?;
    tracing::info!(kind = kind.as_str(), channel, "template replaced");
    Ok(axum::Json(TemplateView {
        notification_type: kind.as_str().into(),
        channel: channel.into(),
        template,
        is_default: false,
    }))
}

/// Back to the shipped template.
#[utoipa::path(delete, path = "/api/v1/notifications/templates/{kind}/{channel}", tag = "notifications",
    security(("bearer" = [])), responses((status = 204), (status = 403, body = ticketer_http::Problem),
    (status = 404, body = ticketer_http::Problem)))]
async fn reset_template(
    State(db): State<Db>,
    user: AuthUser,
    Path((kind, channel)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (kind, channel) = template_key(&user, &kind, &channel)?;
    store::drop_template(&db, kind.as_str(), channel).await?;
    Ok(StatusCode::NO_CONTENT)
}
