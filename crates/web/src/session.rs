//! Who is visiting, from cookies: the access and refresh tokens the auth
//! service issued (HttpOnly, SameSite=Lax, Secure behind TLS), refreshed
//! when the access token has expired; and a CSRF token that every POST must
//! carry back in its form (checked here, for every form at once).

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use http_body_util::BodyExt;
use serde_json::json;
use ticketer_http::Role;

use crate::{api::Call, pages::page_error, Web};

pub const ACCESS: &str = "tk_access";
pub const REFRESH: &str = "tk_refresh";
pub const CSRF: &str = "tk_csrf";
/// The form field that carries the CSRF token back.
pub const CSRF_FIELD: &str = "csrf";
/// Forms are small; anything bigger is not ours.
const FORM_LIMIT: usize = 64 * 1024;
/// The refresh cookie lives as long as a refresh token may (the auth
/// service decides the real limit).
const REFRESH_AGE_SECS: i64 = 30 * 24 * 3600;

#[derive(Debug, Clone, serde::Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub roles: Vec<&'static str>,
}

impl User {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role.as_str())
    }
}

/// The visitor of one request, put in the request's extensions.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub token: Option<String>,
    /// The refresh token of the session (the new one when this request
    /// refreshed it), for logging out.
    pub refresh: Option<String>,
    pub user: Option<User>,
    pub csrf: String,
}

fn cookies(req: &Request) -> Vec<(String, String)> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// A Set-Cookie value; `max_age` 0 deletes the cookie.
pub fn cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The Set-Cookie values that start a session from a login's answer.
pub fn session_cookies(answer: &serde_json::Value, secure: bool) -> Vec<HeaderValue> {
    let access = answer["access_token"].as_str().unwrap_or_default();
    let refresh = answer["refresh_token"].as_str().unwrap_or_default();
    let expires_in = answer["expires_in"].as_i64().unwrap_or(900);
    vec![
        cookie(ACCESS, access, expires_in, secure),
        cookie(REFRESH, refresh, REFRESH_AGE_SECS, secure),
    ]
}

pub fn end_session(secure: bool) -> Vec<HeaderValue> {
    vec![cookie(ACCESS, "", 0, secure), cookie(REFRESH, "", 0, secure)]
}

fn new_csrf() -> String {
    let mut bytes = [0u8; 24];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Only a form token equal to the cookie's passes, compared in time that
/// does not say where they differ.
fn same(a: &str, b: &str) -> bool {
    ticketer_http::same_secret(a, b)
}

fn user_of(claims: ticketer_http::Claims) -> User {
    User {
        id: claims.sub,
        email: claims.email,
        roles: claims.roles.iter().map(|r| r.as_str()).collect(),
    }
}

pub async fn visit(State(web): State<Web>, req: Request, next: Next) -> Response {
    let jar = cookies(&req);
    let get = |name: &str| {
        jar.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let mut set: Vec<HeaderValue> = Vec::new();
    let csrf = match get(CSRF) {
        Some(c) if c.len() >= 32 => c,
        _ => {
            let c = new_csrf();
            set.push(cookie(CSRF, &c, REFRESH_AGE_SECS, web.secure_cookies));
            c
        }
    };

    let req = if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let bytes = match http_body_util::Limited::new(body, FORM_LIMIT).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return page_error(&web, None, 413, "That form was too large.").into_response(),
        };
        let sent = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .ok()
            .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v));
        if !sent.is_some_and(|s| same(&s, &csrf)) {
            let mut resp = page_error(
                &web,
                None,
                403,
                "This form had expired or did not come from this site. Go back, reload the page and try again.",
            )
            .into_response();
            for c in set {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            return resp;
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };

    let mut token = get(ACCESS);
    let mut user = None;
    if let Some(t) = token.clone() {
        match web.verifier.verify(&t).await {
            Ok(claims) => user = Some(user_of(claims)),
            Err(_) => token = None,
        }
    }
    let mut refresh = get(REFRESH);
    if user.is_none() {
        if let Some(old) = refresh.clone() {
            let answer = web
                .api
                .send(Call::post(
                    "/api/v1/auth/refresh",
                    Some(json!({"refresh_token": old})),
                ))
                .await;
            match answer {
                Ok(pair) => {
                    let access = pair["access_token"].as_str().unwrap_or_default().to_string();
                    if let Ok(claims) = web.verifier.verify(&access).await {
                        user = Some(user_of(claims));
                        token = Some(access);
                        refresh = pair["refresh_token"].as_str().map(str::to_string);
                        set.extend(session_cookies(&pair, web.secure_cookies));
                    }
                }
                Err(p) if p.status < 500 => {
                    refresh = None;
                    set.extend(end_session(web.secure_cookies));
                }
                // The auth service is away: keep the refresh token for later.
                Err(_) => {}
            }
        } else if get(ACCESS).is_some() {
            set.push(cookie(ACCESS, "", 0, web.secure_cookies));
        }
    }

    let mut req = req;
    req.extensions_mut().insert(Visitor {
        token,
        refresh,
        user,
        csrf,
    });
    let mut resp = next.run(req).await;
    // What the page itself set wins (a logout ends the session this
    // request may just have refreshed).
    let own: Vec<String> = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok()?.split_once('=').map(|(name, _)| name.to_string()))
        .collect();
    for c in set {
        let name = c.to_str().ok().and_then(|c| c.split_once('=')).map(|(n, _)| n);
        if !name.is_some_and(|n| own.iter().any(|o| o == n)) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_and_same_site() {
        let c = cookie(ACCESS, "abc", 900, false);
        assert_eq!(c, "tk_access=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=900");
        let c = cookie(REFRESH, "", 0, true);
        assert!(c.to_str().unwrap().ends_with("Max-Age=0; Secure"));
    }

    #[test]
    fn csrf_tokens_are_fresh_and_compared_whole() {
        let a = new_csrf();
        assert!(a.len() >= 32);
        assert_ne!(a, new_csrf());
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &a[..a.len() - 1]));
        assert!(!same(&a, ""));
    }
}
