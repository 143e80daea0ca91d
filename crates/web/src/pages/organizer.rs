//! The organizer's pages: their events, the form that creates or edits
//! one, publishing and cancelling, and a sales view that stays current.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
    Extension, Form,
};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    account::{explain, field_errors, status_of},
    pages_of, refused, render, render_status, signed_in, Page,
};
use crate::{
    api::{Call, Problem},
    session::Visitor,
    Web,
};

/// Events an organizer's page lists at a time.
const EVENTS_PER_PAGE: i64 = 25;

#[derive(Debug, Deserialize)]
pub struct Paged {
    page: Option<u32>,
}

pub async fn events(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Query(q): Query<Paged>,
) -> Page {
    let token = signed_in(&visitor, "/organizer")?;
    let page = q.page.unwrap_or(1).max(1);
    let mine = web
        .api
        .send(
            Call::get(format!(
                "/api/v1/events/mine?page={page}&page_size={EVENTS_PER_PAGE}"
            ))
            .by(Some(token)),
        )
        .await
        .map_err(|p| refused(&web, &visitor, "/organizer", p))?;
    let pages = pages_of(mine["total"].as_i64().unwrap_or(0), EVENTS_PER_PAGE);
    let link = |n: u32| format!("/organizer?page={n}");
    render(
        &web,
        &visitor,
        "organizer_events.html",
        context! {
            events => mine["items"],
            page => page,
            pages => pages,
            previous => (page > 1).then(|| link((page - 1).min(pages))),
            next => (page < pages).then(|| link(page + 1)),
        },
    )
}

/// The event form as typed; numbers go to the service as typed so that it
/// names a wrong one.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct EventForm {
    #[serde(default)]
    event_name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    event_date: String,
    #[serde(default)]
    start_time: String,
    #[serde(default)]
    end_time: String,
    #[serde(default)]
    ticket_capacity: String,
    #[serde(default)]
    ticket_price: String,
    #[serde(default, skip_serializing)]
    form_key: String,
}

fn number_or_text(s: &str) -> Value {
    let s = s.trim();
    s.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(s))
}

impl EventForm {
    fn body(&self) -> Value {
        json!({
            "event_name": self.event_name.trim(), "description": self.description.trim(),
            "category": self.category.trim(), "location": self.location.trim(),
            "event_date": self.event_date.trim(), "start_time": self.start_time.trim(),
            "end_time": self.end_time.trim(), "ticket_capacity": number_or_text(&self.ticket_capacity),
            "ticket_price": self.ticket_price.trim(),
        })
    }

    fn of(event: &Value) -> Self {
        let text = |k: &str| match &event[k] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        };
        EventForm {
            event_name: text("event_name"),
            description: text("description"),
            category: text("category"),
            location: text("location"),
            event_date: text("event_date"),
            start_time: text("start_time"),
            end_time: text("end_time"),
            ticket_capacity: text("ticket_capacity"),
            ticket_price: text("ticket_price"),
            form_key: String::new(),
        }
    }
}

fn form_page(
    web: &Web,
    visitor: &Visitor,
    event: Option<&Value>,
    form: &EventForm,
    problem: Option<&Problem>,
) -> Page {
    let errors: BTreeMap<String, String> = problem.map(field_errors).unwrap_or_default();
    let status = problem.map(status_of).unwrap_or(axum::http::StatusCode::OK);
    render_status(
        web,
        visitor,
        status,
        "event_form.html",
        context! {
            event => event,
            form => form,
            errors => errors,
            error => problem.map(explain),
            form_key => uuid::Uuid::new_v4().to_string(),
        },
    )
}

pub async fn new_form(State(web): State<Web>, Extension(visitor): Extension<Visitor>) -> Page {
    signed_in(&visitor, "/organizer/events/new")?;
    let form = EventForm {
        start_time: "19:00".into(),
        end_time: "22:00".into(),
        ticket_price: "25.00".into(),
        ..Default::default()
    };
    form_page(&web, &visitor, None, &form, None)
}

