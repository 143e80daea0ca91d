//! Reading a compact JWS access token (RFC 7515/7519) signed with Ed25519:
//! the checks jsonwebtoken used to make, with the signature checked by
//! ed25519-dalek. Every request that carries a token pays for one check,
//! and in a flash sale that was a third of the booking service's CPU with
//! ring's verifier; dalek's vectorised arithmetic takes about 60 % of its
//! time (docs/benchmarks.md, fifteenth session).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;

use super::{Claims, TokenError};

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// A token taken apart, nothing in it trusted yet.
pub(super) struct Unverified<'a> {
    pub(super) kid: String,
    /// `header.payload`, the bytes the signature covers.
    signed: &'a [u8],
    payload: &'a str,
    signature: Signature,
}

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Invalid(what))
}

/// Splits `token` and reads its header: only EdDSA with a key id is ours.
pub(super) fn parse(token: &str) -> Result<Unverified<'_>, TokenError> {
    let mut parts = token.split('.');
    let (Some(head), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid("not three dot-separated parts"));
    };
    let header: Header = serde_json::from_slice(&decode(head, "header is not base64url")?)
        .map_err(|_| TokenError::Invalid("header is not a JSON object"))?;
    // Anything else ("none", HS256 with the public key as secret, ...) is
    // an old trick, never a token of ours.
    if header.alg != "EdDSA" {
        return Err(TokenError::Invalid("algorithm is not EdDSA"));
    }
    let kid = header.kid.ok_or(TokenError::NoKeyId)?;
    let signature = Signature::from_slice(&decode(signature, "signature is not base64url")?)
        .map_err(|_| TokenError::Invalid("signature is not 64 bytes"))?;
    Ok(Unverified {
        kid,
        signed: &token.as_bytes()[..head.len() + 1 + payload.len()],
        payload,
        signature,
    })
}

impl Unverified<'_> {
    /// The claims, if `key` signed them, `issuer` issued them and `now`
    /// (Unix seconds) is inside their validity. No leeway: expired means
    /// expired (the services' clocks are the auth service's clock, NTP).
    pub(super) fn check(&self, key: &VerifyingKey, issuer: &str, now: i64) -> Result<Claims, TokenError> {
        // Strict: no small-order keys or malleable signatures either.
        key.verify_strict(self.signed, &self.signature)
            .map_err(|_| TokenError::Invalid("signature does not match"))?;
        self.claims(issuer, now)
    }

    /// What the token claims, from `issuer` and valid at `now`, taken on
    /// its word: the signature is not checked.
    pub(super) fn claims(&self, issuer: &str, now: i64) -> Result<Claims, TokenError> {
        let claims: Claims = serde_json::from_slice(&decode(self.payload, "claims are not base64url")?)
            .map_err(|_| TokenError::Invalid("claims are missing or malformed"))?;
        if claims.iss != issuer {
            return Err(TokenError::Invalid("issued by someone else"));
        }
        current(&claims, now)?;
        Ok(claims)
    }
}

