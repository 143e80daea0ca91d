use std::sync::atomic::{AtomicUsize, Ordering};

use ticketer_testkit::TestDatabase;

use super::*;
use crate::store::NewNotification;

/// Fails its first `failures` sends, then accepts.
struct Flaky {
    failures: usize,
    sends: AtomicUsize,
}

#[async_trait::async_trait]
impl Channel for Flaky {
    async fn send(&self, _n: &Notification) -> Result<(), String> {
        let attempt = self.sends.fetch_add(1, Ordering::SeqCst);
        if attempt < self.failures {
            Err(format!("421 try again later ({attempt})"))
        } else {
            Ok(())
        }
    }
}

async fn one_pending(db: &Db) {
    let mut conn = db.pool().acquire().await.unwrap();
    let stored = store::insert_all(
        &mut conn,
        &[NewNotification {
            dedup_key: "m1:u1:WELCOME".into(),
            recipient_id: Some("u1".into()),
            recipient: "ada@example.com".into(),
            channel: "EMAIL",
            notification_type: "WELCOME",
            subject: "Welcome".into(),
            body_text: "Hello".into(),
            body_html: "<p>Hello</p>".into(),
            status: "PENDING",
            last_error: None,
            event_id: None,
            booking_id: None,
        }],
    )
    .await
    .unwrap();
    assert_eq!(stored, 1);
}

async fn migrated() -> (TestDatabase, Db) {
    let tdb = TestDatabase::sqlite();
    let db = tdb.connect().await.unwrap();
    db.migrate("notification", crate::MIGRATIONS).await.unwrap();
    (tdb, db)
}

fn delivery(db: &Db, channel: Arc<Flaky>, max_attempts: u32) -> Delivery {
    Delivery {
        db: db.clone(),
        sends: crate::news::EMAIL,
        channel,
        wake: Arc::new(Notify::new()),
        max_attempts,
        base_backoff: Duration::ZERO,
    }
}

async fn the_one(db: &Db) -> Notification {
    let (mut items, _) = store::page(db, &store::Filter::default(), 10, 0).await.unwrap();
    assert_eq!(items.len(), 1);
    items.remove(0)
}

/// A send that fails is tried again until it goes through, and the record
/// says how many tries it took; once SENT it is never sent again.
#[tokio::test]
async fn a_failed_send_is_retried_until_sent() {
    let (_tdb, db) = migrated().await;
    let channel = Arc::new(Flaky {
        failures: 2,
        sends: AtomicUsize::new(0),
    });
    let d = delivery(&db, channel.clone(), 5);
    one_pending(&db).await;
    for _ in 0..5 {
        d.round().await.unwrap();
    }
    let n = the_one(&db).await;
    assert_eq!((n.status.as_str(), n.retry_count), ("SENT", 2));
    assert!(n.sent_at.is_some());
    assert_eq!(
        channel.sends.load(Ordering::SeqCst),
        3,
        "sent once it went through"
    );
    db.close().await;
}

/// After the last attempt the notification is FAILED, with the last error.
#[tokio::test]
async fn a_send_that_never_works_ends_failed() {
    let (_tdb, db) = migrated().await;
    let channel = Arc::new(Flaky {
        failures: usize::MAX,
        sends: AtomicUsize::new(0),
    });
    let d = delivery(&db, channel.clone(), 3);
    one_pending(&db).await;
    for _ in 0..6 {
        d.round().await.unwrap();
    }
    let n = the_one(&db).await;
    assert_eq!((n.status.as_str(), n.retry_count, n.sent_at), ("FAILED", 3, None));
    assert!(n.last_error.as_deref().unwrap().contains("421"));
    assert_eq!(channel.sends.load(Ordering::SeqCst), 3, "three attempts, no more");
    db.close().await;
}

