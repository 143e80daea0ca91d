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

pub mod browser;
pub use bus::{amqp_url, TcpProxy, TestVhost};
pub use db::{postgres_url, TestDatabase};
pub use rig::{Backend, Heard, ServiceRig};
pub use smtp::SmtpSink;
pub use ticketer_config::address_of;

/// For tests that need a real server: when `TICKETER_REQUIRE_SERVERS` is
/// set (CI sets it) a missing URL fails the test instead of skipping it, so
/// a misconfigured CI cannot pass by running nothing.
pub fn skip_test(what: &str, variables: &str) {
    if std::env::var_os("TICKETER_REQUIRE_SERVERS").is_some() {
        panic!("{what} needs {variables}, and TICKETER_REQUIRE_SERVERS is set");
    }
    eprintln!("SKIPPED: {what} (set {variables})");
}
