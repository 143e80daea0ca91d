//! The notification service: what customers and organizers are told when
//! they register, when an event is published or cancelled, and when a
//! booking is confirmed, fails or is cancelled. Every notification is
//! stored before it is sent (the table is the delivery work queue and its
//! record), then sent by email: `.eml` files under `<data-dir>/mail`, or
//! SMTP when `NOTIFICATION_SMTP_URL` is set.

pub mod compose;
pub mod delivery;
mod news;
mod routes;
pub mod store;
pub mod templates;

use std::{sync::Arc, time::Duration};

pub use routes::ApiDoc;
pub use store::MIGRATIONS;
use ticketer_bus::topology::{AUTH_NOTIFICATIONS, BOOKING_NOTIFICATIONS, EVENT_NOTIFICATIONS};
use ticketer_config::InfraConfig;
use ticketer_http::{launch, ServiceApp, ServiceParts};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub async fn build(
    infra: &InfraConfig,
    parts: ServiceParts,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    let db = parts.db.clone();
    db.migrate("notification", MIGRATIONS).await?;
    let from: lettre::message::Mailbox = infra
        .env
        .get("MAIL_FROM")
        .unwrap_or_else(|| "Ticketer <no-reply@ticketer.localhost>".into())
        .parse()
        .map_err(|e| anyhow::anyhow!("NOTIFICATION_MAIL_FROM: {e}"))?;
    let channel: Arc<dyn delivery::Channel> = match infra.env.get("SMTP_URL") {
        Some(url) => Arc::new(
            delivery::Smtp::new(&url, from).map_err(|e| anyhow::anyhow!("NOTIFICATION_SMTP_URL: {e}"))?,
        ),
        None => Arc::new(delivery::MailDir {
            dir: infra.data_dir.join("mail"),
            from,
        }),
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for queue in [AUTH_NOTIFICATIONS, EVENT_NOTIFICATIONS, BOOKING_NOTIFICATIONS] {
        let listener = news::Listener { wake: wake.clone() };
        tasks.extend(parts.consume(queue, listener, infra, &shutdown).await?);
    }
    let worker = delivery::Delivery {
        db: db.clone(),
        channel,
        wake: wake.clone(),
        max_attempts: infra.env.parse_or("DELIVERY_ATTEMPTS", 6)?,
        base_backoff: Duration::from_millis(infra.env.parse_or("DELIVERY_BACKOFF_MS", 2000)?),
    };
    tasks.push(tokio::spawn(worker.run(shutdown.clone())));
    let app = launch(
        "notification",
        routes::router(db, wake),
        ApiDoc::openapi(),
        parts,
        infra,
        listener,
        shutdown,
    );
    Ok(app.with_tasks(tasks))
}
