//! Settings shared by every Ticketer service.
//!
//! Configuration is 12-factor: each service reads `<PREFIX><KEY>` variables
//! (`AUTH_PORT`, `TICKET_DATABASE_URL`, ...) and falls back to the unprefixed
//! name for settings that are naturally shared (`AMQP_URL`, `REDIS_URL`).
//! An [`Env`] is a snapshot of those variables, so tests can build services
//! from a map instead of mutating the process environment.

use std::{collections::HashMap, fmt, path::PathBuf, str::FromStr, time::Duration};

/// The seven services, with the ports and variable prefixes fixed by the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Gateway,
    Auth,
    Events,
    Notification,
    Booking,
    Ticket,
    Payment,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Gateway,
        Service::Auth,
        Service::Events,
        Service::Notification,
        Service::Booking,
        Service::Ticket,
        Service::Payment,
    ];

    /// Every service except the gateway, in start-up order.
    pub const BACKENDS: [Service; 6] = [
        Service::Auth,
        Service::Events,
        Service::Notification,
        Service::Booking,
        Service::Ticket,
        Service::Payment,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Auth => "auth",
            Service::Events => "events",
            Service::Notification => "notification",
            Service::Booking => "booking",
            Service::Ticket => "ticket",
            Service::Payment => "payment",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Service::Gateway => 5000,
            Service::Auth => 4040,
            Service::Events => 4041,
            Service::Notification => 4042,
            Service::Booking => 5200,
            Service::Ticket => 8082,
            Service::Payment => 8090,
        }
    }

    pub fn env_prefix(self) -> &'static str {
        match self {
            Service::Gateway => "GATEWAY_",
            Service::Auth => "AUTH_",
            Service::Events => "EVENTS_",
            Service::Notification => "NOTIFICATION_",
            Service::Booking => "BOOKING_",
            Service::Ticket => "TICKET_",
            Service::Payment => "PAYMENT_",
        }
    }

    /// The first path segment under `/api/v1/` that the gateway routes here.
    pub fn api_segment(self) -> Option<&'static str> {
        match self {
            Service::Gateway => None,
            Service::Auth => Some("auth"),
            Service::Events => Some("events"),
            Service::Notification => Some("notifications"),
            Service::Booking => Some("bookings"),
            Service::Ticket => Some("tickets"),
            Service::Payment => Some("payments"),
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|svc| svc.name() == s)
            .ok_or_else(|| ConfigError::Invalid {
                key: "service".into(),
                message: format!(
                    "unknown service `{s}`; expected one of gateway, auth, events, notification, booking, ticket, payment"
                ),
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{0} is required")]
    Missing(String),
}

/// The secret one service shows another when it calls it directly
/// (`SERVICE_TOKEN`, the same for every service): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceToken(String);

impl ServiceToken {
    pub fn new(secret: impl Into<String>) -> Self {
        ServiceToken(secret.into())
    }

    /// `SERVICE_TOKEN` (or this service's own), if set and not empty.
    pub fn from_env(env: &Env) -> Option<Self> {
        env.shared("SERVICE_TOKEN")
            .filter(|t| !t.is_empty())
            .map(ServiceToken)
    }

    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceToken(..)")
    }
}

/// A snapshot of configuration variables, read with one service's prefix.
#[derive(Debug, Clone)]
pub struct Env {
    prefix: &'static str,
    vars: HashMap<String, String>,
}

impl Env {
    /// Reads the process environment once, over the `KEY=VALUE` lines of
    /// the file named by `TICKETER_CONFIG_FILE` if set (the environment wins).
    pub fn from_process(service: Service) -> Result<Self, ConfigError> {
        let mut vars = HashMap::new();
        if let Ok(path) = std::env::var("TICKETER_CONFIG_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Invalid {
                key: "TICKETER_CONFIG_FILE".into(),
                message: format!("{path}: {e}"),
            })?;
            vars = parse_env_file(&text).map_err(|message| ConfigError::Invalid {
                key: "TICKETER_CONFIG_FILE".into(),
                message: format!("{path}: {message}"),
            })?;
        }
        vars.extend(std::env::vars());
        Ok(Self::from_map(service, vars))
    }

    pub fn from_map(service: Service, vars: HashMap<String, String>) -> Self {
        Env {
            prefix: service.env_prefix(),
            vars,
        }
    }

    /// [`Env::from_map`] from `(name, value)` pairs.
    pub fn from_pairs(service: Service, pairs: &[(&str, &str)]) -> Self {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::from_map(service, vars)
    }

    /// The same variables, read with another service's prefix.
    pub fn for_service(&self, service: Service) -> Self {
        Env {
            prefix: service.env_prefix(),
            vars: self.vars.clone(),
        }
    }

    fn raw(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// `<PREFIX><key>` only.
    pub fn get(&self, key: &str) -> Option<String> {
        self.raw(&format!("{}{key}", self.prefix))
    }

    /// `<PREFIX><key>`, else the unprefixed `key`: for settings every service shares.
    pub fn shared(&self, key: &str) -> Option<String> {
        self.get(key).or_else(|| self.raw(key))
    }

    /// Parses `<PREFIX><key>` (falling back to `key`), or returns `default`.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.shared(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                key: format!("{}{key}", self.prefix),
                message: e.to_string(),
            }),
        }
    }

    pub fn seconds_or(&self, key: &str, default: u64) -> Result<Duration, ConfigError> {
        self.parse_or(key, default).map(Duration::from_secs)
    }

    pub fn flag_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.shared(key).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::Invalid {
                key: format!("{}{key}", self.prefix),
                message: format!("`{v}` is not a boolean"),
            }),
        }
    }

    /// A comma-separated list of addresses and CIDRs (`10.0.0.0/8`,
    /// `127.0.0.1`); empty when unset.
    pub fn nets(&self, key: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.list(key)
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        key: format!("{}{key}", self.prefix),
                        message: format!("`{s}` is not an IP address or CIDR"),
                    })
            })
            .collect()
    }

    /// A comma-separated list; empty when unset.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.shared(key)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `KEY=VALUE` lines; blank lines and `#` comments are skipped, and values
