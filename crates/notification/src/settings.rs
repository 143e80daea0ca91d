//! The notification service's own settings (`NOTIFICATION_...`), read
//! once at start.

use std::time::Duration;

use ticketer_config::{ConfigError, Env};

#[derive(Clone)]
pub struct Settings {
    /// The sender of every email (`MAIL_FROM`).
    pub from: lettre::message::Mailbox,
    /// Where email goes (`SMTP_URL`); None writes `.eml` files under
    /// `<data-dir>/mail`. It may hold a password: never shown.
    pub smtp_url: Option<String>,
    /// Attempts at sending one notification before it is FAILED
    /// (`DELIVERY_ATTEMPTS`, 6).
    pub delivery_attempts: u32,
    /// The first wait between attempts, doubling each time
    /// (`DELIVERY_BACKOFF_MS`, 2000).
    pub delivery_backoff: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("from", &self.from.to_string())
            .field("smtp", &self.smtp_url.is_some())
            .field("delivery_attempts", &self.delivery_attempts)
            .field("delivery_backoff", &self.delivery_backoff)
            .finish()
    }
}

impl Settings {
    /// The variables read, without the service's prefix.
    pub const VARIABLES: &'static [&'static str] = &[
        "MAIL_FROM",
        "SMTP_URL",
        "DELIVERY_ATTEMPTS",
        "DELIVERY_BACKOFF_MS",
    ];

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let from = env
            .get("MAIL_FROM")
            .unwrap_or_else(|| "Ticketer <no-reply@ticketer.localhost>".into())
            .parse()
            .map_err(|e: lettre::address::AddressError| ConfigError::Invalid {
                key: "NOTIFICATION_MAIL_FROM".into(),
                message: e.to_string(),
            })?;
        let delivery_attempts = env.parse_or("DELIVERY_ATTEMPTS", 6)?;
        if delivery_attempts < 1 {
            return Err(ConfigError::Invalid {
                key: "NOTIFICATION_DELIVERY_ATTEMPTS".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(Settings {
            from,
            smtp_url: env.get("SMTP_URL"),
            delivery_attempts,
            delivery_backoff: Duration::from_millis(env.parse_or("DELIVERY_BACKOFF_MS", 2000)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use ticketer_config::Service;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(Service::Notification, pairs)
    }

    #[test]
    fn defaults() {
        let s = Settings::from_env(&env(&[])).unwrap();
        assert_eq!(s.from.email.to_string(), "no-reply@ticketer.localhost");
        assert!(s.smtp_url.is_none());
        assert_eq!(s.delivery_attempts, 6);
    }

    #[test]
    fn bad_values_name_their_variable_and_a_password_is_never_shown() {
        for (var, value) in [
            ("NOTIFICATION_MAIL_FROM", "not an address"),
            ("NOTIFICATION_DELIVERY_ATTEMPTS", "0"),
            ("NOTIFICATION_DELIVERY_BACKOFF_MS", "fast"),
        ] {
            let err = Settings::from_env(&env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}={value}: {err}");
        }
        let s = Settings::from_env(&env(&[("NOTIFICATION_SMTP_URL", "smtp://u:hush@mail:587")])).unwrap();
        assert!(!format!("{s:?}").contains("hush"));
    }
}
