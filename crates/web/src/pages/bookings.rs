//! Booking, and the customer's bookings with their tickets.

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Redirect, Response},
    Extension, Form,
};
use minijinja::context;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{account::explain, refused, render, signed_in, Page};
use crate::{
    api::{Call, Problem},
    session::Visitor,
    Web,
};

#[derive(Debug, Deserialize)]
pub struct BookForm {
    number_of_tickets: String,
    payment_token: String,
    /// Generated with the form: the booking's Idempotency-Key.
    form_key: String,
}

pub async fn book(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(event_id): Path<i64>,
    Form(f): Form<BookForm>,
) -> Result<Response, Response> {
    let here = format!("/events/{event_id}");
    let token = signed_in(&visitor, &here)?;
    let mut answer = send_booking(&web, token, event_id, &f).await;
    // The sale is behind a waiting room: join it; a visitor admitted at
    // once books at once, one who must wait waits on the queue page.
    if matches!(&answer, Err(p) if p.status == 403 && p.is("waiting-room")) {
        let place = join_room(&web, token, event_id)
            .await
            .map_err(|p| refused(&web, &visitor, &here, p))?;
        match place["state"].as_str() {
            Some("ADMITTED") => answer = send_booking(&web, token, event_id, &f).await,
            Some("SOLD_OUT") => return Err(sold_out_page(&web, &visitor, event_id)),
            _ => return Ok(Redirect::to(&format!("/events/{event_id}/queue")).into_response()),
        }
    }
    match answer {
        Ok(b) => {
            let id = b["booking_id"].as_str().unwrap_or_default();
            Ok(Redirect::to(&format!("/bookings/{id}")).into_response())
        }
        Err(p) if p.status == 409 || p.status == 400 || p.status == 422 => {
            // Sold out before a booking was made, or a refused form: say
            // why, with the way back to the event.
            let message = if p.is("sold-out") {
                sold_out(&p)
            } else {
                p.fields
                    .first()
                    .map(|(f, m)| format!("{f}: {m}"))
                    .unwrap_or_else(|| explain(&p))
            };
            Err(book_refused(
                &web,
                &visitor,
                event_id,
                &message,
                super::account::status_of(&p),
            ))
        }
        Err(p) => Err(refused(&web, &visitor, &here, p)),
    }
}

/// The event's waiting room in the API.
fn room(event_id: i64) -> String {
    format!("/api/v1/bookings/waiting-rooms/{event_id}")
}

/// Sends the form's booking.
async fn send_booking(web: &Web, token: &str, event_id: i64, f: &BookForm) -> Result<Value, Problem> {
    let key = super::idempotency_key(&f.form_key);
    // The count goes to the service as typed, so that it, not this page,
    // says what is allowed.
    let count: Value = f
        .number_of_tickets
        .trim()
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(f.number_of_tickets.trim()));
    web.api
        .send(
            Call::post(
                "/api/v1/bookings",
                Some(match f.payment_token.strip_prefix("method:") {
                    Some(method) => {
                        json!({"event_id": event_id, "number_of_tickets": count, "payment_method_id": method})
                    }
                    None => json!({"event_id": event_id, "number_of_tickets": count, "payment_token": f.payment_token}),
                }),
            )
            .by(Some(token))
            .header("idempotency-key", key)
            // Most bookings settle within a second: the visitor then
            // lands on the outcome rather than on a waiting page.
            .header("prefer", "wait=3"),
        )
        .await
}

/// The visitor's place in the event's waiting room: this page waits a
/// few seconds for their turn and then looks again (it reloads itself);
/// once it is their turn, back to the event to book.
pub async fn queue(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(event_id): Path<i64>,
) -> Result<Response, Response> {
    let here = format!("/events/{event_id}/queue");
    let token = signed_in(&visitor, &here)?;
    let mine = Call::get(format!("{}/places/mine", room(event_id))).by(Some(token));
    let mut place = web.api.send(waiting(mine)).await;
    // No place (or a turn that passed unused): join (again).
    let lapsed = matches!(&place, Ok(p) if p["state"] == "LAPSED");
    if lapsed || matches!(&place, Err(p) if p.status == 404) {
        place = join_room(&web, token, event_id).await;
    }
    let place = place.map_err(|p| refused(&web, &visitor, &here, p))?;
    match place["state"].as_str() {
        Some("ADMITTED") => Ok(Redirect::to(&format!("/events/{event_id}?turn=1")).into_response()),
        Some("SOLD_OUT") => Err(sold_out_page(&web, &visitor, event_id)),
        _ => super::render(
            &web,
            &visitor,
            "queue.html",
            context! { event_id => event_id, ahead => place["ahead"] },
        ),
    }
}

/// Joins the event's waiting room (keeping a place already held), with a
/// few seconds' wait for the turn.
async fn join_room(web: &Web, token: &str, event_id: i64) -> Result<Value, Problem> {
    let join = Call::post(format!("{}/places", room(event_id)), None).by(Some(token));
    web.api.send(waiting(join)).await
}

