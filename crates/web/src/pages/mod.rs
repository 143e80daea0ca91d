//! The pages, by who uses them; this module holds what they share:
//! templates, rendering, and how a refusal from a service becomes a page.

pub mod account;
pub mod admin;
pub mod bookings;
pub mod events;
pub mod organizer;

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use minijinja::{context, Environment, Value};

use crate::{api::Problem, session::Visitor, Web};

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "base.html",
    "error.html",
    "events.html",
    "event.html",
    "login.html",
    "register.html",
    "bookings.html",
    "booking.html",
    "organizer_events.html",
    "event_form.html",
    "sales.html",
    "admin_users.html",
    "notifications.html",
    "admin_dead_letters.html",
    "account.html",
    "parts.html",
    "queue.html",
);

/// Every template, parsed once; `.html` names are HTML-escaped.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env.add_filter("reason", |r: String| failure_reason(&r).to_string());
    env
}

/// A failed booking's reason in a customer's words.
pub fn failure_reason(code: &str) -> &'static str {
    match code {
        "SOLD_OUT" => "Sold out: every seat was taken before yours could be held.",
        "PAYMENT_DECLINED" => "Your card was declined. No money was taken.",
        "PAYMENT_ERROR" => "The payment could not be processed. No money was taken; please try again.",
        "EVENT_NOT_ON_SALE" => "This event is not on sale.",
        "HOLD_EXPIRED" => "Your seats were released before the payment completed. Any charge is refunded.",
        "EVENT_CANCELLED" => "The event was cancelled.",
        _ => "The booking could not be completed.",
    }
}

/// A rendered page, or the page that explains why not.
pub type Page = Result<Response, Response>;

pub fn render(web: &Web, visitor: &Visitor, name: &str, ctx: Value) -> Page {
    render_status(web, visitor, StatusCode::OK, name, ctx)
}

pub fn render_status(web: &Web, visitor: &Visitor, status: StatusCode, name: &str, ctx: Value) -> Page {
    let base = context! {
        user => visitor.user,
        csrf => visitor.csrf,
        is_organizer => visitor.user.as_ref().is_some_and(|u| u.has(ticketer_http::Role::Organizer)),
        is_admin => visitor.user.as_ref().is_some_and(|u| u.has(ticketer_http::Role::Admin)),
    };
    let html = web
        .templates
        .get_template(name)
        .and_then(|t| t.render(context! { ..base, ..ctx }))
        .map_err(|e| {
            tracing::error!(error = %e, template = name, "web: a page failed to render");
            page_error(web, Some(visitor), 500, "This page could not be shown.")
        })?;
    Ok((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

/// An error page; it never fails (a plain text answer if even it cannot render).
pub fn page_error(web: &Web, visitor: Option<&Visitor>, status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let ctx = context! {
        user => visitor.and_then(|v| v.user.clone()),
        csrf => visitor.map(|v| v.csrf.clone()),
        status => status.as_u16(),
        title => status.canonical_reason().unwrap_or("Error"),
        message => message,
    };
    match web
        .templates
        .get_template("error.html")
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(_) => (status, message.to_string()).into_response(),
    }
}

/// Where a refusal from the API leads: the login page when the visitor
/// must log in (again), otherwise a page saying what the service said.
pub fn refused(web: &Web, visitor: &Visitor, here: &str, p: Problem) -> Response {
    match p.status {
        401 => to_login(here),
        403 => page_error(web, Some(visitor), 403, "You do not have access to this page."),
        404 => page_error(web, Some(visitor), 404, "There is nothing here."),
        s => {
            let message = if p.detail.is_empty() { p.title } else { p.detail };
            page_error(web, Some(visitor), s, &message)
        }
    }
}

pub fn to_login(here: &str) -> Response {
    let next: String = url_encode(here);
    Redirect::to(&format!("/login?next={next}")).into_response()
}

/// The visitor's token, or the login page that brings them back here.
pub fn signed_in<'a>(visitor: &'a Visitor, here: &str) -> Result<&'a str, Response> {
    visitor.token.as_deref().ok_or_else(|| to_login(here))
}

/// The number of pages `total` items fill at `per_page` a page, at least
/// one.
pub fn pages_of(total: i64, per_page: i64) -> u32 {
    u32::try_from((total.max(0) + per_page - 1) / per_page)
        .unwrap_or(u32::MAX)
        .max(1)
}

pub fn url_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// The Idempotency-Key of a submitted form: the one rendered into it (so
/// a double submit is one request), or a new one if it was tampered with.
pub fn idempotency_key(form_key: &str) -> String {
    uuid::Uuid::parse_str(form_key.trim())
        .unwrap_or_else(|_| uuid::Uuid::new_v4())
        .to_string()
}

