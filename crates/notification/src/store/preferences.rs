//! What each user wants to be told through, and where: email (on unless
//! turned off, to the address auth told this service), SMS to a phone
//! number and push to a device token, each off until the user turns it on
//! and gives the address.

use ticketer_db::{time, AnyConnection, AnyRow, Db, DbError, Row};

/// The channels a user wants to be told through.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Email, on unless turned off.
    pub email: bool,
    /// SMS to `phone_number`; off unless turned on.
    #[serde(default)]
    pub sms: bool,
    /// E.164: `+`, then 8 to 15 digits. Required while `sms` is on.
    #[serde(default)]
    pub phone_number: Option<String>,
    /// Push to `push_token`; off unless turned on.
    #[serde(default)]
    pub push: bool,
    /// The device's token from its push service. Required while `push` is on.
    #[serde(default)]
    pub push_token: Option<String>,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            email: true,
            sms: false,
            phone_number: None,
            push: false,
            push_token: None,
        }
    }
}

impl Preferences {
    /// Each field that is wrong, with why: a channel turned on needs its
    /// address, and an address must look like one.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut wrong = Vec::new();
        match &self.phone_number {
            Some(p) if !is_e164(p) => wrong.push(("phone_number", "must be + and 8 to 15 digits (E.164)")),
            None if self.sms => wrong.push(("phone_number", "is required to turn SMS on")),
            _ => {}
        }
        match &self.push_token {
            Some(t) if t.is_empty() || t.len() > 4096 || !t.bytes().all(|b| b.is_ascii_graphic()) => {
                wrong.push(("push_token", "must be 1 to 4096 visible ASCII characters"))
            }
            None if self.push => wrong.push(("push_token", "is required to turn push on")),
            _ => {}
        }
        wrong
    }

    /// The preferences from a row with `wants_email`, `wants_sms`,
    /// `phone_number`, `wants_push` and `push_token` (all null when the user
    /// has no row: the defaults).
    pub(crate) fn from_row(r: &AnyRow) -> Result<Preferences, sqlx::Error> {
        let email: Option<i64> = r.try_get("wants_email")?;
        let Some(email) = email else {
            return Ok(Preferences::default());
        };
        Ok(Preferences {
            email: email != 0,
            sms: r.try_get::<Option<i64>, _>("wants_sms")?.unwrap_or(0) != 0,
            phone_number: r.try_get("phone_number")?,
            push: r.try_get::<Option<i64>, _>("wants_push")?.unwrap_or(0) != 0,
            push_token: r.try_get("push_token")?,
        })
    }
}

fn is_e164(p: &str) -> bool {
    let digits = p.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// The preference columns of table alias `p`, named as [`Preferences::from_row`] reads them.
pub(crate) const COLUMNS: &str =
    "p.email AS wants_email, p.sms AS wants_sms, p.phone_number, p.push AS wants_push, p.push_token";

/// The user's preferences, or the defaults.
pub async fn preferences(conn: &mut AnyConnection, user_id: &str) -> Result<Preferences, DbError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM preferences p WHERE p.user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(r) => Preferences::from_row(&r)?,
        None => Preferences::default(),
    })
}

pub async fn save_preferences(db: &Db, user_id: &str, p: &Preferences) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO preferences (user_id, email, sms, phone_number, push, push_token, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, sms = excluded.sms,
             phone_number = excluded.phone_number, push = excluded.push,
             push_token = excluded.push_token, updated_at = excluded.updated_at",
    )
    .bind(user_id)
    .bind(i64::from(p.email))
    .bind(i64::from(p.sms))
    .bind(p.phone_number.clone())
    .bind(i64::from(p.push))
    .bind(p.push_token.clone())
    .bind(time::now())
    .execute(db.pool())
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_needs_its_address_and_an_address_must_look_like_one() {
        let on = |sms: bool, phone: Option<&str>, push: bool, token: Option<&str>| Preferences {
            email: true,
            sms,
            phone_number: phone.map(String::from),
            push,
            push_token: token.map(String::from),
        };
        assert!(Preferences::default().problems().is_empty());
        assert!(on(true, Some("+4915112345678"), true, Some("dev-1"))
            .problems()
            .is_empty());
        let fields = |p: Preferences| p.problems().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(fields(on(true, None, false, None)), ["phone_number"]);
        assert_eq!(fields(on(false, None, true, None)), ["push_token"]);
        for bad in [
            "4915112345678",
            "+0151",
            "+49 151 123",
            "+1234567",
            "+1234567890123456",
            "+49151abc4567",
        ] {
            assert_eq!(
                fields(on(false, Some(bad), false, None)),
                ["phone_number"],
                "{bad}"
            );
        }
        for bad in ["", "has space", "tab\there"] {
            assert_eq!(
                fields(on(false, None, false, Some(bad))),
                ["push_token"],
                "{bad:?}"
            );
        }
    }
}
