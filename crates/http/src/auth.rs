//! Access-token validation, done locally by every service with the auth
//! service's public keys (from its JWKS document, or handed over in-process
//! when embedded).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::{extract::FromRequestParts, http::request::Parts};
use ed25519_dalek::VerifyingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;

pub use ticketer_contract::Role;

use crate::ApiError;

mod jwt;

/// The access token's claims (see CONTRACT.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub roles: Vec<Role>,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// Not valid before this time, when set (checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed, wrongly signed, or not ours; the words are for the log.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("token has no key id")]
    NoKeyId,
    #[error("could not fetch signing keys: {0}")]
    KeysUnavailable(String),
}

impl TokenError {
    /// A well-signed token past its `exp`: worth a refresh, not a login.
    pub fn is_expired(&self) -> bool {
        matches!(self, TokenError::Expired)
    }

    /// Why the token was refused, in words a client can act on: log in
    /// again (expired), wait (not valid yet), or get a real token.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Expired => "the token has expired",
            TokenError::NotYetValid => "the token is not valid yet",
            TokenError::Invalid(_) | TokenError::UnknownKey | TokenError::NoKeyId => "the token is invalid",
            TokenError::KeysUnavailable(_) => "token validation is unavailable",
        }
    }
}

enum KeySource {
    /// Keys handed over in-process.
    Static,
    /// Fetched from the auth service's JWKS endpoint and cached.
    Jwks { url: String, client: reqwest::Client },
}

struct Inner {
    issuer: String,
    keys: RwLock<HashMap<String, VerifyingKey>>,
    source: KeySource,
    /// When keys were last fetched, and whether that worked.
    last_fetch: Mutex<Option<(Instant, bool)>>,
    /// Tokens whose signature was found good, with their claims: a client
    /// sends the same token with every request until it expires (a page's
    /// several calls, a booking followed up), and a signature check is
    /// ~60 us. Emptied when the keys change and when full.
    checked: std::sync::Mutex<HashMap<Arc<str>, Claims>>,
    /// How many tokens `checked` holds at most.
    remembered: usize,
    /// Signatures checked, for the tests.
    #[cfg(test)]
    signature_checks: std::sync::atomic::AtomicUsize,
}

/// Tokens remembered as checked per process (a few hundred bytes each).
const REMEMBERED_TOKENS: usize = 4096;

/// Validates access tokens; cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

/// Unknown key ids trigger a refetch at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(5);

impl TokenVerifier {
    /// Checks tokens against these public keys (key id, the 32 bytes of
    /// an Ed25519 public key); bytes that are no curve point could verify
    /// nothing and are left out.
    pub fn with_keys(issuer: &str, keys: Vec<(String, [u8; 32])>) -> Self {
        let keys = keys
            .into_iter()
            .filter_map(|(kid, bytes)| match VerifyingKey::from_bytes(&bytes) {
                Ok(key) => Some((kid, key)),
                Err(_) => {
                    tracing::error!(%kid, "public key is not an Ed25519 point; left out");
                    None
                }
            })
            .collect();
        Self::new(issuer, keys, KeySource::Static)
    }

    pub fn from_jwks_url(issuer: &str, url: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        Self::new(
            issuer,
            HashMap::new(),
            KeySource::Jwks {
                url: url.to_string(),
                client,
            },
        )
    }

    fn new(issuer: &str, keys: HashMap<String, VerifyingKey>, source: KeySource) -> Self {
        TokenVerifier {
            inner: Arc::new(Inner {
                issuer: issuer.to_string(),
                keys: RwLock::new(keys),
                source,
                last_fetch: Mutex::new(None),
                checked: std::sync::Mutex::new(HashMap::new()),
                remembered: REMEMBERED_TOKENS,
                #[cfg(test)]
                signature_checks: Default::default(),
            }),
        }
    }

    fn recall(&self, token: &str) -> Option<Claims> {
        self.inner
            .checked
            .lock()
            .expect("checked lock")
            .get(token)
            .cloned()
    }

    fn remember(&self, token: &str, claims: &Claims) {
        let mut checked = self.inner.checked.lock().expect("checked lock");
        // Bounded the simple way: a crowd of new tokens starts it afresh.
        if checked.len() >= self.inner.remembered {
            checked.clear();
        }
        checked.insert(token.into(), claims.clone());
    }

    fn key(&self, kid: &str) -> Option<VerifyingKey> {
        self.inner.keys.read().expect("keys lock").get(kid).copied()
    }

