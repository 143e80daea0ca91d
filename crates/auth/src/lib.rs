//! The auth service: registration, login, refresh-token rotation with reuse
//! detection, profile, role grants and the JWKS other services verify with.

mod domain;
mod error;
pub mod keys;
pub mod password;
mod provision;
mod routes;
mod service;
mod store;
pub mod throttle;

use std::{path::PathBuf, sync::Arc, time::Duration};

pub use error::AuthError;
use keys::SigningKey;
use password::{HashLimits, Hasher};
pub use provision::Provisioned;
pub use routes::ApiDoc;
use secrecy::{ExposeSecret, SecretString};
pub use service::AuthService;
use ticketer_config::{ConfigError, Env, InfraConfig, Service};
use ticketer_db::Db;
use ticketer_http::{Idempotency, ServiceApp, TokenVerifier};
use ticketer_runtime::{launch_with, Runtime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use store::MIGRATIONS;
use throttle::{LoginLimits, Throttle};
use ticketer_cache::Cache;

/// Where the signing key comes from.
#[derive(Clone)]
pub enum KeySource {
    Pem(SecretString),
    File(PathBuf),
}

#[derive(Clone)]
pub struct Config {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub key: KeySource,
    pub bootstrap_admin: Option<(String, SecretString)>,
    pub hashing: HashLimits,
    /// Failed sign-ins allowed before the next attempt waits.
    pub login_limits: LoginLimits,
    /// Proxies (the gateway) whose X-Forwarded-For is believed when telling
    /// who is signing in.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Config {
    /// `AUTH_JWT_PRIVATE_KEY` (PEM) or `AUTH_JWT_PRIVATE_KEY_FILE`, else a key
    /// generated once into `<data_dir>/auth-signing-key.pem`.
    pub fn from_env(env: &Env, data_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let env = env.for_service(Service::Auth);
        let key = match (env.get("JWT_PRIVATE_KEY"), env.get("JWT_PRIVATE_KEY_FILE")) {
            (Some(pem), _) => KeySource::Pem(pem.replace("\\n", "\n").into()),
            (None, Some(path)) => KeySource::File(path.into()),
            (None, None) => KeySource::File(data_dir.join("auth-signing-key.pem")),
        };
        let bootstrap_admin = match (
            env.get("BOOTSTRAP_ADMIN_EMAIL"),
            env.get("BOOTSTRAP_ADMIN_PASSWORD"),
        ) {
            (Some(email), Some(pw)) => Some((email, pw.into())),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "AUTH_BOOTSTRAP_ADMIN_EMAIL".into(),
                    message: "set both AUTH_BOOTSTRAP_ADMIN_EMAIL and AUTH_BOOTSTRAP_ADMIN_PASSWORD".into(),
                })
            }
        };
        let defaults = HashLimits::default();
        let hashing = HashLimits {
            permits: env.parse_or("HASH_CONCURRENCY", defaults.permits)?,
            queue: env.parse_or("HASH_QUEUE", defaults.queue)?,
            wait: Duration::from_millis(env.parse_or("HASH_WAIT_MS", defaults.wait.as_millis() as u64)?),
        };
        let login_defaults = LoginLimits::default();
        let login_limits = LoginLimits {
            failures: env.parse_or("LOGIN_FAILURES", login_defaults.failures)?,
            per_minute: env.parse_or("LOGIN_FAILURES_PER_MINUTE", login_defaults.per_minute)?,
        };
        let trusted_proxies = match env.shared("TRUSTED_PROXIES") {
            Some(_) => env.nets("TRUSTED_PROXIES")?,
            None => ["127.0.0.0/8", "::1/128"]
                .iter()
                .map(|n| n.parse().expect("a CIDR"))
                .collect(),
        };
        Ok(Config {
            hashing,
            login_limits,
            trusted_proxies,
            access_ttl: env.seconds_or("ACCESS_TOKEN_TTL_SECONDS", 15 * 60)?,
            refresh_ttl: env.seconds_or("REFRESH_TOKEN_TTL_SECONDS", 24 * 60 * 60)?,
            key,
            bootstrap_admin,
        })
    }

    pub fn signing_key(&self) -> anyhow::Result<SigningKey> {
        Ok(match &self.key {
            KeySource::Pem(pem) => SigningKey::from_pem(pem.expose_secret())?,
            KeySource::File(path) => SigningKey::load_or_create(path)?,
        })
    }
}

/// The auth service before it starts serving.
pub struct Auth {
    pub app: ServiceApp,
    pub service: AuthService,
    /// Verifies tokens with this instance's key, for in-process services.
    pub verifier: TokenVerifier,
}

pub async fn build(
    config: Config,
    infra: &InfraConfig,
    db: Db,
    bus: ticketer_bus::Bus,
    cache: Cache,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<Auth> {
    db.migrate("auth", MIGRATIONS).await?;
    let key = Arc::new(config.signing_key()?);
    let verifier = key.verifier(&infra.jwt_issuer);
    let service = AuthService {
        db: db.clone(),
        key,
        issuer: infra.jwt_issuer.clone(),
        access_ttl: config.access_ttl,
        refresh_ttl: config.refresh_ttl,
        hasher: Hasher::new(config.hashing),
        throttle: Throttle::new(cache.clone(), config.login_limits, config.trusted_proxies.clone()),
    };
    if let Some((email, password)) = &config.bootstrap_admin {
        let admin = service.ensure_admin(email, password.expose_secret()).await?;
        tracing::info!(user_id = %admin.id, "bootstrap administrator ready");
    }
    let runtime = Runtime::new(infra.clone(), db, bus, Some(cache), verifier.clone());
    let api = routes::router(service.clone());
    // Never replayed: a stored answer would be a token pair kept for a day,
    // and a retried login or refresh must mint its own tokens.
    let app = launch_with(
        "auth",
        api,
        ApiDoc::openapi(),
        runtime,
        listener,
        shutdown,
        Idempotency::Off,
    );
    Ok(Auth {
        app,
        service,
        verifier,
    })
}

/// The auth operations on `db` without serving them: for operator tooling
/// that works on the auth database directly.
pub async fn offline(config: &Config, infra: &InfraConfig, db: Db) -> anyhow::Result<AuthService> {
    db.migrate("auth", MIGRATIONS).await?;
    Ok(AuthService {
        db,
        key: Arc::new(config.signing_key()?),
        issuer: infra.jwt_issuer.clone(),
        access_ttl: config.access_ttl,
        refresh_ttl: config.refresh_ttl,
        hasher: Hasher::new(config.hashing),
        throttle: Throttle::off(),
    })
}

/// `ticketer admin create`: makes `email` an administrator, creating the
/// account if needed, directly in the auth database.
pub async fn create_admin(
    config: &Config,
    infra: &InfraConfig,
    db: Db,
    email: &str,
    password: &str,
) -> anyhow::Result<uuid::Uuid> {
    let service = offline(config, infra, db).await?;
    let user = service.ensure_admin(email, password).await.map_err(|e| match e {
        AuthError::Invalid(errors) => anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => other.into(),
    })?;
    Ok(user.id)
}
