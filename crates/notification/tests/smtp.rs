//! Email over SMTP, against a small SMTP server started by the test: the
//! message arrives whole, and one connection carries several emails.

use std::sync::atomic::Ordering;

use ticketer_notification::{
    delivery::{Channel, Smtp},
    store::Notification,
};
use ticketer_testkit::SmtpSink;
use tokio::net::TcpListener;

fn notification(id: &str, to: &str, subject: &str) -> Notification {
    Notification {
        id: id.into(),
        recipient_id: None,
        recipient: to.into(),
        channel: "EMAIL".into(),
        notification_type: "WELCOME".into(),
        subject: subject.into(),
        body_text: format!("Hello, {subject}"),
        body_html: format!("<p>Hello, {subject}</p>"),
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

#[tokio::test]
async fn emails_go_out_over_one_reused_smtp_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = SmtpSink::start(listener);
    seen.refuse.lock().unwrap().push("nobody@example.com".into());

    let from = "Ticketer <no-reply@ticketer.localhost>".parse().unwrap();
    let smtp = Smtp::new(&format!("smtp://127.0.0.1:{port}"), from).unwrap();
    smtp.send(&notification("n1", "ada@example.com", "First"))
        .await
        .unwrap();
    // The pool takes a connection back in a task of its own.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    smtp.send(&notification("n2", "bob@example.com", "Second"))
        .await
        .unwrap();
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "the pooled connection is reused"
    );
    let refused = smtp
        .send(&notification("n3", "nobody@example.com", "Third"))
        .await;
    assert!(
        refused.is_err(),
        "a refused recipient is an error to retry or record"
    );

    let messages = seen.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 2, "{messages:?}");
    for (m, (to, subject, id)) in messages.iter().zip([
        ("ada@example.com", "First", "n1"),
        ("bob@example.com", "Second", "n2"),
    ]) {
        assert!(m.contains(&format!("To: {to}")), "{m}");
        assert!(m.contains(&format!("Subject: {subject}")), "{m}");
        assert!(m.contains(&format!("Message-ID: <{id}@ticketer>")), "{m}");
        assert!(m.contains("text/plain") && m.contains("text/html"), "{m}");
    }
}
