//! Sending what is stored: a worker takes due PENDING notifications from
//! the table (leased, so replicas never take the same one), sends a few at
//! a time through the channel, marks those sent SENT (one statement per
//! round), and tries a failed one again later with exponential backoff and
//! jitter, FAILED after the last attempt. A restart resumes whatever is still PENDING. An email whose
//! sending was cut by a crash after the server took it may go out twice:
//! its Message-ID, the notification's id, lets a mail client fold the two.

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures::StreamExt;
use lettre::{
    message::{header::ContentType, Mailbox, MultiPart, SinglePart},
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use rand::Rng;
use ticketer_db::{time, Db};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{self, Notification};

/// Notifications taken per round.
const PER_ROUND: i64 = 50;
/// Sent at once (one SMTP connection each, from the transport's pool).
pub const AT_ONCE: usize = 8;
/// How long a taken notification is left to its worker.
const LEASE: Duration = Duration::from_secs(120);
/// Looked for at least this often, woken or not (retries come due).
const POLL: Duration = Duration::from_secs(1);
/// Backoff never grows past this.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Where a notification goes out.
#[async_trait::async_trait]
pub trait Channel: Send + Sync + 'static {
    async fn send(&self, n: &Notification) -> Result<(), String>;
}

/// The email a notification stands for: plain text and HTML alternatives.
pub fn email(from: &Mailbox, n: &Notification) -> Result<Message, String> {
    let to: Mailbox = n.recipient.parse().map_err(|e| format!("recipient: {e}"))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(n.subject.clone())
        .message_id(Some(format!("<{}@ticketer>", n.id)))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(n.body_text.clone()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(n.body_html.clone()),
                ),
        )
        .map_err(|e| e.to_string())
}

/// The embedded backend's mail: one `<id>.eml` file per email.
pub struct MailDir {
    pub dir: PathBuf,
    pub from: Mailbox,
}

#[async_trait::async_trait]
impl Channel for MailDir {
    async fn send(&self, n: &Notification) -> Result<(), String> {
        let message = email(&self.from, n)?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| e.to_string())?;
        let path = self.dir.join(format!("{}.eml", n.id));
        tokio::fs::write(&path, message.formatted())
            .await
            .map_err(|e| e.to_string())
    }
}

/// SMTP, with pooled connections reused between emails.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// `smtp://user:pass@host:587?tls=required`, `smtps://host` or
    /// `smtp://host:25` (lettre's URL forms).
    pub fn new(url: &str, from: Mailbox) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| e.to_string())?
            .timeout(Some(Duration::from_secs(15)))
            .build();
        Ok(Smtp { transport, from })
    }
}

#[async_trait::async_trait]
impl Channel for Smtp {
    async fn send(&self, n: &Notification) -> Result<(), String> {
        let message = email(&self.from, n)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// How long before attempt `retry + 1`: `base * 2^retry`, at most an hour,
/// with jitter (half to the whole of it) so that failures do not come back
/// in step.
pub fn backoff(base: Duration, retry: u32, jitter: f64) -> Duration {
    let full = base
        .saturating_mul(2u32.saturating_pow(retry.min(20)))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Wakes every channel's worker that is waiting, and leaves a permit for
/// the next one to wait if none is (the others look again within a
/// second): something new may be due.
pub fn wake_workers(wake: &Notify) {
    wake.notify_waiters();
    wake.notify_one();
}

/// One channel's worker: each channel has its own, so that a slow or
/// failing SMS provider never holds up email.
pub struct Delivery {
    pub db: Db,
    /// Which notifications it sends: EMAIL, SMS or PUSH.
    pub sends: &'static str,
    pub channel: Arc<dyn Channel>,
    pub wake: Arc<Notify>,
    /// Attempts in all before a notification is FAILED.
    pub max_attempts: u32,
    pub base_backoff: Duration,
}

impl Delivery {
    /// Sends what is due once; returns how many were taken.
    pub async fn round(&self) -> Result<usize, ticketer_db::DbError> {
        let due = store::claim_due(&self.db, self.sends, PER_ROUND, LEASE).await?;
        let taken = due.len();
        let mut sending = futures::stream::iter(due.into_iter().map(|n| async move {
            let sent = self.channel.send(&n).await;
            (n, sent)
        }))
        .buffer_unordered(AT_ONCE);
        let mut sent_ids = Vec::with_capacity(taken);
        while let Some((n, sent)) = sending.next().await {
            let recorded = match sent {
                Ok(()) => {
                    sent_ids.push(n.id);
                    continue;
                }
                Err(error) => {
                    let attempts = n.retry_count as u32 + 1;
                    let retry_at = (attempts < self.max_attempts).then(|| {
                        let wait = backoff(self.base_backoff, attempts - 1, rand::thread_rng().gen());
                        time::from_now(wait)
                    });
                    tracing::warn!(notification_id = %n.id, attempts, %error, "notification not sent");
                    store::mark_failed_attempt(&self.db, &n.id, &error, retry_at).await
                }
            };
            // Unrecorded, it stays leased and is sent again after the lease.
            if let Err(e) = recorded {
                tracing::warn!(notification_id = %n.id, error = %e, "delivery not recorded");
            }
        }
        // One statement for the round's successes, not one commit each.
        // Unrecorded (the process stopped first), they stay leased and
        // are sent again once the lease runs out: at least once, as after
        // a crash between a send and its record.
        if let Err(e) = store::mark_all_sent(&self.db, &sent_ids).await {
            tracing::warn!(count = sent_ids.len(), error = %e, "deliveries not recorded");
        }
        Ok(taken)
    }

    /// Rounds until `shutdown`: at once while there is more, otherwise when
    /// woken by a commit or every second.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let more = match self.round().await {
                Ok(n) => n as i64 == PER_ROUND,
                Err(e) => {
                    tracing::warn!(error = %e, "delivery round failed");
                    false
                }
            };
            // A full round means more is due; but a stop ends the run
            // between rounds, however much is due.
            if more && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
mod webhook;

pub use webhook::{payload, JsonLines, Webhook};
