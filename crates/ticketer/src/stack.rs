//! Building services from configuration. Used by the CLI and by the
//! integration tests, so both start exactly the same thing.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::Context;
use ticketer_bus::Bus;
use ticketer_cache::Cache;
use ticketer_config::{Env, InfraConfig, Service, ServiceToken};
use ticketer_db::Db;
use ticketer_http::{ServiceApp, TokenVerifier};
use ticketer_runtime::Runtime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How to bind: the contract ports (`<PREFIX>PORT` overrides), or port 0
/// everywhere so tests can run side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    Contract,
    Ephemeral,
}

/// Whether a service runs beside the gateway in one process (`ticketer
/// dev`) or on its own (`ticketer serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    InProcess,
    OnItsOwn,
}

/// Where a service listens: `<PREFIX>HOST`, else `HOST`, else all
/// interfaces. In one process the backends are only ever called by the
/// gateway beside them, so they listen on loopback unless their own
/// `<PREFIX>HOST` says otherwise: nobody skips the gateway's rate limit,
/// address filter and CORS by calling a backend's port.
fn host_for(env: &Env, svc: Service, placement: Placement) -> String {
    let env = env.for_service(svc);
    let private = placement == Placement::InProcess && svc != Service::Gateway;
    let host = if private {
        env.get("HOST")
    } else {
        env.shared("HOST")
    };
    host.unwrap_or_else(|| if private { "127.0.0.1" } else { "0.0.0.0" }.into())
}

async fn listener(
    env: &Env,
    svc: Service,
    ports: Ports,
    placement: Placement,
) -> anyhow::Result<TcpListener> {
    let host = host_for(env, svc, placement);
    let env = env.for_service(svc);
    let port = match ports {
        Ports::Contract => env.parse_or("PORT", svc.default_port())?,
        Ports::Ephemeral => 0,
    };
    let host = if ports == Ports::Ephemeral {
        "127.0.0.1".to_string()
    } else {
        host
    };
    ticketer_http::bind(&host, port)
        .await
        .with_context(|| format!("binding {svc} to {host}:{port}"))
}

/// Asks the service listening on this host, as `ticketer serve` would
/// have bound it, for /health/live (`ticketer health`). A gateway serving
/// HTTPS is asked over HTTPS without checking its certificate: the
/// certificate names the public host, and this is a loopback probe.
pub async fn probe_live(svc: Service, env: &Env) -> anyhow::Result<()> {
    let own = env.for_service(svc);
    let port: u16 = own.parse_or("PORT", svc.default_port())?;
    let host = match host_for(env, svc, Placement::OnItsOwn).as_str() {
        "0.0.0.0" | "" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    };
    let tls = svc == Service::Gateway && own.get("TLS_CERT").is_some();
    let url = format!(
        "{}://{host}:{port}/health/live",
        if tls { "https" } else { "http" }
    );
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .danger_accept_invalid_certs(tls)
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    anyhow::ensure!(answer.status().is_success(), "{url} answered {}", answer.status());
    Ok(())
}

/// Connects the service to its database, trying again for a while when it
/// cannot (`DB_CONNECT_PATIENCE_SECONDS`, 30 by default): a service that
/// starts while its database restarts or fails over waits for it instead of
/// exiting into a restart loop.
pub async fn connect_db(infra: &InfraConfig) -> anyhow::Result<Db> {
    let url = infra.resolved_database_url();
    let patience = infra.env.seconds_or("DB_CONNECT_PATIENCE_SECONDS", 30)?;
    let give_up = std::time::Instant::now() + patience;
    let mut wait = Duration::from_millis(200);
    loop {
        match Db::connect(&url, infra.db_max_connections).await {
            Ok(db) => return Ok(db),
            Err(e) if std::time::Instant::now() + wait < give_up => {
                tracing::warn!(service = %infra.service, error = %e, retry_in_ms = wait.as_millis() as u64, "database not reachable yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("connecting {} to {}", infra.service, ticketer_db::redact(&url))
                })
            }
        }
    }
}

