//! `ticketer bench fan-out`: an event with `recipients` ticket holders is
//! cancelled. How long the notification service takes to store one email
//! per holder (one message, one transaction) and then to send them all,
//! through the same listener, delivery worker and channel as the running
//! service. The holders and their contacts are written straight into the
//! database first (setup, timed apart).

use std::{sync::Arc, time::Instant};

use ticketer_bus::Envelope;
use ticketer_contract::{EventCancelled, EventSnapshot, EventStatus, Money};
use ticketer_db::{Db, MessageHandler};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    compose::Contact,
    delivery::{Channel, Delivery, MailDir, Smtp, AT_ONCE},
    news::{Listener, EMAIL},
    store::{self, Holding},
};

/// The report, one JSON object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub recipients: usize,
    pub channel: &'static str,
    /// Writing the holders and their contacts (not part of the fan-out).
    pub setup_s: f64,
    /// Hearing EventCancelled: every holder's notification stored.
    pub stored_s: f64,
    /// From stored to the last one sent.
    pub sent_s: f64,
    pub sent_per_s: f64,
    pub sent: usize,
    pub failed: usize,
    /// Sends in flight at most, per worker.
    pub at_once: usize,
    /// This process's peak resident memory (Linux), in MB.
    pub peak_rss_mb: Option<f64>,
}

/// Runs the fan-out on `db` (migrated here), sending over SMTP at
/// `smtp_url`, or else writing `.eml` files into `mail_dir`.
pub async fn run(
    db: Db,
    recipients: usize,
    smtp_url: Option<&str>,
    mail_dir: std::path::PathBuf,
) -> anyhow::Result<Report> {
    let from: lettre::message::Mailbox = crate::settings::DEFAULT_MAIL_FROM.parse()?;
    let channel: Arc<dyn Channel> = match smtp_url {
        Some(url) => Arc::new(Smtp::new(url, from).map_err(anyhow::Error::msg)?),
        None => Arc::new(MailDir { dir: mail_dir, from }),
    };
    db.migrate("notification", crate::MIGRATIONS).await?;
    let event_id = 1;
    let started = Instant::now();
    let mut tx = db.begin().await?;
    let mut holdings = Vec::with_capacity(recipients);
    for i in 0..recipients {
        let user_id = Uuid::new_v4().to_string();
        let contact = Contact {
            user_id: user_id.clone(),
            email: format!("holder-{i}@example.com"),
            first_name: format!("Holder {i}"),
            last_name: "Bench".into(),
        };
        store::save_contact(&mut tx, &contact).await?;
        holdings.push(Holding {
            booking_id: Uuid::new_v4().to_string(),
            event_id,
            customer_id: user_id,
        });
    }
    store::hold_all(&mut tx, &holdings).await?;
    tx.commit().await?;
    let setup_s = started.elapsed().as_secs_f64();

    let snapshot = EventSnapshot {
        event_id,
        event_name: "Fan-out".into(),
        category: "Music".into(),
        location: "Stadium".into(),
        event_date: "2030-06-01".into(),
        start_time: "19:00".into(),
        end_time: "23:00".into(),
        ticket_capacity: recipients as i64,
        ticket_price: Money::from_minor(2500),
        currency: "EUR".into(),
        organizer: Uuid::new_v4(),
        status: EventStatus::Cancelled,
        version: 2,
    };
    let wake = Arc::new(Notify::new());
    let listener = Listener::new(wake.clone());
    let cancelled = Envelope::of(&EventCancelled(snapshot))?;
    let started = Instant::now();
    let mut tx = db.begin().await?;
    listener
        .handle(&mut tx, &cancelled)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit().await?;
    let stored_s = started.elapsed().as_secs_f64();

    let worker = Delivery {
        db: db.clone(),
        sends: EMAIL,
        channel,
        wake,
        max_attempts: 1,
        base_backoff: std::time::Duration::ZERO,
    };
    let started = Instant::now();
    while worker.round().await? > 0 {}
    let sent_s = started.elapsed().as_secs_f64();
    let (sent, failed) = store::status_counts(&db).await?;
    Ok(Report {
        recipients,
        channel: EMAIL,
        setup_s,
        stored_s,
        sent_s,
        sent_per_s: sent as f64 / sent_s.max(f64::EPSILON),
        sent,
        failed,
        at_once: AT_ONCE,
        peak_rss_mb: peak_rss_mb(),
    })
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small fan-out through the `.eml` channel: every holder is sent
    /// exactly one email, and the report counts them.
    #[tokio::test]
    async fn every_holder_gets_one_email() {
        let tdb = ticketer_testkit::TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let report = run(db.clone(), 120, None, dir.path().join("mail")).await.unwrap();
        assert_eq!((report.sent, report.failed), (120, 0));
        let files = std::fs::read_dir(dir.path().join("mail")).unwrap().count();
        assert_eq!(files, 120);
        db.close().await;
    }
}
