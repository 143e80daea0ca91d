//! The notification service: what customers and organizers are told when
//! they register, when an event is published or cancelled, and when a
//! booking is confirmed, fails or is cancelled. Every notification is
//! stored before it is sent (the table is the delivery work queue and its
//! record), then sent by email: `.eml` files under `<data-dir>/mail`, or
//! SMTP when `NOTIFICATION_SMTP_URL` is set.

pub mod compose;
pub mod delivery;
pub mod fanout;
mod news;
mod routes;
pub mod settings;
pub mod store;
pub mod templates;

use std::sync::Arc;

pub use routes::ApiDoc;
pub use settings::Settings;
pub use store::MIGRATIONS;
use ticketer_bus::topology::{
    AUTH_NOTIFICATIONS, BOOKING_NOTIFICATIONS, EVENT_NOTIFICATIONS, PAYMENT_NOTIFICATIONS,
};
use ticketer_http::ServiceApp;
use ticketer_runtime::{launch, Runtime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub async fn build(
    settings: Settings,
    runtime: Runtime,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServiceApp> {
    let db = runtime.db.clone();
    db.migrate("notification", MIGRATIONS).await?;
    let from = settings.from.clone();
    let channel: Arc<dyn delivery::Channel> = match &settings.smtp_url {
        Some(url) => Arc::new(
            delivery::Smtp::new(url, from).map_err(|e| anyhow::anyhow!("NOTIFICATION_SMTP_URL: {e}"))?,
        ),
        None => Arc::new(delivery::MailDir {
            dir: runtime.infra.data_dir.join("mail"),
            from,
        }),
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for queue in [
        AUTH_NOTIFICATIONS,
        EVENT_NOTIFICATIONS,
        BOOKING_NOTIFICATIONS,
        PAYMENT_NOTIFICATIONS,
    ] {
        let listener = news::Listener::new(wake.clone());
        tasks.extend(runtime.consume(queue, listener, &shutdown).await?);
    }
    let by_webhook = |url: &Option<String>, file: &str| -> anyhow::Result<Arc<dyn delivery::Channel>> {
        Ok(match url {
            Some(url) => {
                Arc::new(delivery::Webhook::new(url, settings.webhook_timeout).map_err(anyhow::Error::msg)?)
            }
            None => Arc::new(delivery::JsonLines::new(runtime.infra.data_dir.join(file))),
        })
    };
    let channels = [
        (news::EMAIL, channel),
        (news::SMS, by_webhook(&settings.sms_webhook, "sms.jsonl")?),
        (news::PUSH, by_webhook(&settings.push_webhook, "push.jsonl")?),
    ];
    // A worker per channel: a provider that is slow or down holds up only
    // its own channel.
    for (sends, channel) in channels {
        let worker = delivery::Delivery {
            db: db.clone(),
            sends,
            channel,
            wake: wake.clone(),
            max_attempts: settings.delivery_attempts,
            base_backoff: settings.delivery_backoff,
        };
        tasks.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    let app = launch(
        "notification",
        routes::router(db, wake),
        ApiDoc::openapi(),
        runtime,
        listener,
        shutdown,
    );
    Ok(app.with_tasks(tasks))
}
