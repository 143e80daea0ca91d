//! Auth rules with no I/O: what a valid registration is, and what a
//! presented refresh token may do.

use chrono::{DateTime, Utc};
use ticketer_http::{FieldError, Role};

pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;
const MAX_NAME: usize = 100;

/// A syntactically plausible address, lower-cased.
pub fn parse_email(raw: &str) -> Result<String, String> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && ticketer_http::forbidden_char(&email, false).is_none()
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if ok {
        Ok(email)
    } else {
        Err("must be a valid email address".into())
    }
}

/// Passwords attackers try first (from published lists of the most used
/// and most breached passwords), the ones long enough to pass the length
/// rule; compared ignoring case.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "password1234",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "12345678",
    "123456789",
    "1234567890",
    "12345678910",
    "87654321",
    "987654321",
    "11111111",
    "00000000",
    "88888888",
    "99999999",
    "12121212",
    "12341234",
    "11223344",
    "123123123",
    "123456789a",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "1qaz2wsx",
    "zaq12wsx",
    "qwertyuiop",
    "qwerty123",
    "qwerty1234",
    "qwer1234",
    "asdfghjkl",
    "asdf1234",
    "zxcvbnm1",
    "abcd1234",
    "abc12345",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "basketball",
    "trustno1",
    "superman",
    "starwars",
    "computer",
    "michelle",
    "jennifer",
    "whatever",
    "welcome1",
    "welcome123",
    "letmein1",
    "letmein123",
    "admin123",
    "administrator",
    "changeme",
    "default1",
    "football1",
    "master123",
    "monkey123",
    "dragon123",
    "shadow123",
    "sunshine1",
    "charlie1",
    "liverpool",
    "chocolate",
    "butterfly",
    "mercedes",
    "samsung1",
    "internet",
    "qwertyui",
    "1234qwer",
    "q1w2e3r4",
    "q1w2e3r4t5",
    "aa123456",
    "a1234567",
    "a12345678",
    "test1234",
    "testtest",
    "secret123",
    "ticketer",
    "ticketer1",
    "ticketer123",
];

/// A password by NIST SP 800-63B's rules: long enough, not one that is
/// tried first, not the account's own email, nothing unprintable.
pub fn check_password(password: &str, email: &str) -> Result<(), String> {
    let n = password.chars().count();
    let lower = password.to_lowercase();
    let email = email.trim().to_lowercase();
    let local = email.split('@').next().unwrap_or("");
    if n < MIN_PASSWORD {
        Err(format!("must be at least {MIN_PASSWORD} characters"))
    } else if password.len() > MAX_PASSWORD {
        Err(format!("must be at most {MAX_PASSWORD} bytes"))
    } else if ticketer_http::forbidden_char(password, false).is_some() {
        Err("must not contain control characters".into())
    } else if COMMON_PASSWORDS.contains(&lower.as_str()) || is_run(&lower) {
        Err("is too easy to guess: it is one of the passwords tried first".into())
    } else if lower == email || (!local.is_empty() && lower == local) {
        Err("must not be your email address".into())
    } else {
        Ok(())
    }
}

/// One character repeated, or a straight run up or down ("aaaaaaaa",
/// "12345678", "hgfedcba").
fn is_run(s: &str) -> bool {
    let cs: Vec<u32> = s.chars().map(|c| c as u32).collect();
    [0i64, 1, -1]
        .iter()
        .any(|step| cs.windows(2).all(|w| i64::from(w[1]) - i64::from(w[0]) == *step))
}

pub fn parse_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if ticketer_http::forbidden_char(name, false).is_some() {
        Err(ticketer_http::FORBIDDEN_CHAR.into())
    } else if name.is_empty() {
        Err("must not be empty".into())
    } else if name.chars().count() > MAX_NAME {
        Err(format!("must be at most {MAX_NAME} characters"))
    } else {
        Ok(name.to_string())
    }
}

/// Roles a user may pick at registration; ADMIN is granted, never chosen.
pub fn self_assignable(role: Role) -> Result<Role, String> {
    match role {
        Role::Customer | Role::Organizer => Ok(role),
        Role::Admin => Err("ADMIN cannot be self-assigned; choose CUSTOMER or ORGANIZER".into()),
    }
}