/// A place asked for with a few seconds' wait for the turn.
fn waiting(call: Call<'_>) -> Call<'_> {
    call.header("prefer", "wait=5")
}

fn sold_out_page(web: &Web, visitor: &Visitor, event_id: i64) -> Response {
    book_refused(
        web,
        visitor,
        event_id,
        "Sold out: there are no seats left.",
        axum::http::StatusCode::CONFLICT,
    )
}

/// What a visitor refused as sold out is told: to come back, when the last
/// seats are only held for buyers still paying.
fn sold_out(p: &Problem) -> String {
    match p.retry_after {
        Some(secs) => format!(
            "Sold out for now: the last seats are held for buyers still paying, and are sold again if a payment fails. Try again in {secs} seconds."
        ),
        None => "Sold out: there are no seats left.".to_string(),
    }
}

fn book_refused(
    web: &Web,
    visitor: &Visitor,
    event_id: i64,
    message: &str,
    status: axum::http::StatusCode,
) -> Response {
    super::render_status(
        web,
        visitor,
        status,
        "error.html",
        context! {
            status => status.as_u16(),
            title => "Not booked",
            message => message,
            back => format!("/events/{event_id}"),
        },
    )
    .unwrap_or_else(|e| e)
}

pub async fn mine(State(web): State<Web>, Extension(visitor): Extension<Visitor>) -> Page {
    let token = signed_in(&visitor, "/bookings")?;
    let bookings = web
        .api
        .send(Call::get("/api/v1/bookings/mine?page_size=100").by(Some(token)))
        .await
        .map_err(|p| refused(&web, &visitor, "/bookings", p))?;
    let events = event_names(&web, &bookings["items"]).await;
    render(
        &web,
        &visitor,
        "bookings.html",
        context! { bookings => bookings["items"], events => events },
    )
}

/// What the notification service told the visitor, newest first.
pub async fn notifications(State(web): State<Web>, Extension(visitor): Extension<Visitor>) -> Page {
    let token = signed_in(&visitor, "/notifications")?;
    let told = web
        .api
        .send(Call::get("/api/v1/notifications/mine?page_size=50").by(Some(token)))
        .await
        .map_err(|p| refused(&web, &visitor, "/notifications", p))?;
    render(
        &web,
        &visitor,
        "notifications.html",
        context! { notifications => told["items"] },
    )
}

/// The names of the events the bookings are for, by id (one read each;
/// a customer has few).
async fn event_names(web: &Web, bookings: &Value) -> std::collections::BTreeMap<String, Value> {
    let mut ids: Vec<i64> = bookings
        .as_array()
        .map(|b| b.iter().filter_map(|b| b["event_id"].as_i64()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids.dedup();
    let mut found = Vec::with_capacity(ids.len());
    for id in &ids {
        found.push(web.api.send(Call::get(format!("/api/v1/events/{id}"))).await);
    }
    ids.into_iter()
        .zip(found)
        .filter_map(|(id, e)| e.ok().map(|e| (id.to_string(), e)))
        .collect()
}

/// A ticket's QR code as inline SVG: the ticket id, which is what a door
/// scanner checks.
fn qr_svg(ticket_id: &str) -> Option<String> {
    let id = uuid::Uuid::parse_str(ticket_id).ok()?;
    let code = qrcode::QrCode::new(id.to_string().as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(168, 168)
            .quiet_zone(true)
            .build(),
    )
}

#[derive(Debug, Deserialize)]
pub struct Shown {
    /// Set after the visitor asked to cancel: the refund is under way
    /// while the booking still reads CONFIRMED.
    cancelling: Option<String>,
}

/// A booking id from the address; anything else is a page that is not there.
fn booking_id(web: &Web, visitor: &Visitor, raw: &str) -> Result<uuid::Uuid, Response> {
    uuid::Uuid::parse_str(raw)
        .map_err(|_| super::page_error(web, Some(visitor), 404, "There is no such booking."))
}

pub async fn show(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<String>,
    axum::extract::Query(shown): axum::extract::Query<Shown>,
) -> Page {
    let here = format!("/bookings/{id}");
    let token = signed_in(&visitor, &here)?;
    let id = booking_id(&web, &visitor, &id)?;
    let booking = web
        .api
        .send(Call::get(format!("/api/v1/bookings/{id}")).by(Some(token)))
        .await
        .map_err(|p| refused(&web, &visitor, &here, p))?;
    let event = match booking["event_id"].as_i64() {
        Some(e) => web.api.send(Call::get(format!("/api/v1/events/{e}"))).await.ok(),
        None => None,
    };
    let tickets: Vec<Value> = booking["ticket_ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|t| t.as_str())
                .map(|t| json!({"id": t, "qr": qr_svg(t)}))
                .collect()
        })
        .unwrap_or_default();
    let cancelling = shown.cancelling.is_some();
    render(
        &web,
        &visitor,
        "booking.html",
        context! {
            booking => booking,
            event => event,
            tickets => tickets,
            pending => booking["status"] == "PENDING" || (cancelling && booking["status"] == "CONFIRMED"),
            cancelling => cancelling && booking["status"] == "CONFIRMED",
        },
    )
}

pub async fn cancel(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<String>,
) -> Page {
    let here = format!("/bookings/{id}");
    let token = signed_in(&visitor, &here)?;
    let id = booking_id(&web, &visitor, &id)?;
    web.api
        .send(Call::post(format!("/api/v1/bookings/{id}/cancel"), None).by(Some(token)))
        .await
        .map_err(|p| refused(&web, &visitor, &here, p))?;
    Ok(Redirect::to(&format!("/bookings/{id}?cancelling=1")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_get_a_qr_code_and_non_ids_none() {
        let svg = qr_svg("0190c1a8-7b3e-7cc4-9b8e-5f1d2a3b4c5d").unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
        assert_eq!(qr_svg("<script>"), None);
    }

    #[test]
    fn sold_out_for_now_says_when_to_come_back() {
        let mut p = Problem::unavailable("no tickets are left");
        assert_eq!(sold_out(&p), "Sold out: there are no seats left.");
        p.retry_after = Some(5);
        let now = sold_out(&p);
        assert!(
            now.starts_with("Sold out for now") && now.contains("in 5 seconds"),
            "{now}"
        );
    }
}