/// may be quoted.
pub fn parse_env_file(text: &str) -> Result<HashMap<String, String>, String> {
    let mut vars = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=VALUE", n + 1))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        vars.insert(key.trim().to_string(), value.to_string());
    }
    Ok(vars)
}

/// The bounds of every HTTP server, per service (`<SERVICE>_HTTP_...`,
/// falling back to the unprefixed `HTTP_...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From a connection's opening, or from the end of its last answer, to
    /// the end of the next request's headers; also how long an idle
    /// keep-alive connection stays open (HTTP_HEADER_READ_TIMEOUT_SECONDS).
    pub header_read: Duration,
    /// From a request's headers to its answer, body included
    /// (HTTP_REQUEST_TIMEOUT_SECONDS).
    pub request: Duration,
    /// Connections served at once; more wait in the listen backlog
    /// (HTTP_MAX_CONNECTIONS).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read: Duration::from_secs(20),
            // Above the longest wait a client may ask for (Prefer: wait=30)
            // and the gateway's upstream timeout (35 s).
            request: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

impl HttpLimits {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = HttpLimits::default();
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    key: key.to_string(),
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(v)
            }
        };
        let header_read = env.parse_or("HTTP_HEADER_READ_TIMEOUT_SECONDS", d.header_read.as_secs())?;
        let request = env.parse_or("HTTP_REQUEST_TIMEOUT_SECONDS", d.request.as_secs())?;
        let max_connections = env.parse_or("HTTP_MAX_CONNECTIONS", d.max_connections as u64)?;
        Ok(HttpLimits {
            header_read: Duration::from_secs(positive("HTTP_HEADER_READ_TIMEOUT_SECONDS", header_read)?),
            request: Duration::from_secs(positive("HTTP_REQUEST_TIMEOUT_SECONDS", request)?),
            max_connections: positive("HTTP_MAX_CONNECTIONS", max_connections)? as usize,
        })
    }
}

/// Where infrastructure comes from for one service: a URL per server, or the
/// embedded default (SQLite file under the data dir, in-process bus and cache).
#[derive(Debug, Clone)]
pub struct InfraConfig {
    pub service: Service,
    /// The HTTP server's timeouts and connection cap.
    pub http: HttpLimits,
    /// `postgres://...` or `sqlite://...`; `None` means `<data_dir>/<service>.db`.
    pub database_url: Option<String>,
    pub amqp_url: Option<String>,
    pub redis_url: Option<String>,
    /// Prefix for every cache key, so tenants and tests can share one Redis.
    pub redis_prefix: String,
    pub data_dir: PathBuf,
    pub db_max_connections: u32,
    pub consumer_prefetch: u16,
    pub consumer_concurrency: usize,
    pub consumer_batch_size: usize,
    pub outbox_batch_size: usize,
    pub outbox_poll: Duration,
    pub jwks_url: String,
    pub jwt_issuer: String,
    /// The variables, read with this service's prefix, for its own settings.
    pub env: Env,
}

impl InfraConfig {
    pub fn from_env(service: Service, env: &Env, data_dir: PathBuf) -> Result<Self, ConfigError> {
        let env = env.for_service(service);
        let auth_port = env.for_service(Service::Auth).parse_or("PORT", 4040u16)?;
        Ok(InfraConfig {
            service,
            http: HttpLimits::from_env(&env)?,
            database_url: env.get("DATABASE_URL"),
            amqp_url: env.shared("AMQP_URL"),
            redis_url: env.shared("REDIS_URL"),
            redis_prefix: env.shared("REDIS_PREFIX").unwrap_or_else(|| "ticketer:".into()),
            data_dir,
            db_max_connections: env.parse_or("DB_MAX_CONNECTIONS", 16)?,
            consumer_prefetch: env.parse_or("CONSUMER_PREFETCH", 200)?,
            consumer_concurrency: env.parse_or("CONSUMER_CONCURRENCY", 1)?,
            consumer_batch_size: env.parse_or("CONSUMER_BATCH_SIZE", 100)?,
            outbox_batch_size: env.parse_or("OUTBOX_BATCH_SIZE", 200)?,
            outbox_poll: Duration::from_millis(env.parse_or("OUTBOX_POLL_MS", 250)?),
            jwks_url: env
                .shared("JWKS_URL")
                .unwrap_or_else(|| format!("http://127.0.0.1:{auth_port}/api/v1/auth/.well-known/jwks.json")),
            jwt_issuer: env.shared("JWT_ISSUER").unwrap_or_else(|| "ticketer-auth".into()),
            env: env.clone(),
        })
    }

    /// The database URL, defaulting to this service's SQLite file.
    pub fn resolved_database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            let path = self.data_dir.join(format!("{}.db", self.service.name()));
            format!("sqlite://{}?mode=rwc", path.display())
        })
    }
}

/// The `host:port` of a server URL (`scheme://[user[:password]@]host:port/...`).
pub fn address_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests;
