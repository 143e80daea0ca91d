//! Money in integer minor units. The wire takes `25`, `25.5` or `"25.50"`
//! and always answers `"25.50"`; no floating point is ever used for sums.

use std::{fmt, str::FromStr};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

/// Amounts above this (ten billion) are refused as input.
const MAX_MINOR: i64 = 1_000_000_000_000;

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn from_minor(minor: i64) -> Self {
        Money(minor)
    }

    pub fn minor(self) -> i64 {
        self.0
    }

    pub fn checked_mul(self, n: i64) -> Option<Money> {
        self.0.checked_mul(n).map(Money)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl FromStr for Money {
    type Err = String;

    /// Parses a non-negative decimal with at most two fraction digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (!frac.is_empty() && !digits(frac)) || (s.contains('.') && frac.is_empty()) {
            return Err(format!("`{s}` is not a non-negative amount like 25.50"));
        }
        if frac.len() > 2 {
            return Err("at most 2 decimal places".into());
        }
        let whole: i64 = whole.parse().map_err(|_| "amount too large".to_string())?;
        let frac: i64 = format!("{frac:0<2}").parse().expect("two digits");
        let minor = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac))
            .filter(|m| *m <= MAX_MINOR)
            .ok_or_else(|| "amount too large".to_string())?;
        Ok(Money(minor))
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
            Float(f64),
        }
        let text =
            match Raw::deserialize(d).map_err(|_| de::Error::custom("expected an amount like 25.50"))? {
                Raw::Text(s) => s,
                Raw::Int(i) => i.to_string(),
                // The shortest representation that round-trips is the literal
                // the client wrote, for any amount with two decimals.
                Raw::Float(f) if f.is_finite() && f >= 0.0 => f.to_string(),
                Raw::Float(_) => return Err(de::Error::custom("amount must be zero or more")),
            };
        text.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Money, String> {
        serde_json::from_str::<Money>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_numbers_and_strings() {
        assert_eq!(parse("25").unwrap().minor(), 2500);
        assert_eq!(parse("25.5").unwrap().minor(), 2550);
        assert_eq!(parse("\"25.50\"").unwrap().minor(), 2550);
        assert_eq!(parse("19.99").unwrap().minor(), 1999);
        assert_eq!(parse("0.07").unwrap().minor(), 7);
        assert_eq!(parse("0").unwrap(), Money::ZERO);
    }

    #[test]
    fn refuses_bad_amounts() {
        for bad in [
            "-1", "\"-1\"", "1.234", "\"1.\"", "\"abc\"", "\"\"", "true", "1e30", "\"1,50\"",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn always_answers_two_decimals() {
        assert_eq!(
            serde_json::to_string(&Money::from_minor(2550)).unwrap(),
            "\"25.50\""
        );
        assert_eq!(Money::from_minor(7).to_string(), "0.07");
        assert_eq!(Money::from_minor(-150).to_string(), "-1.50");
    }
}