/// A backend service's own settings, read before it connects to anything,
/// so that a wrong variable stops it at once, by name.
enum Settings {
    Events(ticketer_events::Settings),
    Ticket(ticketer_ticket::Settings),
    Booking(ticketer_booking::Settings),
    Payment(ticketer_payment::Settings),
    Notification(ticketer_notification::Settings),
}

impl Settings {
    fn of(svc: Service, env: &Env) -> anyhow::Result<Settings> {
        Ok(match svc {
            Service::Events => Settings::Events(ticketer_events::Settings::from_env(env)?),
            Service::Ticket => Settings::Ticket(ticketer_ticket::Settings::from_env(env)?),
            Service::Booking => Settings::Booking(ticketer_booking::Settings::from_env(env)?),
            Service::Payment => Settings::Payment(ticketer_payment::Settings::from_env(env)?),
            Service::Notification => Settings::Notification(ticketer_notification::Settings::from_env(env)?),
            Service::Auth | Service::Gateway => anyhow::bail!("{svc} is built separately"),
        })
    }

    async fn build(
        self,
        runtime: Runtime,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<ServiceApp> {
        match self {
            Settings::Events(s) => ticketer_events::build(s, runtime, listener, shutdown).await,
            Settings::Ticket(s) => ticketer_ticket::build(s, runtime, listener, shutdown).await,
            Settings::Booking(s) => ticketer_booking::build(s, runtime, listener, shutdown).await,
            Settings::Payment(s) => ticketer_payment::build(s, runtime, listener, shutdown).await,
            Settings::Notification(s) => ticketer_notification::build(s, runtime, listener, shutdown).await,
        }
    }
}

/// Everything in one process: auth first (its key verifies tokens for the
/// others, in process), then the other services, then the gateway pointed at
/// the ports they actually got.
pub async fn build_all(
    env: &Env,
    data_dir: &Path,
    ports: Ports,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<ServiceApp>> {
    let bus = Bus::connect_gated(env.shared("AMQP_URL").as_deref())
        .await
        .context("connecting to the bus")?;
    let prefix = env.shared("REDIS_PREFIX").unwrap_or_else(|| "ticketer:".into());
    let cache = Cache::connect(env.shared("REDIS_URL").as_deref(), &prefix)
        .await
        .context("connecting to the cache")?;

    let auth_infra = InfraConfig::from_env(Service::Auth, env, data_dir.to_path_buf())?;
    let auth = ticketer_auth::build(
        ticketer_auth::Config::from_env(env, data_dir)?,
        &auth_infra,
        connect_db(&auth_infra).await?,
        bus.clone(),
        cache.clone(),
        listener(env, Service::Auth, ports, Placement::InProcess).await?,
        shutdown.clone(),
    )
    .await?;
    let verifier = auth.verifier.clone();
    let mut apps = vec![auth.app];

    // Bound first, so that each knows where the others are.
    let mut listeners = Vec::new();
    for svc in Service::BACKENDS.into_iter().filter(|s| *s != Service::Auth) {
        listeners.push((svc, listener(env, svc, ports, Placement::InProcess).await?));
    }
    let url_of = |wanted: Service| -> anyhow::Result<String> {
        match listeners.iter().find(|(svc, _)| *svc == wanted) {
            Some((_, l)) => Ok(format!("http://127.0.0.1:{}", l.local_addr()?.port())),
            None => anyhow::bail!("the {wanted} service has no listener"),
        }
    };
    let (ticket_url, payment_url) = (url_of(Service::Ticket)?, url_of(Service::Payment)?);
    let token = Some(service_token(env));
    for (svc, listener) in listeners {
        let infra = InfraConfig::from_env(svc, env, data_dir.to_path_buf())?;
        let mut settings = Settings::of(svc, &infra.env)?;
        match &mut settings {
            Settings::Ticket(s) => s.service_token = token.clone(),
            Settings::Payment(s) => s.service_token = token.clone(),
            Settings::Booking(s) => {
                s.service_token = token.clone();
                if infra.env.shared("TICKET_URL").is_none() {
                    s.ticket_url = ticket_url.clone();
                }
                if infra.env.shared("PAYMENT_URL").is_none() {
                    s.payment_url = payment_url.clone();
                }
            }
            _ => {}
        }
        let db = connect_db(&infra).await?;
        let runtime = Runtime::new(infra, db, bus.clone(), Some(cache.clone()), verifier.clone());
        let app = settings
            .build(runtime, listener, shutdown.clone())
            .await
            .with_context(|| format!("starting {svc}"))?;
        apps.push(app);
    }

    let mut gw = ticketer_gateway::GatewayConfig::from_env(env)?;
    let bound: BTreeMap<&str, u16> = apps.iter().map(|a| (a.name, a.port())).collect();
    let gw_env = env.for_service(Service::Gateway);
    for (svc, url) in gw.services.iter_mut() {
        let explicit = gw_env
            .get(&format!("{}_URL", svc.name().to_uppercase()))
            .is_some();
        if let (false, Some(port)) = (explicit, bound.get(svc.name())) {
            *url = format!("http://127.0.0.1:{port}");
        }
    }
    let gateway = ticketer_gateway::build(
        gw,
        cache,
        verifier,
        listener(env, Service::Gateway, ports, Placement::InProcess).await?,
        shutdown,
    )?;
    apps.insert(0, gateway);
    // Every consumer is subscribed: messages may flow.
    bus.open();
    Ok(apps)
}

/// The secret services in one process show each other when one calls
/// another directly: the operator's, else one of their own. On the
/// in-process bus too: since the ticket service's answers to direct holds
/// are no longer also published, the calls beat the in-process queues
/// (pretix preset sold out in 0.53-0.63 s against 0.58-0.74 s, standard
/// preset 2,140-2,263 confirmed/s against 1,772-1,867). Before, they only
/// added work there (0.56-0.63 s against 0.41-0.44 s).
fn service_token(env: &Env) -> ServiceToken {
    ServiceToken::from_env(env)
        .unwrap_or_else(|| ServiceToken::new(uuid::Uuid::new_v4().simple().to_string()))
}

/// One service in its own process (production). Tokens are verified with
/// the auth service's published keys.
pub async fn build_one(
    svc: Service,
    env: &Env,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    let infra = InfraConfig::from_env(svc, env, data_dir.to_path_buf())?;
    if infra.amqp_url.is_none() && svc != Service::Gateway {
        tracing::warn!("AMQP_URL is not set: messages stay inside this process");
    }
    let cache = Cache::connect(infra.redis_url.as_deref(), &infra.redis_prefix)
        .await
        .context("connecting to the cache")?;
    let remote_verifier = || TokenVerifier::from_jwks_url(&infra.jwt_issuer, &infra.jwks_url);
    let listener = listener(env, svc, Ports::Contract, Placement::OnItsOwn).await?;
    match svc {
        Service::Gateway => {
            let config = ticketer_gateway::GatewayConfig::from_env(env)?;
            ticketer_gateway::build(config, cache, remote_verifier(), listener, shutdown)
        }
        Service::Auth => {
            let bus = Bus::connect(infra.amqp_url.as_deref())
                .await
                .context("connecting to the bus")?;
            let config = ticketer_auth::Config::from_env(env, data_dir)?;
            Ok(ticketer_auth::build(
                config,
                &infra,
                connect_db(&infra).await?,
                bus,
                cache,
                listener,
                shutdown,
            )
            .await?
            .app)
        }
        _ => {
            let settings = Settings::of(svc, &infra.env)?;
            let bus = Bus::connect(infra.amqp_url.as_deref())
                .await
                .context("connecting to the bus")?;
            let db = connect_db(&infra).await?;
            let verifier = remote_verifier();
            let runtime = Runtime::new(infra, db, bus, Some(cache), verifier);
            settings.build(runtime, listener, shutdown).await
        }
    }
}

/// Runs every app until the shutdown token fires and all have drained.
pub async fn run(apps: Vec<ServiceApp>) -> anyhow::Result<()> {
    let results = futures::future::join_all(apps.into_iter().map(|app| app.run_until_stopped())).await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: draining requests and stopping consumers");
        token.cancel();
        // A second signal, or a drain that takes too long, ends the process.
        tokio::time::sleep(Duration::from_secs(30)).await;
        tracing::warn!("drain timed out; exiting");
        std::process::exit(1);
    });
}

