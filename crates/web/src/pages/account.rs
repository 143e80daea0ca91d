//! Logging in and out, making an account, and changing one's name and
//! password.

use std::collections::BTreeMap;

use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Extension, Form,
};
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::{refused, render, render_status, safe_next, signed_in as signed_in_as, Page};
use crate::{
    api::{Call, Problem},
    session::{end_session, session_cookies, Visitor},
    Web,
};

#[derive(Debug, Deserialize)]
pub struct Next {
    next: Option<String>,
}

pub async fn login_form(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Query(q): Query<Next>,
) -> Page {
    render(
        &web,
        &visitor,
        "login.html",
        context! { next => safe_next(q.next.as_deref()), email => "" },
    )
}

#[derive(Debug, Deserialize)]
pub struct Login {
    email: String,
    password: String,
    next: Option<String>,
}

fn signed_in(web: &Web, answer: &serde_json::Value, next: &str) -> Response {
    let mut resp = Redirect::to(next).into_response();
    for c in session_cookies(answer, web.secure_cookies) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

pub async fn login(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Form(f): Form<Login>,
) -> Page {
    let next = safe_next(f.next.as_deref()).to_string();
    let answer = web
        .api
        .send(Call::post(
            "/api/v1/auth/login",
            Some(json!({"email": f.email.trim(), "password": f.password})),
        ))
        .await;
    match answer {
        Ok(pair) => Ok(signed_in(&web, &pair, &next)),
        Err(p) => {
            let (status, message) = match p.status {
                401 => (
                    StatusCode::UNAUTHORIZED,
                    "That email and password do not match an account.".to_string(),
                ),
                429 => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts. Wait a minute, then try again.".to_string(),
                ),
                _ => (status_of(&p), explain(&p)),
            };
            render_status(
                &web,
                &visitor,
                status,
                "login.html",
                context! { next => next, email => f.email.trim(), error => message },
            )
        }
    }
}

