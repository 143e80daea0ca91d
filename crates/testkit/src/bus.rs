//! A throwaway RabbitMQ virtual host per test, so tests run in parallel
//! against one broker without seeing each other's queues.

use std::{
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::{net::TcpListener, task::JoinHandle};

/// The broker tests may use, from `TICKETER_TEST_AMQP_URL`.
pub fn amqp_url() -> Option<String> {
    std::env::var("TICKETER_TEST_AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// A vhost that exists for one test; deleted on drop.
pub struct TestVhost {
    pub name: String,
    /// `amqp_url` pointing at the new vhost.
    pub url: String,
}

impl TestVhost {
    /// Creates the vhost with `rabbitmqctl` (the broker runs on this machine).
    pub fn create(amqp_url: &str) -> std::io::Result<Self> {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        ctl(&["add_vhost", &name])?;
        let user = amqp_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['@', ':']).next())
            .filter(|u| !u.is_empty())
            .unwrap_or("guest")
            .to_string();
        ctl(&["set_permissions", "-p", &name, &user, ".*", ".*", ".*"])?;
        let base = amqp_url.trim_end_matches('/');
        let base = match base.rfind('/') {
            Some(i) if i > base.find("://").map(|s| s + 2).unwrap_or(0) => &base[..i],
            _ => base,
        };
        Ok(TestVhost {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

fn ctl(args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("rabbitmqctl").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = ctl(&["delete_vhost", &self.name]);
    }
}

/// A TCP proxy in front of a server, for failure tests: `cut` drops every
/// open connection, `block` refuses new ones until `unblock`, `stall`
/// accepts new ones and never answers (a server that hangs, or a network
/// that drops everything) until `unblock`.
pub struct TcpProxy {
    port: u16,
    blocked: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
    held: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: &str) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let blocked = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let pipes: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
        let (gate, stall, registry, holding, upstream) = (
            blocked.clone(),
            stalled.clone(),
            pipes.clone(),
            held.clone(),
            upstream.to_string(),
        );
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if gate.load(Ordering::SeqCst) {
                    continue; // dropping the socket refuses the connection
                }
                if stall.load(Ordering::SeqCst) {
                    holding.lock().expect("held").push(client);
                    continue;
                }
                let upstream = upstream.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                registry.lock().expect("pipes").push(pipe);
            }
        });
        Ok(TcpProxy {
            port,
            blocked,
            stalled,
            pipes,
            held,
            accept,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` with its `host:port` replaced by this proxy's address.
    pub fn url_through(&self, url: &str) -> String {
        let host = url
            .split('@')
            .nth(1)
            .or_else(|| url.split("://").nth(1))
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        url.replacen(host, &format!("127.0.0.1:{}", self.port), 1)
    }

    pub fn cut(&self) {
        for pipe in self.pipes.lock().expect("pipes").drain(..) {
            pipe.abort();
        }
    }

    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        self.cut();
    }

    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
        self.cut();
    }

    /// Undoes `block` and `stall`; stalled connections are dropped.
    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
        self.held.lock().expect("held").clear();
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
