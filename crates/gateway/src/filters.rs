//! Who may come in, and how often: IP allow/deny lists and per-client rate
//! limits (by token subject, else by address).

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ipnet::IpNet;
use ticketer_cache::Bucket;
use ticketer_http::ApiError;

use crate::Gateway;

/// The caller's address: the peer, or the first X-Forwarded-For entry when
/// the gateway runs behind a trusted proxy.
pub fn client_ip(req: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Deny wins; a non-empty allow list admits only its members.
pub fn ip_permitted(ip: IpAddr, allow: &[IpNet], deny: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if deny.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    allow.is_empty() || allow.iter().any(|n| n.contains(&ip))
}

/// Installed only when an allow or deny list is configured.
pub async fn ip_filter(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let cfg = &gw.config;
    let permitted = client_ip(&req, cfg.trust_forwarded_for)
        .is_some_and(|ip| ip_permitted(ip, &cfg.ip_allow, &cfg.ip_deny));
    if !permitted {
        return ApiError::Forbidden("requests from this address are not allowed".into()).into_response();
    }
    next.run(req).await
}

/// Installed only when a limit is configured (not 0).
pub async fn rate_limit(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let cfg = &gw.config;
    // A valid token identifies the client; a forged one must not buy a fresh
    // bucket, so anything unverifiable is counted by address.
    let subject = match req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        Some(token) => gw.verifier.verify(token.trim()).await.ok().map(|c| c.sub),
        None => None,
    };
    let key = match subject {
        Some(sub) => format!("sub:{sub}"),
        None => match client_ip(&req, cfg.trust_forwarded_for) {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".into(),
        },
    };
    let bucket = Bucket {
        per_minute: cfg.rate_limit_per_minute,
        burst: cfg.rate_limit_burst,
    };
    match gw.cache.rate_limit(&key, bucket).await {
        Ok(d) if !d.allowed => {
            return ApiError::TooManyRequests {
                detail: "rate limit exceeded".into(),
                retry_after_secs: d.retry_after_secs,
            }
            .into_response()
        }
        Ok(_) => {}
        // Fail open: a cache outage must not take the whole API down.
        Err(e) => tracing::warn!(error = %e, "rate limiter unavailable; request let through"),
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn deny_wins_and_allow_lists_restrict() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(ip_permitted(ip, &[], &[]));
        assert!(!ip_permitted(ip, &[], &nets(&["10.0.0.0/8"])));
        assert!(!ip_permitted(ip, &nets(&["10.0.0.0/8"]), &nets(&["10.1.2.3/32"])));
        assert!(ip_permitted(ip, &nets(&["10.0.0.0/8"]), &[]));
        assert!(!ip_permitted(ip, &nets(&["192.168.0.0/16"]), &[]));
        // IPv4 clients on a dual-stack socket arrive as mapped IPv6.
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(!ip_permitted(mapped, &[], &nets(&["10.0.0.0/8"])));
    }
}
