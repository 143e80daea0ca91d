//! Event rules with no I/O: what a valid event is and how its status moves.

use chrono::{NaiveDate, NaiveTime};
use serde::Deserialize;
pub use ticketer_contract::EventStatus;
use ticketer_contract::Money;
use ticketer_http::FieldError;
use utoipa::ToSchema;

pub const MAX_CAPACITY: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Edit,
    Publish,
    Cancel,
    Complete,
}

/// DRAFT -> PUBLISHED -> (CANCELLED | COMPLETED); DRAFT -> CANCELLED.
/// Drafts and published events may be edited; finished ones may not.
pub fn transition(from: EventStatus, action: Action) -> Result<EventStatus, String> {
    use Action::*;
    use EventStatus::*;
    match (from, action) {
        (Draft | Published, Edit) => Ok(from),
        (Draft, Publish) => Ok(Published),
        (Draft | Published, Cancel) => Ok(Cancelled),
        (Published, Complete) => Ok(Completed),
        (from, action) => Err(format!("cannot {} an event that is {from}", verb(action))),
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Edit => "edit",
        Action::Publish => "publish",
        Action::Cancel => "cancel",
        Action::Complete => "complete",
    }
}

/// The editable part of an event, validated as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDetails {
    pub event_name: String,
    pub description: String,
    pub category: String,
    pub location: String,
    pub event_date: NaiveDate,
    pub start_time: NaiveTime,
    pub end_time: NaiveTime,
    pub ticket_capacity: i64,
    pub ticket_price: Money,
    pub currency: String,
}

/// An event as a client submits it. Dates and times stay text until
/// [`validate`], so each bad field can be named in the answer.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RawDetails {
    pub event_name: String,
    pub description: String,
    pub category: String,
    pub location: String,
    /// YYYY-MM-DD, today or later.
    pub event_date: String,
    /// HH:MM
    pub start_time: String,
    /// HH:MM, after start_time.
    pub end_time: String,
    pub ticket_capacity: i64,
    #[schema(value_type = String, example = "25.50")]
    pub ticket_price: Money,
    /// ISO 4217.
    #[serde(default = "default_currency")]
    #[schema(default = "EUR")]
    pub currency: String,
}

fn default_currency() -> String {
    "EUR".into()
}

/// A partial update; absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Patch {
    pub event_name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub location: Option<String>,
    pub event_date: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub ticket_capacity: Option<i64>,
    #[schema(value_type = Option<String>, example = "30.00")]
    pub ticket_price: Option<Money>,
    pub currency: Option<String>,
}

impl Patch {
    /// `current` with this patch applied, as raw input to validate again.
    pub fn apply_to(self, current: &EventDetails) -> RawDetails {
        let d = current;
        RawDetails {
            event_name: self.event_name.unwrap_or_else(|| d.event_name.clone()),
            description: self.description.unwrap_or_else(|| d.description.clone()),
            category: self.category.unwrap_or_else(|| d.category.clone()),
            location: self.location.unwrap_or_else(|| d.location.clone()),
            event_date: self
                .event_date
                .unwrap_or_else(|| d.event_date.format("%Y-%m-%d").to_string()),
            start_time: self
                .start_time
                .unwrap_or_else(|| d.start_time.format("%H:%M").to_string()),
            end_time: self
                .end_time
                .unwrap_or_else(|| d.end_time.format("%H:%M").to_string()),
            ticket_capacity: self.ticket_capacity.unwrap_or(d.ticket_capacity),
            ticket_price: self.ticket_price.unwrap_or(d.ticket_price),
            currency: self.currency.unwrap_or_else(|| d.currency.clone()),
        }
    }
}