/// Whether claims already checked are valid at `now`.
pub(super) fn current(claims: &Claims, now: i64) -> Result<(), TokenError> {
    // RFC 7519 4.1.4: valid only while now is before exp.
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// The public key in a JWK's `x` (base64url of the 32 key bytes).
pub(super) fn okp_key(x: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(x).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// A token of `claims` signed with `key` (key id "k1"), for tests.
#[cfg(test)]
pub(super) fn signed(key: &ed25519_dalek::SigningKey, claims: &serde_json::Value) -> String {
    signed_with(
        key,
        &serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"}),
        claims,
    )
}

/// A token of `claims` under `header`, signed with `key`, for tests.
#[cfg(test)]
fn signed_with(
    key: &ed25519_dalek::SigningKey,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    use ed25519_dalek::Signer;
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()).to_bytes())
    )
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use serde_json::{json, Value};

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn claims() -> Value {
        json!({"sub": "6b4f9d2e-1111-4a4a-9d9d-000000000001", "email": "a@x.io", "roles": ["CUSTOMER"],
               "iat": NOW - 10, "exp": NOW + 60, "iss": "ticketer-auth"})
    }

    fn check(token: &str) -> Result<Claims, TokenError> {
        parse(token)?.check(&key(1).verifying_key(), "ticketer-auth", NOW)
    }

    fn refused(token: &str) -> String {
        match check(token) {
            Ok(c) => panic!("accepted {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_well_signed_token_gives_its_claims() {
        let c = check(&signed(&key(1), &claims())).unwrap();
        assert_eq!(c.sub, "6b4f9d2e-1111-4a4a-9d9d-000000000001");
        assert_eq!(c.roles, vec![crate::Role::Customer]);
        assert_eq!(parse(&signed(&key(1), &claims())).unwrap().kid, "k1");
    }

    #[test]
    fn another_key_or_a_changed_part_is_refused() {
        assert!(refused(&signed(&key(2), &claims())).contains("signature"));
        let token = signed(&key(1), &claims());
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut admin = claims();
        admin["roles"] = json!(["ADMIN"]);
        parts[1] = b64(admin.to_string().as_bytes());
        assert!(refused(&parts.join(".")).contains("signature"));
        // A header changed after signing (another kid) breaks it too.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[0] = b64(json!({"alg": "EdDSA", "kid": "k2"}).to_string().as_bytes());
        assert!(refused(&parts.join(".")).contains("signature"));
    }

    #[test]
    fn other_algorithms_and_missing_key_ids_are_refused_before_any_key_is_used() {
        for alg in ["none", "HS256", "RS256", "eddsa", ""] {
            let token = signed_with(&key(1), &json!({"alg": alg, "kid": "k1"}), &claims());
            assert!(matches!(parse(&token), Err(TokenError::Invalid(_))), "{alg}");
        }
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(claims().to_string().as_bytes())
        );
        assert!(parse(&unsigned).is_err());
        let no_kid = signed_with(&key(1), &json!({"alg": "EdDSA"}), &claims());
        assert!(matches!(parse(&no_kid), Err(TokenError::NoKeyId)));
    }

    #[test]
    fn malformed_tokens_are_invalid_never_a_panic() {
        let good = signed(&key(1), &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            "...".into(),
            "a.b".into(),
            format!("{good}.extra"),
            format!("{}.{}", parts[0], parts[1]),
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..20]),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("!!.{}.{}", parts[1], parts[2]),
            format!("{}.{}.{}", b64(b"[1,2]"), parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], "%%%", parts[2]),
            "é.é.é".into(),
        ];
        for t in cases {
            assert!(matches!(check(&t), Err(TokenError::Invalid(_))), "{t:?}");
        }
    }

    #[test]
    fn claims_must_be_complete_and_from_our_issuer() {
        for missing in ["sub", "exp", "iss", "email", "roles"] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(missing);
            assert!(refused(&signed(&key(1), &c)).contains("claims"), "{missing}");
        }
        let mut c = claims();
        c["iss"] = json!("someone-else");
        assert!(refused(&signed(&key(1), &c)).contains("someone else"));
        let mut c = claims();
        c["roles"] = json!(["emperor"]);
        assert!(refused(&signed(&key(1), &c)).contains("claims"));
    }

    #[test]
    fn a_token_is_good_from_nbf_until_just_before_exp() {
        let at = |exp: i64, nbf: Option<i64>| {
            let mut c = claims();
            c["exp"] = json!(exp);
            if let Some(nbf) = nbf {
                c["nbf"] = json!(nbf);
            }
            check(&signed(&key(1), &c))
        };
        assert!(at(NOW + 1, None).is_ok());
        assert!(matches!(at(NOW, None), Err(TokenError::Expired)));
        assert!(matches!(at(NOW - 3600, None), Err(TokenError::Expired)));
        assert!(at(NOW + 60, Some(NOW)).is_ok());
        assert!(matches!(
            at(NOW + 60, Some(NOW + 1)),
            Err(TokenError::NotYetValid)
        ));
    }

    #[test]
    fn claims_taken_on_their_word_are_still_read_and_dated() {
        // Signed by another key: the claims read, the check refuses.
        let token = signed(&key(2), &claims());
        let unverified = parse(&token).unwrap();
        assert_eq!(unverified.claims("ticketer-auth", NOW).unwrap().email, "a@x.io");
        assert!(unverified
            .check(&key(1).verifying_key(), "ticketer-auth", NOW)
            .is_err());
        assert!(matches!(
            unverified.claims("ticketer-auth", NOW + 60),
            Err(TokenError::Expired)
        ));
        assert!(unverified.claims("someone-else", NOW).is_err());
    }

    #[test]
    fn jwk_keys_are_32_bytes_of_a_curve_point() {
        let k = key(3).verifying_key();
        assert_eq!(okp_key(&b64(k.as_bytes())), Some(k));
        assert_eq!(okp_key(&b64(&[1; 31])), None);
        assert_eq!(okp_key("not base64!"), None);
    }
}
