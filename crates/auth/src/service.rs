//! The auth operations, between the HTTP handlers and the store.

use std::{net::IpAddr, sync::Arc, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::Utc;
use rand::RngCore;
use serde::Serialize;
use ticketer_contract::UserRegistered;
use ticketer_db::{enqueue, is_unique_violation, Db, Outbound};
use ticketer_http::{Claims, Role};
use uuid::Uuid;

use crate::{
    domain::{self, decide_refresh, RefreshDecision, RefreshState},
    keys::SigningKey,
    password::Hasher,
    store::{self, NewUser, User},
    throttle::{Keys, Throttle},
    AuthError,
};

#[derive(Clone)]
pub struct AuthService {
    pub(crate) db: Db,
    pub(crate) key: Arc<SigningKey>,
    pub(crate) issuer: String,
    pub(crate) access_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
    pub(crate) hasher: Hasher,
    pub(crate) throttle: Throttle,
}

/// What login and refresh hand back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
}

fn hash_refresh(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl AuthService {
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        first_name: &str,
        last_name: &str,
        role: Option<Role>,
    ) -> Result<User, AuthError> {
        let reg = domain::validate_registration(email, password, first_name, last_name, role)
            .map_err(AuthError::Invalid)?;
        let hash = self.hasher.hash(password.to_string()).await?;
        self.create_user(&reg.email, &hash, &reg.first_name, &reg.last_name, &[reg.role])
            .await
    }

    async fn create_user(
        &self,
        email: &str,
        hash: &str,
        first_name: &str,
        last_name: &str,
        roles: &[Role],
    ) -> Result<User, AuthError> {
        let mut tx = self.db.begin().await?;
        let new = NewUser {
            email,
            password_hash: hash,
            first_name,
            last_name,
            roles,
        };
        let id = match store::insert_user(&mut tx, &new).await {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) => return Err(AuthError::DuplicateEmail),
            Err(e) => return Err(e.into()),
        };
        let event = UserRegistered {
            user_id: id,
            email: email.to_string(),
            first_name: first_name.to_string(),
            last_name: last_name.to_string(),
            roles: roles.to_vec(),
        };
        enqueue(&mut tx, &[Outbound::new(&event).correlated(id)]).await?;
        let user = store::user_by_id(&mut tx, id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        tx.commit().await?;
        self.db.outbox_written();
        tracing::info!(user_id = %id, "user registered");
        Ok(user)
    }

    /// Signs in `from` the caller's address; failures are throttled (see
    /// [`crate::throttle`]), and a blocked caller is refused before any
    /// password is hashed.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<TokenPair, AuthError> {
        let keys = Keys::of(email, from);
        if let Some(retry_after_secs) = self.throttle.wait(&keys).await {
            return Err(AuthError::Throttled { retry_after_secs });
        }
        let user = match domain::parse_email(email) {
            Ok(email) => store::user_by_email(&self.db, &email).await?,
            Err(_) => None,
        };
        let ok = self
            .hasher
            .verify(
                password.to_string(),
                user.as_ref().map(|u| u.password_hash.clone()),
            )
            .await?;
        match user {
            Some(user) if ok => {
                let mut tx = self.db.begin().await?;
                let pair = self.issue(&mut tx, &user, &Uuid::new_v4().to_string()).await?;
                tx.commit().await?;
                self.throttle.succeeded(&keys).await;
                Ok(pair)
            }
            _ => {
                self.throttle.failed(&keys).await;
                Err(AuthError::BadCredentials)
            }
        }
    }

    async fn issue(
        &self,
        conn: &mut ticketer_db::AnyConnection,
        user: &User,
        family: &str,
    ) -> Result<TokenPair, AuthError> {
        let now = Utc::now();
        let claims = Claims {
            sub: user.id.to_string(),
            email: user.email.clone(),
            roles: user.roles.clone(),
            iat: now.timestamp(),
            exp: now.timestamp() + self.access_ttl.as_secs() as i64,
            iss: self.issuer.clone(),
            nbf: Some(now.timestamp()),
        };
        let refresh = new_refresh_token();
        let refresh_expiry =
            now + chrono::Duration::from_std(self.refresh_ttl).map_err(anyhow::Error::from)?;
        store::insert_refresh(conn, &hash_refresh(&refresh), user.id, family, refresh_expiry).await?;
        Ok(TokenPair {
            access_token: self.key.sign(&claims),
            token_type: "Bearer",
            expires_in: self.access_ttl.as_secs(),
            refresh_token: refresh,
        })
    }

    pub async fn refresh(&self, token: &str) -> Result<TokenPair, AuthError> {
        let hash = hash_refresh(token);
        let mut tx = self.db.begin().await?;
        let row = store::find_refresh(&mut tx, &hash)
            .await?
            .ok_or(AuthError::BadRefreshToken)?;
        let state = RefreshState {
            expires_at: row.expires_at,
            used: row.used,
            revoked: row.revoked,
        };
        match decide_refresh(state, Utc::now()) {
            RefreshDecision::Expired => Err(AuthError::RefreshExpired),
            RefreshDecision::Reuse => {
                store::revoke_family(&mut tx, &row.family_id).await?;
                tx.commit().await?;
                tracing::warn!(user_id = %row.user_id, "refresh token reuse; session revoked");
                Err(AuthError::RefreshReused)
            }
            RefreshDecision::Rotate => {
                if !store::mark_used(&mut tx, &hash).await? {
                    // Lost a race with a concurrent refresh of the same token.
                    return Err(AuthError::RefreshReused);
                }
                let user = store::user_by_id(&mut tx, row.user_id)
                    .await?
                    .ok_or(AuthError::BadRefreshToken)?;
                let pair = self.issue(&mut tx, &user, &row.family_id).await?;
                tx.commit().await?;
                Ok(pair)
            }
        }
    }

    /// Ends the session the refresh token belongs to. Unknown tokens are
    /// ignored: logging out twice is not an error.
    pub async fn logout(&self, token: &str) -> Result<(), AuthError> {
        let mut tx = self.db.begin().await?;
        if let Some(row) = store::find_refresh(&mut tx, &hash_refresh(token)).await? {
            store::revoke_family(&mut tx, &row.family_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn user(&self, id: Uuid) -> Result<User, AuthError> {
        let mut conn = self.db.reading().await?;
        store::user_by_id(&mut conn, id)
            .await?
            .ok_or(AuthError::UserNotFound)
    }

    /// Edits the caller's profile. A new password needs the current one
    /// (a stolen access token alone must not become the account) and ends
    /// every other session.
    pub async fn update_me(
        &self,
        id: Uuid,
        first_name: Option<String>,
        last_name: Option<String>,
        password: Option<String>,
        current_password: Option<String>,
    ) -> Result<User, AuthError> {
        let me = self.user(id).await?;
        let mut errors = Vec::new();
        let mut check = |field: &str, v: Option<String>, f: &dyn Fn(&str) -> Result<String, String>| {
            v.and_then(|v| match f(&v) {
                Ok(v) => Some(v),
                Err(m) => {
                    errors.push(ticketer_http::FieldError::new(field, m));
                    None
                }
            })
        };
        let first = check("first_name", first_name, &domain::parse_name);
        let last = check("last_name", last_name, &domain::parse_name);
        let wants_new_password = password.is_some();
        let pw = check("password", password, &|p| {
            domain::check_password(p, &me.email).map(|_| p.to_string())
        });
        if wants_new_password && current_password.is_none() {
            errors.push(ticketer_http::FieldError::new(
                "current_password",
                "is required to change the password",
            ));
        }
        if !errors.is_empty() {
            return Err(AuthError::Invalid(errors));
        }
        if let (Some(_), Some(current)) = (&pw, current_password) {
            let matches = self
                .hasher
                .verify(current, Some(me.password_hash.clone()))
                .await?;
            if !matches {
                return Err(AuthError::Invalid(vec![ticketer_http::FieldError::new(
                    "current_password",
                    "is not your current password",
                )]));
            }
        }
        let hash = match pw {
            Some(p) => Some(self.hasher.hash(p).await?),
            None => None,
        };
        let mut tx = self.db.begin().await?;
        store::update_profile(&mut tx, id, first.as_deref(), last.as_deref(), hash.as_deref()).await?;
        if hash.is_some() {
            // A new password ends every other session.
            store::revoke_all_for_user(&mut tx, id).await?;
        }
        let user = store::user_by_id(&mut tx, id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        tx.commit().await?;
        Ok(user)
    }

    /// Users for an administrator's list, newest first.
    pub async fn users(
        &self,
        q: Option<&str>,
        page: ticketer_http::PageRequest,
    ) -> Result<(Vec<User>, i64), AuthError> {
        Ok(store::list_users(&self.db, q, page.limit(), page.offset()).await?)
    }

    pub async fn grant(&self, id: Uuid, role: Role) -> Result<User, AuthError> {
        let mut tx = self.db.begin().await?;
        store::user_by_id(&mut tx, id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        store::grant_role(&mut tx, id, role).await?;
        let user = store::user_by_id(&mut tx, id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn revoke(&self, id: Uuid, role: Role) -> Result<User, AuthError> {
        self.user(id).await?;
        store::revoke_role(&self.db, id, role).await?;
        self.user(id).await
    }

    /// Creates an administrator, or makes an existing user one. Used by
    /// `ticketer admin create` and the bootstrap variables.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<User, AuthError> {
        let email = domain::parse_email(email)
            .map_err(|m| AuthError::Invalid(vec![ticketer_http::FieldError::new("email", m)]))?;
        domain::check_password(password, &email)
            .map_err(|m| AuthError::Invalid(vec![ticketer_http::FieldError::new("password", m)]))?;
        if let Some(user) = store::user_by_email(&self.db, &email).await? {
            return self.grant(user.id, Role::Admin).await;
        }
        let hash = self.hasher.hash(password.to_string()).await?;
        self.create_user(&email, &hash, "Admin", "User", &[Role::Admin])
            .await
    }
}
