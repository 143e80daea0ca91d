//! Timestamps are stored as fixed-width RFC 3339 UTC text, which sorts and
//! compares correctly as text in both dialects.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

pub fn format(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn now() -> String {
    format(Utc::now())
}

/// The stored form of the moment `age` ago (the epoch's start when `age`
/// reaches beyond it), for "older than" comparisons.
pub fn ago(age: std::time::Duration) -> String {
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    format(
        Utc::now()
            .checked_sub_signed(age)
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    )
}

/// The stored form of the moment `wait` from now, for deadlines and
/// leases; at most the last moment of year 9999, the latest that keeps
/// the text's fixed width (and so its order).
pub fn from_now(wait: std::time::Duration) -> String {
    let last = Utc
        .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .expect("a valid date");
    let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
    format(Utc::now().checked_add_signed(wait).map_or(last, |t| t.min(last)))
}

/// Parses a stored timestamp; stored values are always well formed, so a
/// failure is a corrupt row and reported as a decode error.
pub fn parse(s: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    #[test]
    fn deadlines_and_cutoffs_sit_either_side_of_now() {
        let second = std::time::Duration::from_secs(1);
        let (before, now, after) = (ago(second), super::now(), from_now(second));
        assert!(before < now && now < after, "{before} {now} {after}");
        // Beyond the calendar: saturated, never a panic.
        assert!(ago(std::time::Duration::MAX) < before);
        assert!(from_now(std::time::Duration::MAX) > after);
    }

    #[test]
    fn text_order_is_time_order() {
        let a = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let b = a + Duration::microseconds(1);
        let c = a + Duration::days(400);
        assert!(format(a) < format(b) && format(b) < format(c));
        assert_eq!(parse(&format(b)).unwrap(), b);
        assert_eq!(format(a).len(), format(c).len());
    }
}
