//! A bad network around a service, made in user space: each saga party
//! (booking, ticket, payment) reaches PostgreSQL and RabbitMQ, and the
//! gateway reaches it, through proxies of the runner's that can add
//! latency, lose packets or cut the link. This machine's kernel has no
//! `netem` queueing discipline, so `tc netem` in a network namespace cannot
//! be used; the proxy shows the services what such a network shows an
//! application: late bytes, stalls while TCP retransmits, and connections
//! that die or cannot be made.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng;
use ticketer_config::Service;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedReadHalf, tcp::OwnedWriteHalf, TcpListener, TcpStream},
    task::JoinHandle,
};

/// What the link does to the bytes crossing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Clear,
    /// Every chunk, each way, waits this long.
    Slow(Duration),
    /// One chunk in `one_in` waits a retransmission timeout (`rto`), as a
    /// lost segment does under TCP.
    Lossy {
        one_in: u32,
        rto: Duration,
    },
    /// Open connections cut, new ones refused.
    Cut,
}

/// One proxied link from a service to a server.
pub struct Link {
    port: u16,
    condition: Arc<Mutex<Condition>>,
    open: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Link {
    pub async fn start(upstream: String) -> std::io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let condition = Arc::new(Mutex::new(Condition::Clear));
        let open: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (cond, conns) = (condition.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *cond.lock().expect("condition") == Condition::Cut {
                    continue; // dropped: the connection is refused
                }
                let (cond, upstream) = (cond.clone(), upstream.clone());
                let conn = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    // Both ways in this task, so that aborting it cuts
                    // both; either way ending ends the connection (the
                    // protocols carried here never half-close).
                    tokio::select! {
                        _ = pump(cr, sw, cond.clone()) => {}
                        _ = pump(sr, cw, cond) => {}
                    }
                });
                let mut conns = conns.lock().expect("connections");
                conns.retain(|c| !c.is_finished());
                conns.push(conn);
            }
        });
        Ok(Link {
            port,
            condition,
            open,
            accept,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set(&self, condition: Condition) {
        *self.condition.lock().expect("condition") = condition;
        if condition == Condition::Cut {
            for conn in self.open.lock().expect("connections").drain(..) {
                conn.abort();
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        for conn in self.open.lock().expect("connections").drain(..) {
            conn.abort();
        }
    }
}

/// Copies one direction, holding chunks back as the condition says.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, condition: Arc<Mutex<Condition>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = *condition.lock().expect("condition");
        match now {
            Condition::Clear => {}
            Condition::Slow(d) => tokio::time::sleep(d).await,
            Condition::Lossy { one_in, rto } => {
                if rand::thread_rng().gen_range(0..one_in.max(1)) == 0 {
                    tokio::time::sleep(rto).await;
                }
            }
            Condition::Cut => break,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Each hurt service's links: to PostgreSQL, to RabbitMQ, and from the
/// gateway to it. A partition cuts all three, as a host cut off would be.
pub struct Network {
    links: HashMap<Service, [Link; 3]>,
}

/// The proxy ports of one service's links.
pub struct Ports {
    pub postgres: u16,
    pub rabbitmq: u16,
    /// Where the gateway reaches the service.
    pub from_gateway: u16,
}

impl Network {
    /// `postgres` and `rabbitmq` are the servers' `host:port`; the services
    /// listen on their contract ports on this host.
    pub async fn start(postgres: &str, rabbitmq: &str) -> std::io::Result<Network> {
        let mut links = HashMap::new();
        for svc in super::nemesis::SAGA_PARTIES {
            let db = Link::start(postgres.to_string()).await?;
            let broker = Link::start(rabbitmq.to_string()).await?;
            let inbound = Link::start(format!("127.0.0.1:{}", svc.default_port())).await?;
            links.insert(svc, [db, broker, inbound]);
        }
        Ok(Network { links })
    }

    pub fn ports(&self, svc: Service) -> Option<Ports> {
        self.links.get(&svc).map(|[db, broker, inbound]| Ports {
            postgres: db.port(),
            rabbitmq: broker.port(),
            from_gateway: inbound.port(),
        })
    }

    pub fn set(&self, svc: Service, condition: Condition) {
        if let Some(links) = self.links.get(&svc) {
            for link in links {
                link.set(condition);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server, and a client through a link to it.
    async fn echo_through() -> (Link, u16) {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = server.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let link = Link::start(addr.to_string()).await.unwrap();
        let port = link.port();
        (link, port)
    }

    async fn round_trip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
        c.write_all(b"ping").await?;
        let mut got = vec![0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .map_err(|_| std::io::Error::other("no answer"))??;
        Ok(got)
    }

    #[tokio::test]
    async fn a_clear_or_slow_link_carries_bytes_a_cut_one_refuses_until_mended() {
        let (link, port) = echo_through().await;
        assert_eq!(round_trip(port).await.unwrap(), b"ping");
        link.set(Condition::Slow(Duration::from_millis(20)));
        assert_eq!(round_trip(port).await.unwrap(), b"ping");
        link.set(Condition::Lossy {
            one_in: 2,
            rto: Duration::from_millis(10),
        });
        assert_eq!(round_trip(port).await.unwrap(), b"ping");

        // An open connection dies with the cut; new ones get nothing.
        let mut open = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        open.read_exact(&mut got).await.unwrap();
        link.set(Condition::Cut);
        let mut rest = Vec::new();
        let after_cut = tokio::time::timeout(Duration::from_secs(5), open.read_to_end(&mut rest)).await;
        assert!(matches!(after_cut, Ok(Ok(0)) | Ok(Err(_))), "{after_cut:?}");
        assert!(round_trip(port).await.is_err());

        link.set(Condition::Clear);
        assert_eq!(round_trip(port).await.unwrap(), b"ping");
    }
}