fn text(errors: &mut Vec<FieldError>, field: &str, value: &str, max: usize, required: bool) -> String {
    let v = value.trim();
    // Only the description may run over several lines.
    let multiline = field == "description";
    if ticketer_http::forbidden_char(v, multiline).is_some() {
        errors.push(FieldError::new(field, ticketer_http::FORBIDDEN_CHAR));
    } else if required && v.is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if v.chars().count() > max {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    v.to_string()
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

pub fn parse_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()
}

/// Validates every field. `date_must_be_future` is off when an edit leaves
/// the date alone, so an event can still be edited on its day.
pub fn validate(
    raw: &RawDetails,
    today: NaiveDate,
    date_must_be_future: bool,
) -> Result<EventDetails, Vec<FieldError>> {
    let mut errors = Vec::new();
    let event_name = text(&mut errors, "event_name", &raw.event_name, 200, true);
    let description = text(&mut errors, "description", &raw.description, 5000, false);
    let category = text(&mut errors, "category", &raw.category, 100, true);
    let location = text(&mut errors, "location", &raw.location, 200, true);
    let event_date = parse_date(&raw.event_date);
    match event_date {
        None => errors.push(FieldError::new("event_date", "must be a date like 2026-12-31")),
        Some(d) if date_must_be_future && d < today => {
            errors.push(FieldError::new("event_date", "must not be in the past"))
        }
        _ => {}
    }
    let start_time = parse_time(&raw.start_time);
    if start_time.is_none() {
        errors.push(FieldError::new("start_time", "must be a time like 19:30"));
    }
    let end_time = parse_time(&raw.end_time);
    match (start_time, end_time) {
        (_, None) => errors.push(FieldError::new("end_time", "must be a time like 22:00")),
        (Some(s), Some(e)) if e <= s => errors.push(FieldError::new("end_time", "must be after start_time")),
        _ => {}
    }
    if !(1..=MAX_CAPACITY).contains(&raw.ticket_capacity) {
        errors.push(FieldError::new(
            "ticket_capacity",
            format!("must be between 1 and {MAX_CAPACITY}"),
        ));
    }
    if raw.ticket_price.minor() < 0 {
        errors.push(FieldError::new("ticket_price", "must be zero or more"));
    }
    let currency = raw.currency.trim().to_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.push(FieldError::new("currency", "must be an ISO 4217 code like EUR"));
    }
    match (errors.is_empty(), event_date, start_time, end_time) {
        (true, Some(event_date), Some(start_time), Some(end_time)) => Ok(EventDetails {
            event_name,
            description,
            category,
            location,
            event_date,
            start_time,
            end_time,
            ticket_capacity: raw.ticket_capacity,
            ticket_price: raw.ticket_price,
            currency,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATUSES: [EventStatus; 4] = [
        EventStatus::Draft,
        EventStatus::Published,
        EventStatus::Cancelled,
        EventStatus::Completed,
    ];
    const ALL_ACTIONS: [Action; 4] = [Action::Edit, Action::Publish, Action::Cancel, Action::Complete];

    #[test]
    fn every_transition() {
        use Action::*;
        use EventStatus::*;
        let allowed = [
            (Draft, Edit, Draft),
            (Published, Edit, Published),
            (Draft, Publish, Published),
            (Draft, Cancel, Cancelled),
            (Published, Cancel, Cancelled),
            (Published, Complete, Completed),
        ];
        for from in ALL_STATUSES {
            for action in ALL_ACTIONS {
                let expected = allowed
                    .iter()
                    .find(|(f, a, _)| *f == from && *a == action)
                    .map(|(_, _, to)| *to);
                assert_eq!(transition(from, action).ok(), expected, "{from} {action:?}");
            }
        }
    }

    #[test]
    fn statuses_round_trip() {
        for st in ALL_STATUSES {
            assert_eq!(EventStatus::parse(st.as_str()), Some(st));
        }
    }

    fn raw() -> RawDetails {
        RawDetails {
            event_name: "RustConf".into(),
            description: "Talks".into(),
            category: "Tech".into(),
            location: "Berlin".into(),
            event_date: "2030-05-01".into(),
            start_time: "09:00".into(),
            end_time: "17:30".into(),
            ticket_capacity: 100,
            ticket_price: "25.50".parse().unwrap(),
            currency: "eur".into(),
        }
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
    }

    fn fields(r: Result<EventDetails, Vec<FieldError>>) -> Vec<String> {
        r.err().unwrap().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_good_event_validates() {
        let mut r = raw();
        r.description = "Talks\nand a party\n".into();
        validate(&r, today(), true).expect("a description may run over several lines");
        let d = validate(&raw(), today(), true).unwrap();
        assert_eq!(d.currency, "EUR");
        assert_eq!(d.ticket_price.minor(), 2550);
    }

    #[test]
    fn each_rule_names_its_field() {
        type Mutation = fn(&mut RawDetails);
        let cases: Vec<(Mutation, &str)> = vec![
            (|r| r.event_name = "  ".into(), "event_name"),
            (|r| r.category = "".into(), "category"),
            (|r| r.location = "".into(), "location"),
            (|r| r.event_date = "01/05/2030".into(), "event_date"),
            (|r| r.event_date = "2026-11-23".into(), "event_date"),
            (|r| r.start_time = "9am".into(), "start_time"),
            (|r| r.end_time = "08:00".into(), "end_time"),
            (|r| r.end_time = "09:00".into(), "end_time"),
            (|r| r.ticket_capacity = 0, "ticket_capacity"),
            (|r| r.ticket_capacity = MAX_CAPACITY + 1, "ticket_capacity"),
            (|r| r.currency = "EURO".into(), "currency"),
            (|r| r.event_name = "Free\u{0}gig".into(), "event_name"),
            (|r| r.location = "Hall \u{202E}A".into(), "location"),
            (|r| r.category = "Mu\nsic".into(), "category"),
            (|r| r.description = "Doors\u{1b}[2J".into(), "description"),
        ];
        for (mutate, field) in cases {
            let mut r = raw();
            mutate(&mut r);
            assert_eq!(
                fields(validate(&r, today(), true)),
                vec![field.to_string()],
                "{field}"
            );
        }
    }

    #[test]
    fn today_is_allowed_and_past_dates_pass_when_unchanged() {
        let mut r = raw();
        r.event_date = "2026-11-24".into();
        assert!(validate(&r, today(), true).is_ok());
        r.event_date = "2020-01-01".into();
        assert!(validate(&r, today(), false).is_ok());
    }
}