/// Migrations each service applies at start-up, for `ticketer migrate`.
pub fn migrations(svc: Service) -> &'static [ticketer_db::Migration] {
    match svc {
        Service::Auth => ticketer_auth::MIGRATIONS,
        Service::Events => ticketer_events::MIGRATIONS,
        Service::Ticket => ticketer_ticket::MIGRATIONS,
        Service::Booking => ticketer_booking::MIGRATIONS,
        Service::Payment => ticketer_payment::MIGRATIONS,
        Service::Notification => ticketer_notification::MIGRATIONS,
        Service::Gateway => &[],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::from_map(Service::Gateway, vars)
    }

    #[test]
    fn in_one_process_services_call_each_other_directly_with_a_secret_of_their_own() {
        for vars in [&[][..], &[("AMQP_URL", "amqp://broker")][..]] {
            let own = service_token(&env(vars));
            assert!(own.secret().len() >= 32, "not guessable");
            assert_ne!(service_token(&env(vars)), own, "a new one every time");
        }
        assert_eq!(
            service_token(&env(&[("SERVICE_TOKEN", "given")])),
            ServiceToken::new("given")
        );
    }

    #[test]
    fn in_one_process_only_the_gateway_listens_beyond_loopback() {
        let e = env(&[("HOST", "0.0.0.0")]);
        assert_eq!(host_for(&e, Service::Gateway, Placement::InProcess), "0.0.0.0");
        for svc in Service::BACKENDS {
            assert_eq!(host_for(&e, svc, Placement::InProcess), "127.0.0.1", "{svc}");
            assert_eq!(host_for(&e, svc, Placement::OnItsOwn), "0.0.0.0", "{svc}");
        }
        // A backend's own setting is the operator's explicit choice.
        let e = env(&[("HOST", "0.0.0.0"), ("EVENTS_HOST", "10.0.0.5")]);
        assert_eq!(host_for(&e, Service::Events, Placement::InProcess), "10.0.0.5");
        assert_eq!(
            host_for(&env(&[]), Service::Gateway, Placement::InProcess),
            "0.0.0.0"
        );
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    /// An operator learns what can be set from the README's table: every
    /// variable a service reads is there, with its prefix.
    #[test]
    fn every_service_setting_is_documented() {
        let readme = include_str!("../../../README.md");
        let read: [(Service, &[&str]); 5] = [
            (Service::Events, ticketer_events::Settings::VARIABLES),
            (Service::Ticket, ticketer_ticket::Settings::VARIABLES),
            (Service::Booking, ticketer_booking::Settings::VARIABLES),
            (Service::Payment, ticketer_payment::Settings::VARIABLES),
            (Service::Notification, ticketer_notification::Settings::VARIABLES),
        ];
        let missing: Vec<String> = read
            .iter()
            .flat_map(|(svc, vars)| vars.iter().map(move |v| format!("{}{v}", svc.env_prefix())))
            .filter(|name| !readme.contains(&format!("`{name}`")))
            .collect();
        assert!(missing.is_empty(), "not in the README: {missing:?}");
    }

    #[test]
    fn a_wrong_setting_stops_a_service_by_name_before_it_connects() {
        let env = Env::from_pairs(Service::Booking, &[("BOOKING_PAYMENT_TIMEOUT_SECONDS", "soon")]);
        let err = Settings::of(Service::Booking, &env).err().expect("refused");
        assert!(
            err.to_string().contains("BOOKING_PAYMENT_TIMEOUT_SECONDS"),
            "{err}"
        );
    }
}
