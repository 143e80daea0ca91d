use std::collections::BTreeMap;

use ipnet::IpNet;
use ticketer_config::{ConfigError, Env, HttpLimits, Service};

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Base URL of each backend service.
    pub services: BTreeMap<Service, String>,
    pub cors_origins: Vec<String>,
    /// Requests per minute per client; 0 switches rate limiting off.
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    pub ip_allow: Vec<IpNet>,
    pub ip_deny: Vec<IpNet>,
    /// Take the client address from X-Forwarded-For (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    pub upstream_timeout_secs: u64,
    /// How long anonymous public reads are answered from the gateway's
    /// copy (0 turns it off), and how many addresses it keeps.
    pub read_cache_ttl: std::time::Duration,
    pub read_cache_entries: usize,
    /// PEM certificate chain and key; both set means the gateway serves HTTPS.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The gateway's own server's timeouts and connection cap.
    pub http: HttpLimits,
    /// The bearer token Prometheus sends for the gateway's `/metrics`;
    /// unset, the gateway's metrics are not served on its public port.
    pub metrics_token: Option<String>,
    /// The web pages' session cookies are marked Secure: on by default
    /// when the gateway serves TLS; set it when TLS ends in front of it.
    pub secure_cookies: bool,
}

impl GatewayConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let gw = env.for_service(Service::Gateway);
        let mut services = BTreeMap::new();
        for svc in Service::BACKENDS {
            let port = env.for_service(svc).parse_or("PORT", svc.default_port())?;
            let key = format!("{}_URL", svc.name().to_uppercase());
            let url = gw.get(&key).unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
            services.insert(svc, url.trim_end_matches('/').to_string());
        }
        let tls_set = gw.get("TLS_CERT").is_some();
        Ok(GatewayConfig {
            secure_cookies: gw.flag_or("SECURE_COOKIES", tls_set)?,
            services,
            cors_origins: gw.list("CORS_ORIGINS"),
            rate_limit_per_minute: gw.parse_or("RATE_LIMIT_PER_MINUTE", 60)?,
            rate_limit_burst: gw.parse_or("RATE_LIMIT_BURST", 10)?,
            ip_allow: gw.nets("IP_ALLOW")?,
            ip_deny: gw.nets("IP_DENY")?,
            trust_forwarded_for: gw.flag_or("TRUST_FORWARDED_FOR", false)?,
            upstream_timeout_secs: gw.parse_or("UPSTREAM_TIMEOUT_SECONDS", 35)?,
            read_cache_ttl: std::time::Duration::from_millis(gw.parse_or("CACHE_TTL_MS", 500)?),
            read_cache_entries: gw.parse_or("CACHE_ENTRIES", 10_000)?,
            http: HttpLimits::from_env(&gw)?,
            metrics_token: gw.get("METRICS_TOKEN"),
            tls: match (gw.get("TLS_CERT"), gw.get("TLS_KEY")) {
                (Some(cert), Some(key)) => Some((cert.into(), key.into())),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "GATEWAY_TLS_CERT".into(),
                        message: "set both GATEWAY_TLS_CERT and GATEWAY_TLS_KEY".into(),
                    })
                }
            },
        })
    }
}