/// Only a path on this site is followed after a login (never `//host`).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let env = templates();
        for (name, _) in TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn dead_letters_are_grouped_by_queue_with_a_replay_each() {
        let env = templates();
        let letter = |queue: &str, id: &str| {
            serde_json::json!({"queue": queue, "type": "HoldTickets", "message_id": id,
                "reason": "permanent: bad payload", "dead_at": "2026-11-29T10:00:00.123Z"})
        };
        let ctx = context! {
            csrf => "t",
            services => vec![
                context! { segment => "tickets", letters => vec![
                    letter("ticket.commands", "m-1"), letter("ticket.commands", "m-2"), letter("ticket.inventory", "m-3"),
                ]},
                context! { segment => "payments", letters => Vec::<serde_json::Value>::new() },
                context! { segment => "bookings", error => "a service did not answer" },
            ],
        };
        let html = env
            .get_template("admin_dead_letters.html")
            .unwrap()
            .render(ctx)
            .unwrap();
        assert_eq!(html.matches("Send back to ticket.commands").count(), 1);
        assert_eq!(html.matches("Send back to ticket.inventory").count(), 1);
        assert!(html.contains("m-2") && html.contains("2026-11-29 10:00:00"));
        assert!(html.contains("None waiting.") && html.contains("Not reachable: a service did not answer"));
    }

    /// The shared form field keeps what was typed (never a password) and
    /// shows the error the service named for it.
    #[test]
    fn refused_forms_keep_their_values_and_name_the_field() {
        let env = templates();
        let errors = std::collections::BTreeMap::from([("email", "is already registered")]);
        let html = env
            .get_template("register.html")
            .unwrap()
            .render(context! {
                csrf => "t",
                form => context! { first_name => "Ana", last_name => "<Sousa>", email => "ana@example.com" },
                errors => errors,
            })
            .unwrap();
        assert!(html.contains(r#"value="Ana""#) && html.contains(r#"value="&lt;Sousa&gt;""#));
        assert!(html.contains(r#"id="email-error">is already registered"#));
        assert!(!html.contains(r#"id="first_name-error""#));
        let errors = std::collections::BTreeMap::from([("current_password", "is not your current password")]);
        let html = env
            .get_template("account.html")
            .unwrap()
            .render(context! {
                csrf => "t",
                me => context! { email => "ana@example.com", first_name => "Ana", last_name => "Sousa" },
                password_errors => errors,
            })
            .unwrap();
        assert!(html.contains(r#"id="current_password-error">is not your current password"#));
        assert!(html.contains(r#"value="Sousa""#) && !html.contains(r#"id="saved""#));
        assert_eq!(html.matches(r#"type="password""#).count(), 3);
        assert!(!html.contains("password\" value="));
    }

    /// The pager says how many pages there are, unless the count is only
    /// a lower bound, and links only where there is a page to go to.
    #[test]
    fn pages_link_back_and_on() {
        let env = templates();
        let page = |capped: bool, page: u32, pages: u32| {
            env.get_template("events.html")
                .unwrap()
                .render(context! {
                    csrf => "t", search => context! {}, events => Vec::<serde_json::Value>::new(),
                    page => page, pages => pages, capped => capped,
                    previous => (page > 1).then(|| format!("/?page={}", page - 1)),
                    next => (page < pages).then(|| format!("/?page={}", page + 1)),
                })
                .unwrap()
        };
        let middle = page(false, 3, 7);
        assert!(middle.contains("Page 3 of 7"));
        // (The links' slashes come out HTML-escaped, which a browser reads back.)
        assert!(middle.contains(r#"?page=2" rel="prev""#) && middle.contains(r#"?page=4" rel="next""#));
        let capped = page(true, 3, 4);
        assert!(capped.contains("<span>Page 3</span>"), "{capped}");
        let first = page(false, 1, 1);
        assert!(
            first.contains("Page 1 of 1")
                && !first.contains("rel=\"prev\"")
                && !first.contains("rel=\"next\"")
        );
    }

    /// The sales view lists the latest bookings and says when there are
    /// more than it shows.
    #[test]
    fn the_sales_view_says_when_it_shows_only_the_latest_bookings() {
        let env = templates();
        let booking = serde_json::json!({"booking_id": "01a22b0c-83bc-7083-9460-fe299c373c8d",
            "number_of_tickets": 2, "amount": "40.00", "currency": "EUR", "status": "CONFIRMED",
            "created_at": "2026-11-30T06:03:00.111602Z"});
        let page = |total: i64| {
            env.get_template("sales.html")
                .unwrap()
                .render(context! {
                    csrf => "t",
                    event => context! { id => 7, event_name => "Sale", ticket_capacity => 300, currency => "EUR" },
                    bookings => vec![booking.clone(), booking.clone()],
                    bookings_total => total,
                })
                .unwrap()
        };
        assert!(page(150).contains("The latest 2 of 150 bookings"));
        assert!(!page(2).contains("id=\"more-bookings\""));
    }

    #[test]
    fn pages_hold_every_item_and_there_is_always_one() {
        assert_eq!(pages_of(0, 25), 1);
        assert_eq!(pages_of(1, 25), 1);
        assert_eq!(pages_of(25, 25), 1);
        assert_eq!(pages_of(26, 25), 2);
        assert_eq!(pages_of(-3, 25), 1);
        assert_eq!(pages_of(i64::MAX - 30, 25), u32::MAX);
    }

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/bookings")), "/bookings");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn every_failure_reason_has_words() {
        for code in [
            "SOLD_OUT",
            "PAYMENT_DECLINED",
            "PAYMENT_ERROR",
            "EVENT_NOT_ON_SALE",
            "HOLD_EXPIRED",
            "EVENT_CANCELLED",
        ] {
            assert_ne!(failure_reason(code), failure_reason("?"), "{code}");
        }
        assert_eq!(url_encode("/events/1?q=a b"), "%2Fevents%2F1%3Fq%3Da+b");
    }
}