    async fn refresh(&self) -> Result<(), TokenError> {
        let KeySource::Jwks { url, client } = &self.inner.source else {
            return Ok(());
        };
        let mut last = self.inner.last_fetch.lock().await;
        match *last {
            Some((at, true)) if at.elapsed() < REFETCH_INTERVAL => return Ok(()),
            // Still unreachable a moment ago: say so, rather than calling
            // a good token unknown.
            Some((at, false)) if at.elapsed() < REFETCH_INTERVAL => {
                return Err(TokenError::KeysUnavailable(
                    "the auth service did not answer".into(),
                ))
            }
            _ => {}
        }
        let fetch = async {
            let set: JwkSet = client.get(url).send().await?.error_for_status()?.json().await?;
            Ok::<_, reqwest::Error>(set)
        };
        let fetched = fetch.await;
        *last = Some((Instant::now(), fetched.is_ok()));
        let set = fetched.map_err(|e| TokenError::KeysUnavailable(e.to_string()))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
                continue;
            };
            if okp.curve != EllipticCurve::Ed25519 {
                continue;
            }
            if let (Some(kid), Some(key)) = (jwk.common.key_id.clone(), jwt::okp_key(&okp.x)) {
                keys.insert(kid, key);
            }
        }
        *self.inner.keys.write().expect("keys lock") = keys;
        // A key gone from the set takes its tokens' good name with it.
        self.inner.checked.lock().expect("checked lock").clear();
        Ok(())
    }

    /// Checks signature, issuer and expiry (no leeway: expired means expired).
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, chrono::Utc::now().timestamp()).await
    }

    /// [`Self::verify`] at `now` (Unix seconds). A token checked before is
    /// not checked again, but its dates are.
    async fn verify_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if let Some(claims) = self.recall(token) {
            jwt::current(&claims, now)?;
            return Ok(claims);
        }
        let parsed = jwt::parse(token)?;
        let key = match self.key(&parsed.kid) {
            Some(k) => k,
            None => {
                self.refresh().await?;
                self.key(&parsed.kid).ok_or(TokenError::UnknownKey)?
            }
        };
        #[cfg(test)]
        self.inner
            .signature_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let claims = parsed.check(&key, &self.inner.issuer, now)?;
        self.remember(token, &claims);
        Ok(claims)
    }
}

/// A request's bearer token, read but with its signature not yet checked:
/// what it claims. Enough to give an answer anyone may have (an event is
/// sold out, which GET availability tells anonymous callers too) without
/// paying for a signature check, which was most of the cost of refusing
/// a flash sale's late buyers; never enough to act for someone or show
/// them anything of theirs: that takes [`Bearer::verified`].
pub struct Bearer {
    token: String,
    verifier: TokenVerifier,
    claims: Claims,
    id: Uuid,
}

impl Bearer {
    /// Who the token says the caller is.
    pub fn claimed_id(&self) -> Uuid {
        self.id
    }

    /// Whether the token says the caller has `role` (admins have every).
    pub fn claims_role(&self, role: Role) -> bool {
        self.claims.roles.contains(&role) || self.claims.roles.contains(&Role::Admin)
    }

    /// The caller, once the token's signature is checked.
    pub async fn verified(&self) -> Result<AuthUser, ApiError> {
        let claims = self.verifier.verify(&self.token).await.map_err(refused)?;
        user_of(claims)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    /// 401 for what needs no signature check to refuse: no token, a
    /// malformed one, another issuer's, or one past its expiry.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let verifier = verifier_of(parts)?;
        let token =
            bearer_token(parts).ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
        let claims = jwt::parse(token)
            .and_then(|t| t.claims(&verifier.inner.issuer, chrono::Utc::now().timestamp()))
            .map_err(refused)?;
        let id = subject(&claims)?;
        Ok(Bearer {
            token: token.to_string(),
            verifier,
            claims,
            id,
        })
    }
}

/// The authenticated caller. Extracting it answers 401 when the bearer
/// token is missing, malformed, tampered with or expired.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: String,
    pub roles: Vec<Role>,
}

impl AuthUser {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// 403 unless the caller has `role` (admins pass every role check).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.has(role) || self.has(Role::Admin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("requires the {role} role")))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin)
    }
}

/// The bearer token of a request, if any.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer_from_headers(&parts.headers)
}

pub fn bearer_from_headers(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let verifier = verifier_of(parts)?;
        let token =
            bearer_token(parts).ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
        user_of(verifier.verify(token).await.map_err(refused)?)
    }
}

fn verifier_of(parts: &Parts) -> Result<TokenVerifier, ApiError> {
    parts
        .extensions
        .get::<TokenVerifier>()
        .cloned()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no token verifier installed")))
}

/// The answer to a refused token.
fn refused(e: TokenError) -> ApiError {
    match e {
        TokenError::KeysUnavailable(msg) => {
            tracing::error!(error = %msg, "cannot validate tokens");
            ApiError::Unavailable("token validation is unavailable".into())
        }
        other => {
            // The details stay in the log; the client gets what it can
            // act on.
            tracing::debug!(error = %other, "token refused");
            ApiError::Unauthorized(other.reason().into())
        }
    }
}

fn subject(claims: &Claims) -> Result<Uuid, ApiError> {
    Uuid::parse_str(&claims.sub).map_err(|_| ApiError::Unauthorized("invalid token subject".into()))
}

fn user_of(claims: Claims) -> Result<AuthUser, ApiError> {
    Ok(AuthUser {
        id: subject(&claims)?,
        email: claims.email,
        roles: claims.roles,
    })
}

