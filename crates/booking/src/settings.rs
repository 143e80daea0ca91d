//! The booking service's own settings (`BOOKING_...`), read once at start.

use std::time::Duration;

use ticketer_config::{ConfigError, Env, Service, ServiceToken};
use ticketer_contract::payment::TokenRule;

use crate::{direct::Peers, saga::Timeouts, waiters};

#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a booking waits for its payment (`PAYMENT_TIMEOUT_SECONDS`,
    /// 120) and for a hold, sale or refund to be answered before asking
    /// again (`REPLY_TIMEOUT_SECONDS`, 30).
    pub timeouts: Timeouts,
    /// Seats one booking may take (`MAX_TICKETS_PER_BOOKING`, 10).
    pub max_tickets: i64,
    /// Which payment tokens a booking may name: the sandbox's list, or any
    /// token-shaped value for a real provider to judge. From
    /// `PAYMENT_PROVIDER`, the variable the payment service reads.
    pub tokens: TokenRule,
    /// How often a waiting request looks at its booking again, for changes
    /// made by other replicas (`WAIT_RECHECK_MS`, 250).
    pub wait_recheck: Duration,
    /// How often bookings past a deadline are looked for
    /// (`DEADLINE_SWEEP_MS`, 1000).
    pub deadline_sweep: Duration,
    /// Whether a new booking's hold and charge are asked for over HTTP at
    /// once, the queue kept as the fallback (`DIRECT_CALLS`, on; needs
    /// `SERVICE_TOKEN`).
    pub direct_calls: bool,
    /// The ticket service, for those holds (`TICKET_URL`, by default
    /// `http://127.0.0.1:<TICKET_PORT>`).
    pub ticket_url: String,
    /// The payment service, for those charges (`PAYMENT_URL`, by default
    /// `http://127.0.0.1:<PAYMENT_PORT>`).
    pub payment_url: String,
    /// What the ticket and payment services ask of their callers
    /// (`SERVICE_TOKEN`).
    pub service_token: Option<ServiceToken>,
}

impl Settings {
    /// The variables read, without the service's prefix.
    pub const VARIABLES: &'static [&'static str] = &[
        "PAYMENT_TIMEOUT_SECONDS",
        "REPLY_TIMEOUT_SECONDS",
        "MAX_TICKETS_PER_BOOKING",
        "WAIT_RECHECK_MS",
        "DEADLINE_SWEEP_MS",
        "DIRECT_CALLS",
        "TICKET_URL",
        "PAYMENT_URL",
    ];

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_tickets = env.parse_or("MAX_TICKETS_PER_BOOKING", 10)?;
        if max_tickets < 1 {
            return Err(ConfigError::Invalid {
                key: "BOOKING_MAX_TICKETS_PER_BOOKING".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(Settings {
            timeouts: Timeouts {
                payment: env.seconds_or("PAYMENT_TIMEOUT_SECONDS", 120)?,
                reply: env.seconds_or("REPLY_TIMEOUT_SECONDS", 30)?,
            },
            max_tickets,
            tokens: TokenRule::for_provider(
                &env.shared("PAYMENT_PROVIDER").unwrap_or_else(|| "sandbox".into()),
            ),
            wait_recheck: Duration::from_millis(
                env.parse_or("WAIT_RECHECK_MS", waiters::RECHECK.as_millis() as u64)?,
            ),
            deadline_sweep: Duration::from_millis(env.parse_or("DEADLINE_SWEEP_MS", 1000)?),
            direct_calls: env.flag_or("DIRECT_CALLS", true)?,
            ticket_url: url_of(env, "TICKET_URL", Service::Ticket)?,
            payment_url: url_of(env, "PAYMENT_URL", Service::Payment)?,
            service_token: ServiceToken::from_env(env),
        })
    }

    /// Whom the saga's first steps are asked of directly, if anyone:
    /// switched on (`DIRECT_CALLS`, the default) and a service token set.
    pub fn peers(&self) -> Option<Peers> {
        let token = self.service_token.clone().filter(|_| self.direct_calls)?;
        Some(Peers {
            ticket_url: self.ticket_url.clone(),
            payment_url: self.payment_url.clone(),
            token,
        })
    }
}

/// `key`, else the service's contract port (or its `<PREFIX>PORT`) on this
/// host.
fn url_of(env: &Env, key: &str, svc: Service) -> Result<String, ConfigError> {
    if let Some(url) = env.shared(key) {
        return Ok(url);
    }
    let port: u16 = env.for_service(svc).parse_or("PORT", svc.default_port())?;
    Ok(format!("http://127.0.0.1:{port}"))
}

#[cfg(test)]
mod tests {
    use ticketer_config::Service;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(Service::Booking, pairs)
    }

    #[test]
    fn defaults() {
        let s = Settings::from_env(&env(&[])).unwrap();
        assert_eq!(s.timeouts.payment, Duration::from_secs(120));
        assert_eq!(s.timeouts.reply, Duration::from_secs(30));
        assert_eq!(s.max_tickets, 10);
        assert_eq!(s.tokens, TokenRule::Sandbox);
        assert_eq!(s.wait_recheck, waiters::RECHECK);
    }

    #[test]
    fn the_payment_provider_shared_with_the_payment_service_decides_the_tokens() {
        let s = Settings::from_env(&env(&[("PAYMENT_PROVIDER", "stripe")])).unwrap();
        assert_eq!(s.tokens, TokenRule::Provider);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("BOOKING_MAX_TICKETS_PER_BOOKING", "0"),
            ("BOOKING_MAX_TICKETS_PER_BOOKING", "ten"),
            ("BOOKING_PAYMENT_TIMEOUT_SECONDS", "2m"),
            ("BOOKING_DEADLINE_SWEEP_MS", "-5"),
        ] {
            let err = Settings::from_env(&env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}={value}: {err}");
        }
    }
}