/// Validates a registration, reporting every bad field at once.
pub struct Registration {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
}

pub fn validate_registration(
    email: &str,
    password: &str,
    first_name: &str,
    last_name: &str,
    role: Option<Role>,
) -> Result<Registration, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut field = |name: &str, r: Result<String, String>| match r {
        Ok(v) => v,
        Err(m) => {
            errors.push(FieldError::new(name, m));
            String::new()
        }
    };
    let email = field("email", parse_email(email));
    field(
        "password",
        check_password(password, &email).map(|_| String::new()),
    );
    let first_name = field("first_name", parse_name(first_name));
    let last_name = field("last_name", parse_name(last_name));
    let role = match self_assignable(role.unwrap_or(Role::Customer)) {
        Ok(r) => r,
        Err(m) => {
            errors.push(FieldError::new("role", m));
            Role::Customer
        }
    };
    if errors.is_empty() {
        Ok(Registration {
            email,
            first_name,
            last_name,
            role,
        })
    } else {
        Err(errors)
    }
}

/// A stored refresh token as far as the rules care.
#[derive(Debug, Clone, Copy)]
pub struct RefreshState {
    pub expires_at: DateTime<Utc>,
    pub used: bool,
    pub revoked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Issue the next token of the family and mark this one used.
    Rotate,
    /// A used or revoked token came back: revoke the whole family.
    Reuse,
    Expired,
}

pub fn decide_refresh(token: RefreshState, now: DateTime<Utc>) -> RefreshDecision {
    if token.used || token.revoked {
        RefreshDecision::Reuse
    } else if token.expires_at <= now {
        RefreshDecision::Expired
    } else {
        RefreshDecision::Rotate
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn emails() {
        assert_eq!(parse_email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in [
            "", "ada", "ada@", "@x.io", "a@b", "a b@x.io", "a@@x.io", "a@x.", "a@.x",
        ] {
            assert!(parse_email(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn passwords() {
        let email = "ada@example.com";
        assert!(check_password("1234567", email).is_err());
        assert!(check_password("correct horse battery", email).is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD + 1), email).is_err());
        for guessable in [
            "12345678",
            "password",
            "PassWord1",
            "qwertyuiop",
            "        ",
            "aaaaaaaaaa",
            "abcdefgh",
            "98765432",
            "iloveyou",
            "\0\0\0\0\0\0\0\0",
            "pass\u{7}word-long",
            "ada@example.com",
            "ADA@example.com",
            "adaadaada@x.io",
        ] {
            let owner = if guessable.contains("adaada") {
                "adaadaada@x.io"
            } else {
                email
            };
            assert!(check_password(guessable, owner).is_err(), "{guessable:?}");
        }
    }

    #[test]
    fn registration_reports_every_bad_field() {
        let errs = validate_registration("nope", "short", " ", "Lovelace", Some(Role::Admin))
            .err()
            .unwrap();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["email", "password", "first_name", "role"]);
        let ok = validate_registration("a@x.io", "longenough", "Ada", "L", None)
            .ok()
            .unwrap();
        assert_eq!(ok.role, Role::Customer);
    }

    #[test]
    fn refresh_rules() {
        let now = Utc::now();
        let live = RefreshState {
            expires_at: now + Duration::hours(1),
            used: false,
            revoked: false,
        };
        assert_eq!(decide_refresh(live, now), RefreshDecision::Rotate);
        assert_eq!(
            decide_refresh(RefreshState { used: true, ..live }, now),
            RefreshDecision::Reuse
        );
        assert_eq!(
            decide_refresh(
                RefreshState {
                    revoked: true,
                    ..live
                },
                now
            ),
            RefreshDecision::Reuse
        );
        assert_eq!(
            decide_refresh(
                RefreshState {
                    expires_at: now,
                    ..live
                },
                now
            ),
            RefreshDecision::Expired
        );
        // Reuse wins over expiry: a stolen token is reported as such.
        let old = RefreshState {
            expires_at: now - Duration::hours(1),
            used: true,
            revoked: false,
        };
        assert_eq!(decide_refresh(old, now), RefreshDecision::Reuse);
    }
}