/// The caller if a valid token was sent; anonymous otherwise. A token that
/// is present but invalid is still a 401.
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if bearer_token(parts).is_none() {
            return Ok(MaybeAuthUser(None));
        }
        AuthUser::from_request_parts(parts, state)
            .await
            .map(|u| MaybeAuthUser(Some(u)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verifier that knows `key` (as `k1`), for tokens of ticketer-auth.
    fn knowing(key: &ed25519_dalek::SigningKey) -> TokenVerifier {
        TokenVerifier::with_keys(
            "ticketer-auth",
            vec![("k1".into(), key.verifying_key().to_bytes())],
        )
    }

    /// A ticketer-auth token for `sub` with `role`, issued at `iat`,
    /// expiring at `exp`, signed with `key`.
    fn token_of(key: &ed25519_dalek::SigningKey, sub: &str, role: &str, iat: i64, exp: i64) -> String {
        jwt::signed(
            key,
            &serde_json::json!({"sub": sub, "email": "a@x.io", "roles": [role],
                                "iat": iat, "exp": exp, "iss": "ticketer-auth"}),
        )
    }

    #[tokio::test]
    async fn unreachable_key_server_is_unavailable_not_unauthorized() {
        // Port 9 (discard) is closed on test machines.
        let v = TokenVerifier::from_jwks_url("ticketer-auth", "http://127.0.0.1:9/jwks.json");
        // Well formed (a 64-byte signature), with a key id nobody knows.
        let token = format!(
            "eyJhbGciOiJFZERTQSIsImtpZCI6ImFiYyJ9.eyJzdWIiOiJ4In0.{}",
            "A".repeat(86)
        );
        for _ in 0..2 {
            let err = v.verify(&token).await.unwrap_err();
            assert!(matches!(err, TokenError::KeysUnavailable(_)), "{err}");
        }
        // A malformed token is refused without asking for keys at all.
        let err = v.verify(&token[..token.len() - 2]).await.unwrap_err();
        assert!(matches!(err, TokenError::Invalid(_)), "{err}");
    }

    #[tokio::test]
    async fn a_token_checked_earlier_in_the_request_is_not_checked_again() {
        // A layer in front (Idempotency-Key's) checks the caller first; the
        // handler's AuthUser then finds the token remembered.
        let key = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
        let v = knowing(&key);
        let now = chrono::Utc::now().timestamp();
        let sub = Uuid::new_v4().to_string();
        let token = token_of(&key, &sub, "CUSTOMER", now, now + 60);
        let request = |bearer: &str| {
            let (mut parts, ()) = axum::http::Request::builder()
                .header(axum::http::header::AUTHORIZATION, format!("Bearer {bearer}"))
                .body(())
                .unwrap()
                .into_parts();
            parts.extensions.insert(v.clone());
            parts
        };
        let checks = || {
            v.inner
                .signature_checks
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        v.verify(&token).await.unwrap();
        let user = AuthUser::from_request_parts(&mut request(&token), &())
            .await
            .unwrap();
        assert_eq!(user.id.to_string(), sub);
        assert_eq!(checks(), 1);
        // Another token than the one checked is checked itself (and fails).
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let other = token_of(&stranger, &sub, "CUSTOMER", now, now + 60);
        assert!(AuthUser::from_request_parts(&mut request(&other), &())
            .await
            .is_err());
        assert_eq!(checks(), 2);
    }

    #[tokio::test]
    async fn a_token_is_checked_once_and_still_expires() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let v = knowing(&key);
        let now = chrono::Utc::now().timestamp();
        let token = |sub: &str, exp: i64| token_of(&key, sub, "CUSTOMER", now, exp);
        let checks = || {
            v.inner
                .signature_checks
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let a = token("a", now + 60);
        for _ in 0..3 {
            assert_eq!(v.verify_at(&a, now).await.unwrap().sub, "a");
        }
        assert_eq!(checks(), 1);
        // Remembered, yet refused once its time is up.
        assert!(matches!(
            v.verify_at(&a, now + 60).await,
            Err(TokenError::Expired)
        ));
        // Another token is another check, and a bad one is never remembered.
        assert_eq!(v.verify_at(&token("b", now + 60), now).await.unwrap().sub, "b");
        let forger = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let forged = token_of(&forger, "a", "ADMIN", now, now + 60);
        for _ in 0..2 {
            assert!(v.verify_at(&forged, now).await.is_err());
        }
        assert_eq!(checks(), 4);
    }

    #[tokio::test]
    async fn the_tokens_remembered_are_bounded() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let mut v = knowing(&key);
        Arc::get_mut(&mut v.inner).unwrap().remembered = 4;
        let now = chrono::Utc::now().timestamp();
        for i in 0..10 {
            let t = token_of(&key, &i.to_string(), "CUSTOMER", now, now + 60);
            v.verify_at(&t, now).await.unwrap();
            assert!(v.inner.checked.lock().unwrap().len() <= 4);
        }
    }

    #[tokio::test]
    async fn garbage_tokens_are_invalid() {
        let v = TokenVerifier::with_keys("ticketer-auth", vec![]);
        assert!(matches!(v.verify("not-a-jwt").await, Err(TokenError::Invalid(_))));
    }
}
