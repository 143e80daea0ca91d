//! Email over SMTP, against a small SMTP server started by the test: the
//! message arrives whole, and one connection carries several emails.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use ticketer_notification::{
    delivery::{Channel, Smtp},
    store::Notification,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// What the server saw: connections accepted and messages received.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    messages: Mutex<Vec<String>>,
    /// Recipients refused with 550.
    refuse: Mutex<Vec<String>>,
}

/// Just enough of RFC 5321 for a client without TLS or authentication.
async fn serve(listener: TcpListener, seen: Arc<Seen>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        seen.connections.fetch_add(1, Ordering::SeqCst);
        let seen = seen.clone();
        tokio::spawn(async move {
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 test ESMTP\r\n").await.unwrap();
            let mut data: Option<String> = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(body) = data.as_mut() {
                    if line == "." {
                        seen.messages.lock().unwrap().push(data.take().unwrap());
                        write.write_all(b"250 queued\r\n").await.unwrap();
                    } else {
                        body.push_str(&line);
                        body.push('\n');
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250-test\r\n250 8BITMIME\r\n",
                    "RCPT"
                        if seen
                            .refuse
                            .lock()
                            .unwrap()
                            .iter()
                            .any(|r| line.contains(r.as_str())) =>
                    {
                        b"550 no such user\r\n"
                    }
                    "DATA" => {
                        data = Some(String::new());
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        write.write_all(b"221 bye\r\n").await.unwrap();
                        return;
                    }
                    _ => b"250 OK\r\n",
                };
                write.write_all(reply).await.unwrap();
            }
        });
    }
}

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
    let seen = Arc::new(Seen::default());
    seen.refuse.lock().unwrap().push("nobody@example.com".into());
    tokio::spawn(serve(listener, seen.clone()));

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