pub async fn create(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Form(f): Form<EventForm>,
) -> Page {
    let token = signed_in(&visitor, "/organizer/events/new")?;
    let key = super::idempotency_key(&f.form_key);
    let made = web
        .api
        .send(
            Call::post("/api/v1/events", Some(f.body()))
                .by(Some(token))
                .header("idempotency-key", key),
        )
        .await;
    match made {
        Ok(e) => Ok(Redirect::to(&format!("/organizer/events/{}", e["id"])).into_response()),
        Err(p) if p.status == 400 || p.status == 422 => form_page(&web, &visitor, None, &f, Some(&p)),
        Err(p) => Err(refused(&web, &visitor, "/organizer/events/new", p)),
    }
}

async fn organizers_event(web: &Web, visitor: &Visitor, id: i64, here: &str) -> Result<Value, Response> {
    let token = signed_in(visitor, here)?;
    web.api
        .send(Call::get(format!("/api/v1/events/{id}")).by(Some(token)))
        .await
        .map_err(|p| refused(web, visitor, here, p))
}

pub async fn edit_form(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<i64>,
) -> Page {
    let here = format!("/organizer/events/{id}");
    let event = organizers_event(&web, &visitor, id, &here).await?;
    form_page(&web, &visitor, Some(&event), &EventForm::of(&event), None)
}

pub async fn update(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<i64>,
    Form(f): Form<EventForm>,
) -> Page {
    let here = format!("/organizer/events/{id}");
    let token = signed_in(&visitor, &here)?;
    let saved = web
        .api
        .send(Call::patch(format!("/api/v1/events/{id}"), f.body()).by(Some(token)))
        .await;
    match saved {
        Ok(_) => Ok(Redirect::to(&here).into_response()),
        Err(p) if p.status == 400 || p.status == 422 || p.status == 409 => {
            let event = organizers_event(&web, &visitor, id, &here).await?;
            form_page(&web, &visitor, Some(&event), &f, Some(&p))
        }
        Err(p) => Err(refused(&web, &visitor, &here, p)),
    }
}

async fn act(web: Web, visitor: Visitor, id: i64, action: &str) -> Page {
    let here = format!("/organizer/events/{id}");
    let token = signed_in(&visitor, &here)?;
    web.api
        .send(Call::post(format!("/api/v1/events/{id}/{action}"), None).by(Some(token)))
        .await
        .map_err(|p| refused(&web, &visitor, &here, p))?;
    Ok(Redirect::to(&here).into_response())
}

pub async fn publish(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<i64>,
) -> Page {
    act(web, visitor, id, "publish").await
}

pub async fn cancel(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<i64>,
) -> Page {
    act(web, visitor, id, "cancel").await
}

pub async fn sales(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<i64>,
) -> Page {
    let here = format!("/organizer/events/{id}/sales");
    let event = organizers_event(&web, &visitor, id, &here).await?;
    let token = visitor.token.as_deref();
    let availability = web
        .api
        .send(Call::get(format!("/api/v1/tickets/availability/{id}")))
        .await
        .ok();
    let bookings = web
        .api
        .send(Call::get(format!("/api/v1/bookings?event_id={id}&page_size=100")).by(token))
        .await
        .map_err(|p| refused(&web, &visitor, &here, p))?;
    render(
        &web,
        &visitor,
        "sales.html",
        context! {
            event => event,
            availability => availability,
            bookings => bookings["items"],
            bookings_total => bookings["total"],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_go_as_numbers_and_anything_else_as_typed() {
        let f = EventForm {
            event_name: " Jazz night ".into(),
            ticket_capacity: "120".into(),
            ticket_price: "25.50".into(),
            ..Default::default()
        };
        let b = f.body();
        assert_eq!(b["event_name"], "Jazz night");
        assert_eq!(b["ticket_capacity"], 120);
        assert_eq!(b["ticket_price"], "25.50");
        let f = EventForm {
            ticket_capacity: "lots".into(),
            ..Default::default()
        };
        assert_eq!(f.body()["ticket_capacity"], "lots");
    }

    #[test]
    fn an_event_fills_its_form() {
        let e = json!({"event_name": "Gala", "ticket_capacity": 300, "ticket_price": "40.00", "description": null});
        let f = EventForm::of(&e);
        assert_eq!(f.event_name, "Gala");
        assert_eq!(f.ticket_capacity, "300");
        assert_eq!(f.description, "");
    }
}
