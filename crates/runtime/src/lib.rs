//! What every service runs on besides its own routes: its database, the
//! bus, the cache, token checks and metrics ([`Runtime`]); its consumers,
//! each behind the inbox ([`Runtime::consume`]); and the tasks every
//! service starts with its HTTP server ([`launch`]: the outbox relay, the
//! janitor, the sampled figures). `ticketer_http` holds the HTTP side.

pub mod dead_letters;
pub mod direct;
mod operations;

use std::sync::Arc;

use axum::Router;
use ticketer_bus::{topology::QueueSpec, BatchHandler, Bus, BusError};
use ticketer_cache::Cache;
use ticketer_config::InfraConfig;
use ticketer_db::{Db, MessageHandler};
use ticketer_http::{
    assemble, Idempotency, Metrics, MetricsAccess, Plumbing, Readiness, ServiceApp, TokenVerifier,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::operations::{Counted, Operations};

/// How often the outbox backlog and the connection pool are sampled for
/// `/metrics`: often enough for an alert measured in minutes, one cheap
/// query each time.
const OPERATIONS_SAMPLE: std::time::Duration = std::time::Duration::from_secs(5);

/// A service's connections and shared settings.
#[derive(Clone)]
pub struct Runtime {
    /// The settings every service shares (HTTP limits, consumer and outbox
    /// tuning); a service's own are its `Settings`.
    pub infra: InfraConfig,
    pub db: Db,
    pub bus: Bus,
    pub cache: Option<Cache>,
    pub verifier: TokenVerifier,
    /// The service's `/metrics`, which its consumers count into.
    pub metrics: Metrics,
    ops: Operations,
}

impl Runtime {
    pub fn new(infra: InfraConfig, db: Db, bus: Bus, cache: Option<Cache>, verifier: TokenVerifier) -> Self {
        let metrics = Metrics::new(infra.service.name());
        let ops = Operations::register(&metrics);
        Runtime {
            infra,
            db,
            bus,
            cache,
            verifier,
            metrics,
            ops,
        }
    }

    /// Consumes `spec`'s queue with `handler` behind the inbox (one
    /// transaction per batch, duplicates skipped), tuned by configuration.
    pub async fn consume<H: MessageHandler>(
        &self,
        spec: QueueSpec,
        handler: H,
        shutdown: &CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BusError> {
        let inbox = ticketer_db::Inbox::new(self.db.clone(), spec.name, handler);
        self.consume_batches(spec, Arc::new(inbox), shutdown).await
    }

    /// Consumes `spec`'s queue with a batch handler of the service's own
    /// (which applies its batches through an inbox itself), tuned by
    /// configuration.
    pub async fn consume_batches(
        &self,
        spec: QueueSpec,
        handler: Arc<dyn BatchHandler>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BusError> {
        let infra = &self.infra;
        let sub = spec.subscription().tuned(
            infra.consumer_prefetch,
            infra.consumer_concurrency,
            infra.consumer_batch_size,
        );
        // A pattern's first word is the kind (`<kind>.#` takes its answered
        // copies too).
        let kinds: Vec<&str> = spec
            .bindings
            .iter()
            .filter_map(|(_, pattern)| pattern.split('.').next())
            .collect();
        let counted = Counted::new(handler, spec.name, &kinds, self.ops.clone());
        self.bus.subscribe(sub, Arc::new(counted), shutdown.clone()).await
    }
}

/// Starts the outbox relay, the janitor and the sampled figures, and
/// wraps `api` in the standard routes and layers: the common tail of every
/// service's `build`. Every POST honours `Idempotency-Key`.
pub fn launch(
    name: &'static str,
    api: Router,
    openapi: utoipa::openapi::OpenApi,
    runtime: Runtime,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> ServiceApp {
    let every_post = Idempotency::AllPostsExcept(&[]);
    launch_with(name, api, openapi, runtime, listener, shutdown, every_post)
}

/// [`launch`], for a service that handles `Idempotency-Key` otherwise: some
/// POST routes keep it themselves, or none may honour it.
pub fn launch_with(
    name: &'static str,
    api: Router,
    openapi: utoipa::openapi::OpenApi,
    runtime: Runtime,
    listener: TcpListener,
    shutdown: CancellationToken,
    idempotency: Idempotency,
) -> ServiceApp {
    let Runtime {
        infra,
        db,
        bus,
        cache,
        verifier,
        metrics,
        ops,
    } = runtime;
    // The service's dead letters, for administrators.
    let (api, openapi) = match dead_letters::router(infra.service, bus.clone(), db.clone()) {
        Some(letters) => {
            let mut openapi = openapi;
            openapi.merge(<dead_letters::ApiDoc as utoipa::OpenApi>::openapi());
            (api.merge(letters), openapi)
        }
        None => (api, openapi),
    };
    let relay = ticketer_db::OutboxRelay::new(
        db.clone(),
        bus.clone(),
        infra.outbox_batch_size,
        infra.outbox_poll,
    );
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let janitor = tokio::spawn(ticketer_db::janitor::run(
        db.clone(),
        ticketer_db::janitor::Retention::default(),
        std::time::Duration::from_secs(600),
        shutdown.clone(),
    ));
    let sampler = tokio::spawn(operations::sample(
        db.clone(),
        ops,
        OPERATIONS_SAMPLE,
        shutdown.clone(),
    ));
    let router = assemble(
        api,
        Plumbing {
            service: name,
            metrics,
            readiness: Readiness {
                db: Some(db.clone()),
                bus: Some(bus),
                cache,
            },
            verifier: Some(verifier),
            openapi: Some(openapi),
            idempotency: Some((db, idempotency)),
            metrics_access: MetricsAccess::Open,
        },
    );
    ServiceApp::new(name, listener, router, shutdown)
        .with_limits(infra.http)
        .with_tasks([relay, janitor, sampler])
}
