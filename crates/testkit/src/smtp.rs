//! A mail server for tests: just enough of RFC 5321 for a client without
//! TLS or authentication, keeping every message it receives.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// What the server saw: connections accepted and messages received.
#[derive(Default)]
pub struct SmtpSink {
    pub connections: AtomicUsize,
    pub messages: Mutex<Vec<String>>,
    /// Recipients refused with 550.
    pub refuse: Mutex<Vec<String>>,
}

impl SmtpSink {
    /// Serves on `listener` until the test ends.
    pub fn start(listener: TcpListener) -> Arc<SmtpSink> {
        let sink = Arc::new(SmtpSink::default());
        tokio::spawn(serve(listener, sink.clone()));
        sink
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("not poisoned").clone()
    }
}

async fn serve(listener: TcpListener, seen: Arc<SmtpSink>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        seen.connections.fetch_add(1, Ordering::SeqCst);
        let seen = seen.clone();
        tokio::spawn(async move {
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            if write.write_all(b"220 test ESMTP\r\n").await.is_err() {
                return;
            }
            let mut data: Option<String> = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(body) = data.as_mut() {
                    if line == "." {
                        let message = data.take().unwrap_or_default();
                        seen.messages.lock().expect("not poisoned").push(message);
                        let _ = write.write_all(b"250 queued\r\n").await;
                    } else {
                        body.push_str(&line);
                        body.push('\n');
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                let refused = verb == "RCPT"
                    && seen
                        .refuse
                        .lock()
                        .expect("not poisoned")
                        .iter()
                        .any(|r| line.contains(r.as_str()));
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250-test\r\n250 8BITMIME\r\n",
                    "RCPT" if refused => b"550 no such user\r\n",
                    "DATA" => {
                        data = Some(String::new());
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    }
                    _ => b"250 OK\r\n",
                };
                if write.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}
