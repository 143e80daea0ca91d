//! The payment service's own settings (`PAYMENT_...`), read once at start.

use std::time::Duration;

use ticketer_config::{ConfigError, Env, ServiceToken};

use crate::commands::PATIENCE;

/// Which provider charges the cards (`PROVIDER`).
#[derive(Clone)]
pub enum Provider {
    /// Decides by token (the default); `tok_delayed` takes
    /// `SANDBOX_DELAY_MS` (3000).
    Sandbox { delay: Duration },
    /// Stripe's API at `STRIPE_URL` (https://api.stripe.com) with
    /// `STRIPE_SECRET_KEY`.
    Stripe { url: String, secret_key: String },
}

/// The secret key is never shown.
impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::Sandbox { delay } => f.debug_struct("Sandbox").field("delay", delay).finish(),
            Provider::Stripe { url, .. } => {
                f.debug_struct("Stripe").field("url", url).finish_non_exhaustive()
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub provider: Provider,
    /// How long the command queue waits for the provider before a charge
    /// it has not answered is recorded PROCESSING and finished on its own
    /// (`PROVIDER_PATIENCE_MS`, 500).
    pub patience: Duration,
    /// After how long a PROCESSING charge is taken for one left by a crash
    /// and asked again with the same key (`PROCESSING_STALE_SECONDS`, 60).
    pub processing_stale: Duration,
    /// The secret other services show to ask for charges directly
    /// (`SERVICE_TOKEN`, shared by the services); unset, nobody may.
    pub service_token: Option<ServiceToken>,
}

impl Settings {
    /// The variables read, without the service's prefix.
    pub const VARIABLES: &'static [&'static str] = &[
        "PROVIDER",
        "SANDBOX_DELAY_MS",
        "STRIPE_URL",
        "STRIPE_SECRET_KEY",
        "PROVIDER_PATIENCE_MS",
        "PROCESSING_STALE_SECONDS",
    ];

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let provider = match env.get("PROVIDER").as_deref().unwrap_or("sandbox") {
            "sandbox" => Provider::Sandbox {
                delay: Duration::from_millis(env.parse_or("SANDBOX_DELAY_MS", 3000)?),
            },
            "stripe" => Provider::Stripe {
                url: env
                    .get("STRIPE_URL")
                    .unwrap_or_else(|| "https://api.stripe.com".into()),
                secret_key: env.get("STRIPE_SECRET_KEY").ok_or_else(|| {
                    ConfigError::Missing("PAYMENT_STRIPE_SECRET_KEY (for PAYMENT_PROVIDER=stripe)".into())
                })?,
            },
            other => {
                return Err(ConfigError::Invalid {
                    key: "PAYMENT_PROVIDER".into(),
                    message: format!("must be sandbox or stripe, not {other}"),
                })
            }
        };
        Ok(Settings {
            provider,
            patience: Duration::from_millis(
                env.parse_or("PROVIDER_PATIENCE_MS", PATIENCE.as_millis() as u64)?,
            ),
            processing_stale: env.seconds_or("PROCESSING_STALE_SECONDS", 60)?,
            service_token: ServiceToken::from_env(env),
        })
    }
}

#[cfg(test)]
mod tests {
    use ticketer_config::Service;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(Service::Payment, pairs)
    }

    #[test]
    fn the_sandbox_by_default() {
        let s = Settings::from_env(&env(&[])).unwrap();
        assert!(matches!(s.provider, Provider::Sandbox { delay } if delay == Duration::from_secs(3)));
        assert_eq!(s.patience, PATIENCE);
        assert_eq!(s.processing_stale, Duration::from_secs(60));
    }

    #[test]
    fn stripe_needs_its_key_and_never_shows_it() {
        let err = Settings::from_env(&env(&[("PAYMENT_PROVIDER", "stripe")])).unwrap_err();
        assert!(err.to_string().contains("PAYMENT_STRIPE_SECRET_KEY"), "{err}");
        let s = Settings::from_env(&env(&[
            ("PAYMENT_PROVIDER", "stripe"),
            ("PAYMENT_STRIPE_SECRET_KEY", "sk_test_hush"),
        ]))
        .unwrap();
        assert!(matches!(&s.provider, Provider::Stripe { url, .. } if url == "https://api.stripe.com"));
        assert!(!format!("{s:?}").contains("hush"));
    }

    #[test]
    fn an_unknown_provider_is_refused_by_name() {
        let err = Settings::from_env(&env(&[("PAYMENT_PROVIDER", "paypal")])).unwrap_err();
        assert!(err.to_string().starts_with("PAYMENT_PROVIDER"), "{err}");
        assert!(err.to_string().contains("paypal"), "{err}");
    }
}
