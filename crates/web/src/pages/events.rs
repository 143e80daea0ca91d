//! Browsing: the published events with search and pages, and one event
//! with its live availability and the form that books it.

use axum::{
    extract::{Path, Query, State},
    Extension,
};
use minijinja::context;
use serde::Deserialize;

use super::{pages_of, refused, render, url_encode, Page};
use crate::{api::Call, session::Visitor, Web};

#[derive(Debug, Default, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    page: Option<u32>,
}

impl Search {
    /// The filters that were given, as `(name, value)` pairs.
    fn given(&self) -> Vec<(&'static str, &str)> {
        [
            ("q", self.q.trim()),
            ("category", self.category.trim()),
            ("location", self.location.trim()),
            ("from", self.from.trim()),
            ("to", self.to.trim()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    /// The filters given and `page`, as a query string (this site's links).
    fn with_page(&self, page: u32) -> String {
        let mut pairs: Vec<String> = self
            .given()
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect();
        pairs.push(format!("page={page}"));
        pairs.join("&")
    }

    /// The same for the API, twelve to a page.
    fn query(&self, page: u32) -> String {
        format!("{}&page_size=12", self.with_page(page))
    }
}

pub async fn list(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Query(search): Query<Search>,
) -> Page {
    let page = search.page.unwrap_or(1).max(1);
    let answer = web
        .api
        .send(Call::get(format!("/api/v1/events?{}", search.query(page))))
        .await;
    let (events, total, capped, problem) = match answer {
        Ok(p) => (
            p["items"].clone(),
            p["total"].as_i64().unwrap_or(0),
            p["total_capped"] == true,
            None,
        ),
        // A filter the service refused (a bad date, a query too long)
        // is shown next to the form, not as an error page.
        Err(p) if p.status == 400 || p.status == 422 => (serde_json::Value::Array(vec![]), 0, false, Some(p)),
        Err(p) => return Err(refused(&web, &visitor, "/", p)),
    };
    // Past a capped count the pages go on while they are full.
    let shown = events.as_array().map_or(0, Vec::len);
    let pages = if capped && shown == 12 {
        page + 1
    } else {
        pages_of(total, 12).max(page)
    };
    let link = |n: u32| format!("/?{}", search.with_page(n));
    render(
        &web,
        &visitor,
        "events.html",
        context! {
            events => events,
            total => total,
            capped => capped,
            search => context! {
                q => search.q.trim(), category => search.category.trim(),
                location => search.location.trim(), from => search.from.trim(), to => search.to.trim(),
            },
            searched => !search.given().is_empty(),
            page => page,
            pages => pages,
            previous => (page > 1).then(|| link(page - 1)),
            next => (page < pages).then(|| link(page + 1)),
            problem => problem.map(|p| if p.fields.is_empty() { p.detail } else {
                p.fields.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; ")
            }),
        },
    )
}

/// `?turn=1`: the visitor comes from the waiting room, admitted.
#[derive(Debug, Deserialize)]
pub struct Shown {
    #[serde(default)]
    turn: Option<String>,
}

pub async fn show(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<i64>,
    Query(shown): Query<Shown>,
) -> Page {
    let here = format!("/events/{id}");
    let event = web
        .api
        .send(Call::get(format!("/api/v1/events/{id}")).by(visitor.token.as_deref()))
        .await
        .map_err(|p| refused(&web, &visitor, &here, p))?;
    let availability = web
        .api
        .send(Call::get(format!("/api/v1/tickets/availability/{id}")))
        .await
        .ok();
    // A customer's saved cards come first; none when not logged in.
    let saved: Vec<(String, String)> = match visitor.token.as_deref() {
        Some(t) => web
            .api
            .send(Call::get("/api/v1/payments/methods").by(Some(t)))
            .await
            .ok()
            .and_then(|m| m["items"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                let id = m["id"].as_str()?;
                let default = if m["is_default"] == true { ", default" } else { "" };
                Some((
                    format!("method:{id}"),
                    format!(
                        "Saved {} ending {}{default}",
                        m["brand"].as_str()?,
                        m["last4"].as_str()?
                    ),
                ))
            })
            .collect(),
        None => Vec::new(),
    };
    render(
        &web,
        &visitor,
        "event.html",
        context! {
            event => event,
            availability => availability,
            saved => saved,
            turn => shown.turn.is_some(),
            // One form, one booking: a second submit of the same form is
            // the same request to the booking service.
            form_key => uuid::Uuid::new_v4().to_string(),
            cards => [
                ("tok_visa", "Visa ending 4242 (test card)"),
                ("tok_mastercard", "Mastercard ending 4444 (test card)"),
                ("tok_chargeDeclined", "Visa ending 0002, declined (test card)"),
                ("tok_insufficientFunds", "Visa ending 9995, insufficient funds (test card)"),
            ],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_keep_only_what_was_given_and_encode_it() {
        let s = Search {
            q: " jazz & blues ".into(),
            location: "Lisbon".into(),
            ..Default::default()
        };
        assert_eq!(s.query(2), "q=jazz+%26+blues&location=Lisbon&page=2&page_size=12");
        assert_eq!(Search::default().query(1), "page=1&page_size=12");
    }
}
