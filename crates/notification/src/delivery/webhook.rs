//! SMS and push: the notification as one JSON object, posted to the
//! provider's webhook (production) or appended as a line to a file under
//! the data dir (embedded), the way email goes to `.eml` files there.

use std::{path::PathBuf, time::Duration};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::Channel;
use crate::store::Notification;

/// What a provider receives: `{id, channel, to, type, subject, text}`,
/// `to` being the phone number (SMS) or the device's token (push). The id
/// is the notification's, the same on a retry, for the provider to drop a
/// repeat.
pub fn payload(n: &Notification) -> serde_json::Value {
    json!({
        "id": n.id,
        "channel": n.channel,
        "to": n.recipient,
        "type": n.notification_type,
        "subject": n.subject,
        "text": n.body_text,
    })
}

/// A provider's HTTP endpoint: a 2xx answer is sent; anything else, or no
/// answer within the timeout, is an attempt that failed (retried with
/// backoff), so a provider that hangs holds one send for the timeout, not
/// the channel.
pub struct Webhook {
    url: String,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Webhook {
            url: url.to_string(),
            http,
        })
    }
}

#[async_trait::async_trait]
impl Channel for Webhook {
    async fn send(&self, n: &Notification) -> Result<(), String> {
        let answer = self
            .http
            .post(&self.url)
            .json(&payload(n))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "the provider did not answer in time".to_string()
                } else {
                    format!("the provider could not be reached: {e}")
                }
            })?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the provider answered {status}"))
        }
    }
}

/// The embedded backend's SMS or push: one JSON line per message.
pub struct JsonLines {
    path: PathBuf,
    // One writer at a time, so that lines never interleave.
    file: tokio::sync::Mutex<()>,
}

impl JsonLines {
    pub fn new(path: PathBuf) -> Self {
        JsonLines {
            path,
            file: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait::async_trait]
impl Channel for JsonLines {
    async fn send(&self, n: &Notification) -> Result<(), String> {
        let mut line = payload(n).to_string();
        line.push('\n');
        let _one = self.file.lock().await;
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| e.to_string())?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| e.to_string())?;
        file.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        file.flush().await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sms() -> Notification {
        Notification {
            id: "0190-sms".into(),
            recipient_id: Some("u1".into()),
            recipient: "+4915112345678".into(),
            channel: "SMS".into(),
            notification_type: "BOOKING_CONFIRMED".into(),
            subject: "Your tickets".into(),
            body_text: "Hello Ada".into(),
            body_html: String::new(),
            status: "PENDING".into(),
            retry_count: 0,
            next_attempt_at: String::new(),
            last_error: None,
            event_id: None,
            booking_id: None,
            created_at: String::new(),
            sent_at: None,
        }
    }

    /// A provider that takes the connection and never answers costs one
    /// attempt of the timeout, reported as such.
    #[tokio::test]
    async fn a_provider_that_never_answers_is_a_failed_attempt_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/sms", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let hook = Webhook::new(&url, Duration::from_millis(200)).unwrap();
        let err = hook.send(&sms()).await.unwrap_err();
        assert!(err.contains("did not answer in time"), "{err}");
        held.abort();
    }

    /// Embedded, each message is one JSON line, whatever sends at once.
    #[tokio::test]
    async fn each_message_is_one_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sms.jsonl");
        let lines = std::sync::Arc::new(JsonLines::new(path.clone()));
        let sends = (0..20).map(|i| {
            let lines = lines.clone();
            async move {
                let mut n = sms();
                n.id = format!("n{i}");
                lines.send(&n).await
            }
        });
        for sent in futures::future::join_all(sends).await {
            sent.unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["to"], "+4915112345678");
                v["id"].as_str().unwrap().to_string()
            })
            .collect();
        ids.sort();
        assert_eq!(ids.len(), 20);
        ids.dedup();
        assert_eq!(ids.len(), 20, "every message once");
    }
}