pub async fn register_form(State(web): State<Web>, Extension(visitor): Extension<Visitor>) -> Page {
    render(
        &web,
        &visitor,
        "register.html",
        context! { form => context! { role => "CUSTOMER" } },
    )
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Register {
    email: String,
    password: String,
    first_name: String,
    last_name: String,
    #[serde(default)]
    role: String,
}

pub async fn register(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Form(f): Form<Register>,
) -> Page {
    let role = if f.role == "ORGANIZER" {
        "ORGANIZER"
    } else {
        "CUSTOMER"
    };
    let made = web
        .api
        .send(Call::post(
            "/api/v1/auth/register",
            Some(json!({"email": f.email.trim(), "password": f.password,
                "first_name": f.first_name.trim(), "last_name": f.last_name.trim(), "role": role})),
        ))
        .await;
    if let Err(p) = made {
        return render_status(
            &web,
            &visitor,
            status_of(&p),
            "register.html",
            context! {
                form => context! { email => f.email.trim(), first_name => f.first_name.trim(),
                    last_name => f.last_name.trim(), role => role },
                error => explain(&p),
                errors => field_errors(&p),
            },
        );
    }
    let pair = web
        .api
        .send(Call::post(
            "/api/v1/auth/login",
            Some(json!({"email": f.email.trim(), "password": f.password})),
        ))
        .await;
    match pair {
        Ok(pair) => Ok(signed_in(
            &web,
            &pair,
            if role == "ORGANIZER" { "/organizer" } else { "/" },
        )),
        // The account exists; logging in is the visitor's next step.
        Err(_) => Ok(Redirect::to("/login").into_response()),
    }
}

pub async fn logout(State(web): State<Web>, Extension(visitor): Extension<Visitor>) -> Response {
    if let Some(r) = visitor.refresh.as_deref() {
        // Revoked at the auth service, so a copied cookie is worth nothing.
        let _ = web
            .api
            .send(
                Call::post("/api/v1/auth/logout", Some(json!({"refresh_token": r})))
                    .by(visitor.token.as_deref()),
            )
            .await;
    }
    signed_out(&web, "/")
}

/// A redirect to `to` that ends the browser's session.
fn signed_out(web: &Web, to: &str) -> Response {
    let mut resp = Redirect::to(to).into_response();
    for c in end_session(web.secure_cookies) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

#[derive(Debug, Deserialize)]
pub struct Saved {
    saved: Option<String>,
}

/// The visitor's own profile, as the auth service has it.
async fn me(web: &Web, visitor: &Visitor, token: &str) -> Result<serde_json::Value, Response> {
    web.api
        .send(Call::get("/api/v1/auth/me").by(Some(token)))
        .await
        .map_err(|p| refused(web, visitor, "/account", p))
}

/// The account page: `saved` says which form was just saved.
pub async fn show(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Query(q): Query<Saved>,
) -> Page {
    let token = signed_in_as(&visitor, "/account")?;
    let me = me(&web, &visitor, token).await?;
    let saved = q.saved.filter(|s| s == "profile" || s == "password");
    render(
        &web,
        &visitor,
        "account.html",
        context! { me => me, saved => saved },
    )
}

#[derive(Debug, Deserialize)]
pub struct Profile {
    first_name: String,
    last_name: String,
}

pub async fn save_profile(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Form(f): Form<Profile>,
) -> Page {
    let token = signed_in_as(&visitor, "/account")?;
    let body = json!({"first_name": f.first_name.trim(), "last_name": f.last_name.trim()});
    match web
        .api
        .send(Call::patch("/api/v1/auth/me", body).by(Some(token)))
        .await
    {
        Ok(_) => Ok(Redirect::to("/account?saved=profile").into_response()),
        Err(p) if p.status == 401 => Err(refused(&web, &visitor, "/account", p)),
        Err(p) => {
            let mut shown = me(&web, &visitor, token).await?;
            // What was typed stays in the form.
            shown["first_name"] = json!(f.first_name.trim());
            shown["last_name"] = json!(f.last_name.trim());
            render_status(
                &web,
                &visitor,
                status_of(&p),
                "account.html",
                context! { me => shown, profile_error => explain(&p), profile_errors => field_errors(&p) },
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct NewPassword {
    current_password: String,
    password: String,
    password_again: String,
}

/// Changes the password; the auth service then ends every session, this
/// one included, so the visitor is signed in again with the new password.
pub async fn change_password(
    State(web): State<Web>,
    Extension(visitor): Extension<Visitor>,
    Form(f): Form<NewPassword>,
) -> Page {
    let token = signed_in_as(&visitor, "/account")?;
    let shown = me(&web, &visitor, token).await?;
    let refuse = |status: StatusCode, error: String, errors: BTreeMap<String, String>| {
        render_status(
            &web,
            &visitor,
            status,
            "account.html",
            context! { me => shown.clone(), password_error => error, password_errors => errors },
        )
    };
    if f.password != f.password_again {
        let errors = [(
            "password_again".to_string(),
            "does not match the new password".to_string(),
        )];
        return refuse(
            StatusCode::BAD_REQUEST,
            "Please correct the fields marked below.".into(),
            errors.into_iter().collect(),
        );
    }
    let body = json!({"password": f.password, "current_password": f.current_password});
    match web
        .api
        .send(Call::patch("/api/v1/auth/me", body).by(Some(token)))
        .await
    {
        Ok(_) => {}
        Err(p) if p.status == 401 => return Err(refused(&web, &visitor, "/account", p)),
        Err(p) => return refuse(status_of(&p), explain(&p), field_errors(&p)),
    }
    let email = shown["email"].as_str().unwrap_or_default();
    let pair = web
        .api
        .send(Call::post(
            "/api/v1/auth/login",
            Some(json!({"email": email, "password": f.password})),
        ))
        .await;
    match pair {
        Ok(pair) => Ok(signed_in(&web, &pair, "/account?saved=password")),
        // Changed, but the new session could not be made: log in again.
        Err(_) => Ok(signed_out(&web, "/login?next=%2Faccount")),
    }
}

/// The fields a refusal named, by name, for a form's template.
pub fn field_errors(p: &Problem) -> BTreeMap<String, String> {
    p.fields.iter().cloned().collect()
}

pub fn status_of(p: &Problem) -> StatusCode {
    StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST)
}

/// A refusal in one sentence: the fields the service named, else its detail.
pub fn explain(p: &Problem) -> String {
    if p.fields.is_empty() {
        if p.detail.is_empty() {
            p.title.clone()
        } else {
            p.detail.clone()
        }
    } else {
        "Please correct the fields marked below.".to_string()
    }
}
