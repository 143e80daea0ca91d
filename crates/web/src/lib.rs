//! Ticketer's web application, served at `/` of the gateway: pages for
//! customers (browse, search, book, my bookings with their tickets'
//! QR codes), organizers (their events and a live sales view) and admins
//! (users and their roles, dead letters).
//!
//! Server-rendered HTML over the same public API a client uses (see
//! [`api`]): no business rule lives here. Every page works without
//! JavaScript; a few lines of it keep the live figures current. Templates,
//! styles and script are compiled into the binary.

// Handlers return `Result<Response, Response>`: the page, or the page that
// explains why not. Both arms are whole responses, which is what axum
// wants; boxing the error arm would only add an allocation per refusal.
#![allow(clippy::result_large_err)]

pub mod api;
mod pages;
pub mod session;

use std::sync::Arc;

use axum::{
    http::{header, HeaderValue},
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use ticketer_http::TokenVerifier;

pub use api::Api;

#[derive(Clone)]
pub struct Web {
    pub(crate) api: Api,
    pub(crate) verifier: TokenVerifier,
    pub(crate) templates: Arc<minijinja::Environment<'static>>,
    /// Cookies marked Secure (the site is served over TLS, here or in
    /// front of the gateway).
    pub(crate) secure_cookies: bool,
}

impl Web {
    pub fn new(api: Api, verifier: TokenVerifier, secure_cookies: bool) -> Self {
        Web {
            api,
            verifier,
            templates: Arc::new(pages::templates()),
            secure_cookies,
        }
    }
}

/// The pages' content security: nothing from anywhere but this site, no
/// inline script, never framed.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(pages::events::list))
        .route("/events/{id}", get(pages::events::show))
        .route("/events/{id}/book", post(pages::bookings::book))
        .route("/events/{id}/queue", get(pages::bookings::queue))
        .route(
            "/login",
            get(pages::account::login_form).post(pages::account::login),
        )
        .route(
            "/register",
            get(pages::account::register_form).post(pages::account::register),
        )
        .route("/logout", post(pages::account::logout))
        .route("/account", get(pages::account::show))
        .route("/account/profile", post(pages::account::save_profile))
        .route("/account/password", post(pages::account::change_password))
        .route("/bookings", get(pages::bookings::mine))
        .route("/notifications", get(pages::bookings::notifications))
        .route("/bookings/{id}", get(pages::bookings::show))
        .route("/bookings/{id}/cancel", post(pages::bookings::cancel))
        .route("/organizer", get(pages::organizer::events))
        .route(
            "/organizer/events/new",
            get(pages::organizer::new_form).post(pages::organizer::create),
        )
        .route(
            "/organizer/events/{id}",
            get(pages::organizer::edit_form).post(pages::organizer::update),
        )
        .route("/organizer/events/{id}/publish", post(pages::organizer::publish))
        .route("/organizer/events/{id}/cancel", post(pages::organizer::cancel))
        .route("/organizer/events/{id}/sales", get(pages::organizer::sales))
        .route("/admin/users", get(pages::admin::users))
        .route("/admin/users/{id}/roles", post(pages::admin::change_role))
        .route("/admin/dead-letters", get(pages::admin::dead_letters))
        .route("/admin/dead-letters/replay", post(pages::admin::replay))
        .route("/assets/app.css", get(stylesheet))
        .route("/assets/live.js", get(script))
        .layer(from_fn_with_state(web.clone(), session::visit))
        .layer(axum::middleware::map_response(protect))
        .with_state(web)
}

async fn protect(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // Pages carry the visitor's own data: never kept by shared caches.
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("../assets/app.css"))
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../assets/live.js"),
    )
}
