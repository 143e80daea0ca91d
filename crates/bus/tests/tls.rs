//! `amqps://`: the bus speaks TLS to RabbitMQ and checks the server's
//! certificate against the trusted roots (the OS's, or the file named by
//! `SSL_CERT_FILE`, which is how this test trusts its throwaway CA; nextest
//! runs each test in its own process, so the variable is this test's). No
//! RabbitMQ here serves TLS, so a TLS proxy stands in front of the plain
//! one. Ignored unless run with `--run-ignored`, as ./scripts/test does when
//! `TICKETER_TEST_AMQP_URL` is set.

use ticketer_bus::Bus;
use ticketer_testkit::{tls_proxy, TestCertificates, TestVhost};

#[tokio::test]
#[ignore = "needs TICKETER_TEST_AMQP_URL"]
async fn amqps_is_spoken_and_the_server_certificate_checked() {
    let Some(url) = ticketer_testkit::amqp_url() else {
        ticketer_testkit::skip_test("amqps test", "TICKETER_TEST_AMQP_URL");
        return;
    };
    let vhost = TestVhost::create(&url).expect("vhost");
    let certs = TestCertificates::for_localhost();
    let host = ticketer_testkit::address_of(&url);
    let port = tls_proxy(&certs, &host).await;
    let over_tls =
        vhost
            .url
            .replacen("amqp://", "amqps://", 1)
            .replacen(&host, &format!("localhost:{port}"), 1);

    std::env::set_var("SSL_CERT_FILE", &certs.ca);
    // Connecting declares every exchange and queue of the topology: a
    // whole AMQP conversation over TLS.
    Bus::connect(Some(&over_tls)).await.expect("amqps");

    // A certificate no trusted authority signed is refused.
    let stranger = TestCertificates::for_localhost();
    std::env::set_var("SSL_CERT_FILE", &stranger.ca);
    assert!(
        Bus::connect(Some(&over_tls)).await.is_err(),
        "a server certificate from an unknown authority was accepted"
    );
}
