//! The events service's own settings (`EVENTS_...`), read once at start.

use std::time::Duration;

use ticketer_config::{ConfigError, Env};

#[derive(Debug, Clone)]
pub struct Settings {
    /// How often events whose date has passed are marked COMPLETED
    /// (`COMPLETION_SWEEP_SECONDS`, 60).
    pub completion_sweep: Duration,
    /// A public search counts its matches up to this many, then answers
    /// `total_capped` (`SEARCH_COUNT_LIMIT`, 1000).
    pub search_count_limit: i64,
}

pub const DEFAULT_SEARCH_COUNT_LIMIT: i64 = 1_000;

impl Settings {
    /// The variables read, without the service's prefix.
    pub const VARIABLES: &'static [&'static str] = &["COMPLETION_SWEEP_SECONDS", "SEARCH_COUNT_LIMIT"];

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let search_count_limit = env.parse_or("SEARCH_COUNT_LIMIT", DEFAULT_SEARCH_COUNT_LIMIT)?;
        if search_count_limit < 1 {
            return Err(ConfigError::Invalid {
                key: "EVENTS_SEARCH_COUNT_LIMIT".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(Settings {
            completion_sweep: env.seconds_or("COMPLETION_SWEEP_SECONDS", 60)?,
            search_count_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use ticketer_config::Service;

    use super::*;

    #[test]
    fn defaults_and_a_bad_value() {
        let env = |v: &str| Env::from_pairs(Service::Events, &[("EVENTS_COMPLETION_SWEEP_SECONDS", v)]);
        assert_eq!(
            Settings::from_env(&env("")).unwrap().completion_sweep,
            Duration::from_secs(60)
        );
        assert_eq!(
            Settings::from_env(&env("5")).unwrap().completion_sweep,
            Duration::from_secs(5)
        );
        let err = Settings::from_env(&env("-1")).unwrap_err();
        assert!(
            err.to_string().starts_with("EVENTS_COMPLETION_SWEEP_SECONDS"),
            "{err}"
        );
    }
}
