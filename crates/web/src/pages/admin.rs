//! The administrator's pages: users and their roles; the dead letters
//! every service's consumers gave up on, and sending them back.

use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect},
    Extension, Form,
};
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::{pages_of, refused, render, signed_in, url_encode, Page};
use crate::{api::Call, session::Visitor, Web};

#[derive(Debug, Default, Deserialize)]
pub struct Find {
    #[serde(default)]
    q: String,
    page: Option<u32>,
}

const PAGE_SIZE: i64 = 25;

pub async fn users(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Query(find): Query<Find>,
) -> Page {
    let token = signed_in(&visitor, "/admin/users")?;
    let page = find.page.unwrap_or(1).max(1);
    let q = find.q.trim();
    let found = web
        .api
        .send(
            Call::get(format!(
                "/api/v1/auth/users?q={}&page={page}&page_size={PAGE_SIZE}",
                url_encode(q)
            ))
            .by(Some(token)),
        )
        .await
        .map_err(|p| refused(&web, &visitor, "/admin/users", p))?;
    let total = found["total"].as_i64().unwrap_or(0);
    let pages = pages_of(total, PAGE_SIZE);
    let link = |n: u32| format!("/admin/users?q={}&page={n}", url_encode(q));
    render(
        &web,
        &visitor,
        "admin_users.html",
        context! {
            users => found["items"],
            total => total,
            q => q,
            page => page,
            pages => pages,
            previous => (page > 1).then(|| link(page - 1)),
            next => (page < pages).then(|| link(page + 1)),
            here => link(page),
            roles => ["CUSTOMER", "ORGANIZER", "ADMIN"],
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct RoleChange {
    role: String,
    /// `grant` or `revoke`.
    change: String,
    /// Where the list was, to go back to it.
    #[serde(default)]
    back: String,
}

pub async fn change_role(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<String>,
    Form(f): Form<RoleChange>,
) -> Page {
    let token = signed_in(&visitor, "/admin/users")?;
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Err(super::page_error(
            &web,
            Some(&visitor),
            404,
            "There is no such user.",
        ));
    };
    let call = if f.change == "revoke" {
        Call {
            method: reqwest::Method::DELETE,
            ..Call::get(format!("/api/v1/auth/users/{id}/roles/{}", url_encode(&f.role)))
        }
    } else {
        Call::post(
            format!("/api/v1/auth/users/{id}/roles"),
            Some(json!({"role": f.role})),
        )
    };
    web.api
        .send(call.by(Some(token)))
        .await
        .map_err(|p| refused(&web, &visitor, "/admin/users", p))?;
    let back = super::safe_next(Some(f.back.as_str()).filter(|b| b.starts_with("/admin/users")));
    Ok(Redirect::to(back).into_response())
}

/// The services whose consumers keep dead letters, by their API path.
const WITH_QUEUES: [&str; 5] = ["events", "tickets", "bookings", "payments", "notifications"];

pub async fn dead_letters(State(web): State<Web>, Extension(visitor): Extension<Visitor>) -> Page {
    let token = signed_in(&visitor, "/admin/dead-letters")?;
    let mut services = Vec::new();
    for segment in WITH_QUEUES {
        let answer = web
            .api
            .send(Call::get(format!("/api/v1/{segment}/dead-letters")).by(Some(token)))
            .await;
        match answer {
            Ok(list) => services.push(context! { segment => segment, letters => list["items"] }),
            Err(p) if p.status == 401 || p.status == 403 => {
                return Err(refused(&web, &visitor, "/admin/dead-letters", p))
            }
            // One service away does not hide the others' letters.
            Err(p) => services.push(context! { segment => segment, error => p.detail }),
        }
    }
    render(
        &web,
        &visitor,
        "admin_dead_letters.html",
        context! { services => services },
    )
}

#[derive(Debug, Deserialize)]
pub struct Replay {
    segment: String,
    queue: String,
}

pub async fn replay(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Form(f): Form<Replay>,
) -> Page {
    let token = signed_in(&visitor, "/admin/dead-letters")?;
    if !WITH_QUEUES.contains(&f.segment.as_str()) {
        return Err(super::page_error(
            &web,
            Some(&visitor),
            404,
            "There is no such service.",
        ));
    }
    web.api
        .send(
            Call::post(
                format!(
                    "/api/v1/{}/dead-letters/{}/replay",
                    f.segment,
                    url_encode(&f.queue)
                ),
                None,
            )
            .by(Some(token)),
        )
        .await
        .map_err(|p| refused(&web, &visitor, "/admin/dead-letters", p))?;
    Ok(Redirect::to("/admin/dead-letters").into_response())
}
