//! The ticket service's own settings (`TICKET_...`), read once at start.

use std::time::Duration;

use ticketer_config::{ConfigError, Env, ServiceToken};

#[derive(Debug, Clone)]
pub struct Settings {
    /// How long seats stay held for a booking (`HOLD_TTL_SECONDS`, 600).
    pub hold_ttl: chrono::Duration,
    /// How often holds that ran out are released (`HOLD_SWEEP_MS`, 1000).
    pub hold_sweep: Duration,
    /// How often the seats-for-sale figure is written to the cache
    /// (`AVAILABILITY_PUBLISH_MS`, 100).
    pub availability_publish: Duration,
    /// The secret other services show to ask for holds directly
    /// (`SERVICE_TOKEN`, shared by the services); unset, nobody may.
    pub service_token: Option<ServiceToken>,
}

impl Settings {
    /// The variables read, without the service's prefix.
    pub const VARIABLES: &'static [&'static str] =
        &["HOLD_TTL_SECONDS", "HOLD_SWEEP_MS", "AVAILABILITY_PUBLISH_MS"];

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let ttl = env.seconds_or("HOLD_TTL_SECONDS", 600)?;
        let hold_ttl = chrono::Duration::from_std(ttl).map_err(|_| ConfigError::Invalid {
            key: "TICKET_HOLD_TTL_SECONDS".into(),
            message: "too long".into(),
        })?;
        Ok(Settings {
            hold_ttl,
            hold_sweep: Duration::from_millis(env.parse_or("HOLD_SWEEP_MS", 1000)?),
            availability_publish: Duration::from_millis(env.parse_or("AVAILABILITY_PUBLISH_MS", 100)?),
            service_token: ServiceToken::from_env(env),
        })
    }
}

#[cfg(test)]
mod tests {
    use ticketer_config::Service;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(Service::Ticket, pairs)
    }

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::from_env(&env(&[])).unwrap();
        assert_eq!(s.hold_ttl, chrono::Duration::seconds(600));
        assert_eq!(s.availability_publish, Duration::from_millis(100));
        let s = Settings::from_env(&env(&[("TICKET_HOLD_TTL_SECONDS", "5")])).unwrap();
        assert_eq!(s.hold_ttl, chrono::Duration::seconds(5));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = Settings::from_env(&env(&[("TICKET_HOLD_SWEEP_MS", "soon")])).unwrap_err();
        assert!(err.to_string().starts_with("TICKET_HOLD_SWEEP_MS"), "{err}");
        let err =
            Settings::from_env(&env(&[("TICKET_HOLD_TTL_SECONDS", &u64::MAX.to_string())])).unwrap_err();
        assert!(err.to_string().starts_with("TICKET_HOLD_TTL_SECONDS"), "{err}");
    }
}
