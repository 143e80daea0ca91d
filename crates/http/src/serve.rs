//! The accept loop every service runs, with the bounds axum's own `serve`
//! does not have: a client that opens a connection and sends nothing, or
//! half a request, or goes quiet between requests, loses the connection
//! after the header-read timeout instead of holding it (and its task)
//! forever; a request not answered within the request timeout gets 503;
//! and at most `max_connections` are served at once, the rest waiting in
//! the listen backlog.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use axum::{
    extract::ConnectInfo,
    response::{IntoResponse, Response},
    Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use ticketer_config::HttpLimits;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::ApiError;

/// `answer`, or 503 problem+json when it (the request's body included)
/// was not done within `limit`. Dropping the handler rolls back whatever
/// transaction it had open. Applied here rather than as a layer, which
/// would nest and box every request's future once more.
async fn within<F: Future<Output = Response>>(limit: Duration, answer: F) -> Response {
    match tokio::time::timeout(limit, answer).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(limit_s = limit.as_secs_f64(), "request timed out");
            ApiError::Unavailable(format!(
                "the request was not answered within {} seconds",
                limit.as_secs()
            ))
            .into_response()
        }
    }
}

/// Serves `router` on `listener` until `stopped`, then lets the requests
/// in progress finish (for at most the request timeout). Each request
/// carries `ConnectInfo<L::Addr>`, and is answered 503 when not answered
/// within the request timeout.
pub async fn serve<L, F>(mut listener: L, router: Router, limits: HttpLimits, stopped: F)
where
    L: axum::serve::Listener,
    L::Addr: Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(true);
    let mut stopped = std::pin::pin!(stopped);
    loop {
        // A permit first: past the cap, new clients wait in the backlog
        // rather than being accepted and starved.
        let permit = tokio::select! {
            _ = &mut stopped => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (io, peer) = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let app = router.clone();
        let service = tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            let app = app.clone();
            async move {
                let answer = async {
                    app.oneshot(req.map(axum::body::Body::new))
                        .await
                        .unwrap_or_else(|e: Infallible| match e {})
                };
                Ok::<_, Infallible>(within(limits.request, answer).await)
            }
        });
        let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.request, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running at shutdown were cut off");
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::{get, post};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// Generous next to the one-second limits below: only a connection that
    /// is never closed fails.
    const PATIENCE: Duration = Duration::from_secs(10);

    async fn start(limits: HttpLimits) -> (SocketAddr, CancellationToken) {
        start_with(limits, Router::new()).await
    }

    async fn start_with(limits: HttpLimits, extra: Router) -> (SocketAddr, CancellationToken) {
        let app = extra
            .route("/hello", get(|| async { "hello" }))
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(serve(
            listener,
            app,
            limits,
            async move { stopped.cancelled().await },
        ));
        (addr, stop)
    }

    fn short() -> HttpLimits {
        HttpLimits {
            header_read: Duration::from_secs(1),
            request: Duration::from_secs(1),
            max_connections: 16,
        }
    }

    /// Reads until the server closes the connection; what it sent.
    async fn until_closed(conn: &mut TcpStream) -> String {
        let mut got = Vec::new();
        tokio::time::timeout(PATIENCE, conn.read_to_end(&mut got))
            .await
            .expect("the server kept the connection open")
            .ok();
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed() {
        let (addr, _stop) = start(short()).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        until_closed(&mut conn).await;
    }

    #[tokio::test]
    async fn half_a_request_is_not_waited_for() {
        let (addr, _stop) = start(short()).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut conn).await;
        assert!(!answer.contains("hello"), "{answer}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_its_answer() {
        let (addr, _stop) = start(short()).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut conn).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello"), "{answer}");
    }

    #[tokio::test]
    async fn a_body_that_never_ends_gets_503_problem_json() {
        let (addr, _stop) = start(short()).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
            .await
            .unwrap();
        let answer = until_closed(&mut conn).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("not answered within 1 seconds"), "{answer}");
    }

    #[tokio::test]
    async fn a_request_not_answered_in_time_gets_503() {
        let (addr, _stop) = start(short()).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut conn).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }

    /// Past the cap a client waits, unanswered, until a connection closes.
    #[tokio::test]
    async fn connections_past_the_cap_wait_their_turn() {
        let (addr, _stop) = start(HttpLimits {
            header_read: Duration::from_secs(30),
            request: Duration::from_secs(30),
            max_connections: 2,
        })
        .await;
        let first = TcpStream::connect(addr).await.unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        let mut third = TcpStream::connect(addr).await.unwrap();
        third
            .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
        assert!(early.is_err(), "answered past the cap");
        drop(first);
        let answer = until_closed(&mut third).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// A request in progress at shutdown is answered; new ones are not taken.
    #[tokio::test]
    async fn shutdown_lets_the_request_in_progress_finish() {
        let entered = Arc::new(tokio::sync::Notify::new());
        let inside = entered.clone();
        let working = Router::new().route(
            "/work",
            get(move || async move {
                inside.notify_one();
                tokio::time::sleep(Duration::from_millis(200)).await;
                "done"
            }),
        );
        let (addr, stop) = start_with(short(), working).await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /work HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        entered.notified().await;
        stop.cancel();
        let answer = until_closed(&mut conn).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        // And nobody new is let in.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = match TcpStream::connect(addr).await {
            Err(_) => true,
            Ok(mut late) => {
                let _ = late.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await;
                !until_closed(&mut late).await.contains("hello")
            }
        };
        assert!(refused, "served after shutdown");
    }
}
