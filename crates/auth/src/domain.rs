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

pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        Err(format!("must be at least {MIN_PASSWORD} characters"))
    } else if password.len() > MAX_PASSWORD {
        Err(format!("must be at most {MAX_PASSWORD} bytes"))
    } else {
        Ok(())
    }
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
    field("password", check_password(password).map(|_| String::new()));
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
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD + 1)).is_err());
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