/// Two workers (two replicas) never both take the same notification.
#[tokio::test]
async fn a_notification_is_taken_by_one_worker_only() {
    let (_tdb, db) = migrated().await;
    one_pending(&db).await;
    let lease = Duration::from_secs(60);
    let (a, b) = tokio::join!(
        store::claim_due(&db, crate::news::EMAIL, 10, lease),
        store::claim_due(&db, crate::news::EMAIL, 10, lease)
    );
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1);
    assert!(
        store::claim_due(&db, crate::news::EMAIL, 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    db.close().await;
}

#[test]
fn backoff_doubles_with_jitter_and_is_capped() {
    let base = Duration::from_secs(2);
    assert_eq!(backoff(base, 0, 1.0), Duration::from_secs(2));
    assert_eq!(backoff(base, 3, 1.0), Duration::from_secs(16));
    assert_eq!(backoff(base, 3, 0.0), Duration::from_secs(8));
    assert_eq!(backoff(base, 40, 1.0), MAX_BACKOFF);
}

/// The email carries both bodies, the recipient and the notification's id.
#[test]
fn an_email_has_text_and_html_and_its_id() {
    let n = Notification {
        id: "0190-abc".into(),
        recipient_id: None,
        recipient: "ada@example.com".into(),
        channel: "EMAIL".into(),
        notification_type: "WELCOME".into(),
        subject: "Welcome to Ticketer".into(),
        body_text: "Hello Ada".into(),
        body_html: "<p>Hello Ada</p>".into(),
        status: "PENDING".into(),
        retry_count: 0,
        next_attempt_at: String::new(),
        last_error: None,
        event_id: None,
        booking_id: None,
        created_at: String::new(),
        sent_at: None,
    };
    let from: Mailbox = "Ticketer <no-reply@ticketer.localhost>".parse().unwrap();
    let text = String::from_utf8(email(&from, &n).unwrap().formatted()).unwrap();
    for part in [
        "To: ada@example.com",
        "Subject: Welcome to Ticketer",
        "Message-ID: <0190-abc@ticketer>",
        "text/plain",
        "text/html",
        "Hello Ada",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let nobody = Notification {
        recipient: "not an address".into(),
        ..n
    };
    assert!(email(&from, &nobody).is_err());
}

/// Counts sends in flight; each takes a moment.
#[derive(Default)]
struct Crowd {
    now: AtomicUsize,
    most: AtomicUsize,
    sent: AtomicUsize,
}

#[async_trait::async_trait]
impl Channel for Crowd {
    async fn send(&self, _n: &Notification) -> Result<(), String> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// `n` emails of an event's cancellation, due now.
async fn crowd_due(db: &Db, n: usize) {
    let all: Vec<NewNotification> = (0..n)
        .map(|i| NewNotification {
            dedup_key: format!("m:{i}:EVENT_CANCELLED"),
            recipient_id: Some(format!("u{i}")),
            recipient: format!("u{i}@example.com"),
            channel: "EMAIL",
            notification_type: "EVENT_CANCELLED",
            subject: "Cancelled".into(),
            body_text: "Sorry".into(),
            body_html: "<p>Sorry</p>".into(),
            status: "PENDING",
            last_error: None,
            event_id: Some(1),
            booking_id: None,
        })
        .collect();
    let mut conn = db.pool().acquire().await.unwrap();
    assert_eq!(store::insert_all(&mut conn, &all).await.unwrap(), n as u64);
}

/// However many are due (an event's cancellation to every holder), a
/// worker has at most a few sends, so a few connections, open at once.
#[tokio::test]
async fn a_crowd_is_sent_a_few_at_a_time() {
    let (_tdb, db) = migrated().await;
    crowd_due(&db, 300).await;
    let crowd = Arc::new(Crowd::default());
    let d = Delivery {
        db: db.clone(),
        sends: crate::news::EMAIL,
        channel: crowd.clone(),
        wake: Arc::new(Notify::new()),
        max_attempts: 3,
        base_backoff: Duration::ZERO,
    };
    while d.round().await.unwrap() > 0 {}
    assert_eq!(crowd.sent.load(Ordering::SeqCst), 300);
    let most = crowd.most.load(Ordering::SeqCst);
    assert!((2..=AT_ONCE).contains(&most), "{most} at once");
    db.close().await;
}

/// Workers on several replicas, on PostgreSQL: claiming and sending at
/// once, each of 400 due notifications is sent exactly once.
#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_replicas_send_each_notification_once() {
    let Some(url) = ticketer_testkit::postgres_url() else {
        ticketer_testkit::skip_test("PostgreSQL delivery test", "TICKETER_TEST_POSTGRES_URL");
        return;
    };
    let tdb = TestDatabase::postgres(&url, "delivery").await.unwrap();
    let db = tdb.connect().await.unwrap();
    db.migrate("notification", crate::MIGRATIONS).await.unwrap();
    crowd_due(&db, 400).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);
    #[async_trait::async_trait]
    impl Channel for Recorder {
        async fn send(&self, n: &Notification) -> Result<(), String> {
            self.0.lock().unwrap().push(n.id.clone());
            Ok(())
        }
    }
    let workers = (0..3).map(|_| Delivery {
        db: db.clone(),
        sends: crate::news::EMAIL,
        channel: Arc::new(Recorder(seen.clone())),
        wake: Arc::new(Notify::new()),
        max_attempts: 3,
        base_backoff: Duration::ZERO,
    });
    futures::future::join_all(workers.map(|w| async move { while w.round().await.unwrap() > 0 {} })).await;
    let mut ids = seen.lock().unwrap().clone();
    ids.sort();
    let sent = ids.len();
    ids.dedup();
    assert_eq!((sent, ids.len()), (400, 400), "each sent once");
    assert_eq!(store::status_counts(&db).await.unwrap(), (400, 0));
    db.close().await;
}
