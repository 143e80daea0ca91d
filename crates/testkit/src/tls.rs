//! TLS for tests of clients that must speak it to their servers (rediss://,
//! amqps://, HTTPS): a throwaway certificate authority, a certificate for
//! localhost it signed, and a proxy that ends TLS with that certificate in
//! front of a plain server, since none of our servers runs TLS here.

use std::path::Path;

use tokio::net::{TcpListener, TcpStream};

/// A CA and a certificate for `localhost` signed by it, as PEM files that
/// live as long as this value.
pub struct TestCertificates {
    _dir: tempfile::TempDir,
    /// The CA's certificate: what a client must trust.
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl TestCertificates {
    /// Made with the `openssl` command (P-256 keys, valid one day).
    pub fn for_localhost() -> TestCertificates {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = |name: &str| dir.path().join(name).to_str().expect("UTF-8 path").to_string();
        let (ca_key, ca, key, csr, cert, ext) = (
            path("ca.key"),
            path("ca.pem"),
            path("key.pem"),
            path("req.csr"),
            path("cert.pem"),
            path("ext.cnf"),
        );
        std::fs::write(&ext, "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
            .expect("extensions");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: Vec<Vec<&str>> = vec![
            [
                &["req", "-x509"],
                &ec[..],
                &[
                    "-days",
                    "1",
                    "-subj",
                    "/CN=Test CA",
                    "-keyout",
                    &ca_key,
                    "-out",
                    &ca,
                ],
            ]
            .concat(),
            [
                &["req"],
                &ec[..],
                &["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr],
            ]
            .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        ];
        for args in steps {
            let made = std::process::Command::new("openssl")
                .args(&args)
                .output()
                .expect("openssl");
            assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        }
        TestCertificates {
            _dir: dir,
            ca,
            cert,
            key,
        }
    }
}

/// Listens on a free port of 127.0.0.1, ends TLS there with `certs`'
/// certificate and forwards each connection to the plain `upstream`
/// (`host:port`); returns the port. It lives as long as the runtime.
pub async fn tls_proxy(certs: &TestCertificates, upstream: &str) -> u16 {
    let config = ticketer_http::tls::server_config(Path::new(&certs.cert), Path::new(&certs.key))
        .expect("the test certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let port = listener.local_addr().expect("bound").port();
    let upstream = upstream.to_string();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}
