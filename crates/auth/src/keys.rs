//! The Ed25519 signing key: loaded from the environment or a file in
//! production, generated once into the data dir when embedded. Other
//! services only ever see the public half (JWKS).

use std::path::Path;

use base64::{engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use serde_json::{json, Value};
use ticketer_http::{Claims, TokenVerifier};

const PEM_LABEL: &str = "PRIVATE KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key is not a PKCS#8 Ed25519 key in PEM form")]
    Malformed,
    #[error("signing key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public: [u8; 32],
}

impl SigningKey {
    pub fn generate_pem() -> String {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("system randomness");
        to_pem(der.as_ref())
    }

    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(body).map_err(|_| KeyError::Malformed)?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| KeyError::Malformed)?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| KeyError::Malformed)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        let kid = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(SigningKey {
            kid,
            encoding: EncodingKey::from_ed_der(&der),
            public,
        })
    }

    /// Reads the PEM at `path`, creating it (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            if let Some(dir) = path.parent() {
                ticketer_db::private_dir(dir).map_err(io)?;
            }
            write_private(path, &Self::generate_pem()).map_err(io)?;
            tracing::info!(path = %path.display(), "generated a new token signing key");
        }
        Self::from_pem(&std::fs::read_to_string(path).map_err(io)?)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("Ed25519 signing cannot fail")
    }

    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }]})
    }

    /// A verifier holding this key's public half, for in-process services.
    pub fn verifier(&self, issuer: &str) -> TokenVerifier {
        TokenVerifier::with_keys(issuer, vec![(self.kid.clone(), self.public)])
    }
}

fn to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {PEM_LABEL}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    pem
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: uuid::Uuid::new_v4().to_string(),
            email: "a@x.io".into(),
            roles: vec![ticketer_http::Role::Customer],
            iat: now,
            exp: now + exp_offset,
            iss: "ticketer-auth".into(),
            nbf: None,
        }
    }

    #[tokio::test]
    async fn signed_tokens_verify_and_tampering_does_not() {
        let key = SigningKey::from_pem(&SigningKey::generate_pem()).unwrap();
        let verifier = key.verifier("ticketer-auth");
        let c = claims(60);
        let token = key.sign(&c);
        assert_eq!(verifier.verify(&token).await.unwrap(), c);

        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut payload = c.clone();
        payload.roles = vec![ticketer_http::Role::Admin];
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        assert!(verifier.verify(&parts.join(".")).await.is_err());
    }

    #[tokio::test]
    async fn expired_and_foreign_tokens_fail() {
        let key = SigningKey::from_pem(&SigningKey::generate_pem()).unwrap();
        assert!(key
            .verifier("ticketer-auth")
            .verify(&key.sign(&claims(-1)))
            .await
            .is_err());
        assert!(key
            .verifier("someone-else")
            .verify(&key.sign(&claims(60)))
            .await
            .is_err());
        let other = SigningKey::from_pem(&SigningKey::generate_pem()).unwrap();
        assert!(other
            .verifier("ticketer-auth")
            .verify(&key.sign(&claims(60)))
            .await
            .is_err());
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let a = SigningKey::load_or_create(&path).unwrap();
        let b = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").is_err()
        );
    }
}
