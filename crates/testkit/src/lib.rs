//! What tests share, kept out of the production crates: throwaway
//! PostgreSQL databases and SQLite files ([`TestDatabase`]), RabbitMQ
//! vhosts ([`TestVhost`]), a TCP proxy that cuts, blocks or stalls
//! connections on demand ([`TcpProxy`]), one service alone on either
//! backend with the test in its neighbours' place ([`ServiceRig`]), and
//! [`skip_test`] for a test whose server is absent.

mod bus;
mod db;
mod rig;
mod smtp;
mod tls;

pub mod browser;
pub use bus::{amqp_url, TcpProxy, TestVhost};
pub use db::{postgres_url, TestDatabase};
pub use rig::{Backend, Heard, ServiceRig};
pub use smtp::SmtpSink;
pub use ticketer_config::address_of;
pub use tls::{tls_proxy, TestCertificates};

/// For tests that need a real server: when `TICKETER_REQUIRE_SERVERS` is
/// set (CI sets it) a missing URL fails the test instead of skipping it, so
/// a misconfigured CI cannot pass by running nothing.
pub fn skip_test(what: &str, variables: &str) {
    if std::env::var_os("TICKETER_REQUIRE_SERVERS").is_some() {
        panic!("{what} needs {variables}, and TICKETER_REQUIRE_SERVERS is set");
    }
    eprintln!("SKIPPED: {what} (set {variables})");
}

/// The Redis tests may use, from `TICKETER_TEST_REDIS_URL`.
pub fn redis_url() -> Option<String> {
    std::env::var("TICKETER_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
}

/// A port for a child process to listen on, free when asked. Taken below
/// the kernel's ephemeral range (32768 and up), which a port from bind(0)
/// is in: there any test's outgoing connection could take it as its local
/// port before the child binds it (seen once, as a 404 from a stranger).
/// Random within the range, so that test processes side by side rarely
/// pick the same one.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
