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
    /// The SMS provider's webhook (`SMS_WEBHOOK_URL`); None appends to
    /// `<data-dir>/sms.jsonl`.
    pub sms_webhook: Option<String>,
    /// The push provider's webhook (`PUSH_WEBHOOK_URL`); None appends to
    /// `<data-dir>/push.jsonl`.
    pub push_webhook: Option<String>,
    /// How long a provider has to answer one message
    /// (`WEBHOOK_TIMEOUT_MS`, 5000).
    pub webhook_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("from", &self.from.to_string())
            .field("smtp", &self.smtp_url.is_some())
            .field("delivery_attempts", &self.delivery_attempts)
            .field("delivery_backoff", &self.delivery_backoff)
            .field("sms_webhook", &self.sms_webhook.is_some())
            .field("push_webhook", &self.push_webhook.is_some())
            .field("webhook_timeout", &self.webhook_timeout)
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
        "SMS_WEBHOOK_URL",
        "PUSH_WEBHOOK_URL",
        "WEBHOOK_TIMEOUT_MS",
    ];

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let from = env
            .get("MAIL_FROM")
            .unwrap_or_else(|| DEFAULT_MAIL_FROM.into())
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
            sms_webhook: webhook(env, "SMS_WEBHOOK_URL")?,
            push_webhook: webhook(env, "PUSH_WEBHOOK_URL")?,
            webhook_timeout: Duration::from_millis(env.parse_or("WEBHOOK_TIMEOUT_MS", 5000)?),
        })
    }
}

/// The sender when `MAIL_FROM` is not set.
pub const DEFAULT_MAIL_FROM: &str = "Ticketer <no-reply@ticketer.localhost>";

/// A webhook URL: http or https, or unset. It may hold a key: never shown.
fn webhook(env: &Env, key: &str) -> Result<Option<String>, ConfigError> {
    match env.get(key) {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Ok(Some(url)),
        Some(_) => Err(ConfigError::Invalid {
            key: format!("NOTIFICATION_{key}"),
            message: "must be an http:// or https:// URL".into(),
        }),
        None => Ok(None),
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
            ("NOTIFICATION_SMS_WEBHOOK_URL", "ftp://sms.example"),
            ("NOTIFICATION_WEBHOOK_TIMEOUT_MS", "soon"),
        ] {
            let err = Settings::from_env(&env(&[(var, value)])).unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}={value}: {err}");
        }
        let s = Settings::from_env(&env(&[("NOTIFICATION_SMTP_URL", "smtp://u:hush@mail:587")])).unwrap();
        assert!(!format!("{s:?}").contains("hush"));
    }
}
