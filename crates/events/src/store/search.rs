//! Finding events: public searches (words, place, category, dates) and an
//! organizer's list, a page at a time with how many match.

use ticketer_db::{Db, DbError, Dialect};
use ticketer_http::PageRequest;
use uuid::Uuid;

use super::{from_row, Event, COLUMNS};
use crate::domain::EventStatus;

/// Filters for the public listing.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub q: Option<String>,
    pub category: Option<String>,
    pub location: Option<String>,
    pub from: Option<chrono::NaiveDate>,
    pub to: Option<chrono::NaiveDate>,
}

/// Each word of `q` as an FTS5 string (quotes doubled), so that nothing a
/// client types is read as FTS syntax (AND, NEAR, column filters, `*`);
/// words side by side must all match.
fn fts_query(q: &str) -> String {
    q.split_whitespace().map(fts_string).collect::<Vec<_>>().join(" ")
}

/// `text` as one FTS5 string: quoted, its quotes doubled.
fn fts_string(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// A WHERE clause with its text arguments, numbered as they are added.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    args: Vec<String>,
}

impl Where {
    fn push(&mut self, clause: impl FnOnce(usize) -> String, arg: String) {
        self.args.push(arg);
        self.clauses.push(clause(self.args.len()));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// Matches counted: all of them, or up to a limit (`Some(n)`: n + 1 rows
/// are counted at most, so that "more than n" is known).
#[derive(Debug, Clone, Copy)]
pub enum Counting {
    All,
    UpTo(i64),
}

impl Counting {
    /// How many matches are read at most to count them: the limit and one
    /// more, so that "more than the limit" is known; None for all.
    fn window(self) -> Option<i64> {
        match self {
            Counting::All => None,
            Counting::UpTo(n) => Some(n.max(0) + 1),
        }
    }
}

/// A page of events and how many match: `(events, total, capped)`, capped
/// when counting stopped at the limit.
pub type Found = (Vec<Event>, i64, bool);

async fn page_of(db: &Db, w: Where, page: PageRequest, counting: Counting) -> Result<Found, DbError> {
    let (events, total) = match counting.window() {
        // On PostgreSQL one pass measured slower (a category's page 3 -> 21
        // ms: the planner sorts every match for the id list), so it counts
        // apart.
        Some(window) if db.dialect() == Dialect::Sqlite && page.offset() + page.limit() <= window => {
            counted_page(db, &w, page, window).await?
        }
        _ => counted_apart(db, &w, page, counting.window()).await?,
    };
    Ok(match counting {
        Counting::UpTo(n) if total > n => (events, n, true),
        _ => (events, total, false),
    })
}

/// A page, and its matches counted by a statement of their own (up to
/// `window` of them when given).
async fn counted_apart(
    db: &Db,
    w: &Where,
    page: PageRequest,
    window: Option<i64>,
) -> Result<(Vec<Event>, i64), DbError> {
    let filter = w.sql();
    // Counting every match of a broad search costs a pass over most of the
    // table on both databases; a bounded count stops early.
    let count_sql = match window {
        None => format!("SELECT COUNT(*) FROM events {filter}"),
        Some(window) => {
            format!("SELECT COUNT(*) FROM (SELECT 1 FROM events {filter} LIMIT {window}) AS matched")
        }
    };
    let mut count = sqlx::query_as::<_, (i64,)>(&count_sql);
    for a in &w.args {
        count = count.bind(a.clone());
    }
    let (total,) = count.fetch_one(db.reader()).await?;
    let n = w.args.len();
    let sql = format!(
        "SELECT {COLUMNS} FROM events {filter} ORDER BY event_date, start_time, id LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    );
    let mut q = sqlx::query(&sql);
    for a in &w.args {
        q = q.bind(a.clone());
    }
    let rows = q
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(db.reader())
        .await?;
    let events = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    Ok((events, total))
}

/// A page inside the counted window in one pass over the matches: the
/// ids of the first `window` matches in listing order (their number is the
/// count), then the page's rows by id. Counting and paging apart read the
/// matches twice.
async fn counted_page(
    db: &Db,
    w: &Where,
    page: PageRequest,
    window: i64,
) -> Result<(Vec<Event>, i64), DbError> {
    let sql = format!(
        "SELECT id FROM events {} ORDER BY event_date, start_time, id LIMIT {window}",
        w.sql()
    );
    let mut q = sqlx::query_as::<_, (i64,)>(&sql);
    for a in &w.args {
        q = q.bind(a.clone());
    }
    let ids: Vec<i64> = q
        .fetch_all(db.reader())
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect();
    let total = ids.len() as i64;
    let start = (page.offset() as usize).min(ids.len());
    let wanted = &ids[start..(start + page.limit() as usize).min(ids.len())];
    let mut events = Vec::with_capacity(wanted.len());
    if !wanted.is_empty() {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE id IN ({})",
            ticketer_db::placeholders(1, wanted.len())
        );
        let mut q = sqlx::query(&sql);
        for id in wanted {
            q = q.bind(*id);
        }
        let mut found = q
            .fetch_all(db.reader())
            .await?
            .iter()
            .map(from_row)
            .collect::<Result<Vec<_>, _>>()?;
        for id in wanted {
            // An event deleted between the two reads is left out.
            if let Some(i) = found.iter().position(|e| e.id == *id) {
                events.push(found.swap_remove(i));
            }
        }
    }
    Ok((events, total))
}

/// Matches FTS5 finds on SQLite before the other filters apply: the FTS
/// table, and what to match there.
struct Narrowing {
    table: &'static str,
    query: String,
}

/// A narrowing with fewer matches than the count window drives the search
/// on SQLite (each match looked up, then sorted): walking the listing index
/// instead would read every published event before the window filled.
/// With more, the walk stops once the window is full and reads fewer rows.
/// Measured on 10,000 events: a word in half of them walks in 3 ms and
/// drives in 9; three words in 1,793 walk in 4 ms and drive in 6; a word in
/// none walks the whole index (1.4 ms) and drives in 0.04 ms. Searches
/// counted whole drive below this many.
const DRIVE_BELOW: i64 = 1000;

/// The narrowing with the fewest matches, if it has fewer than `window`.
async fn driver(db: &Db, narrowings: &[Narrowing], window: i64) -> Result<Option<usize>, DbError> {
    let mut best: Option<(usize, i64)> = None;
    for (i, n) in narrowings.iter().enumerate() {
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM {t} WHERE {t} MATCH $1 LIMIT {window})",
            t = n.table
        );
        let (found,): (i64,) = sqlx::query_as(&sql).bind(&n.query).fetch_one(db.reader()).await?;
        if found < window && best.is_none_or(|(_, b)| found < b) {
            best = Some((i, found));
        }
    }
    Ok(best.map(|(i, _)| i))
}

/// A location as an FTS5 trigram phrase (quotes doubled): the rows holding
/// it anywhere, case folded; None below three characters, which trigrams
/// cannot find.
fn place_query(location: &str) -> Option<String> {
    (location.chars().count() >= 3).then(|| fts_string(location))
}

pub async fn list_published(
    db: &Db,
    f: &ListFilter,
    page: PageRequest,
    counting: Counting,
) -> Result<Found, DbError> {
    let q = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let mut w = Where::default();
    match db.dialect() {
        // The planner weighs the GIN indexes (words, place trigrams) itself.
        Dialect::Postgres => {
            w.push(
                |i| format!("status = ${i}"),
                EventStatus::Published.as_str().into(),
            );
            if let Some(q) = q {
                w.push(
                    |i| format!("search @@ plainto_tsquery('english', ${i})"),
                    q.to_string(),
                );
            }
        }
        // SQLite cannot weigh FTS5 matches: asked first how many each
        // narrowing finds, the fewest drive (the others and the status,
        // prefixed with +, are then only checked); none few enough, the
        // listing index is walked.
        Dialect::Sqlite => {
            let mut narrowings = Vec::new();
            if let Some(q) = q {
                // Every word must appear in the name or the description.
                narrowings.push(Narrowing {
                    table: "events_search",
                    query: fts_query(q),
                });
            }
            if let Some(place) = f.location.as_deref().and_then(|l| place_query(l.trim())) {
                narrowings.push(Narrowing {
                    table: "events_places",
                    query: place,
                });
            }
            let window = counting.window().unwrap_or(DRIVE_BELOW);
            let driving = driver(db, &narrowings, window).await?;
            let checked = |i: usize| if driving.is_some_and(|d| d != i) { "+" } else { "" };
            let status = if driving.is_some() { "+status" } else { "status" };
            w.push(
                |i| format!("{status} = ${i}"),
                EventStatus::Published.as_str().into(),
            );
            for (n, narrowing) in narrowings.into_iter().enumerate() {
                let (t, plus) = (narrowing.table, checked(n));
                w.push(
                    |i| format!("{plus}id IN (SELECT rowid FROM {t} WHERE {t} MATCH ${i})"),
                    narrowing.query,
                );
            }
        }
    }
    if let Some(c) = &f.category {
        w.push(|i| format!("lower(category) = ${i}"), c.trim().to_lowercase());
    }
    if let Some(l) = &f.location {
        w.push(
            |i| format!("lower(location) LIKE ${i} ESCAPE '\\'"),
            ticketer_db::like_pattern(l.trim()),
        );
    }
    if let Some(from) = f.from {
        w.push(
            |i| format!("event_date >= ${i}"),
            from.format("%Y-%m-%d").to_string(),
        );
    }
    if let Some(to) = f.to {
        w.push(
            |i| format!("event_date <= ${i}"),
            to.format("%Y-%m-%d").to_string(),
        );
    }
    page_of(db, w, page, counting).await
}

pub async fn list_by_organizer(
    db: &Db,
    organizer: Uuid,
    page: PageRequest,
) -> Result<(Vec<Event>, i64), DbError> {
    let mut w = Where::default();
    w.push(|i| format!("organizer = ${i}"), organizer.to_string());
    let (events, total, _) = page_of(db, w, page, Counting::All).await?;
    Ok((events, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_are_quoted_not_parsed() {
        assert_eq!(fts_query(" Rock  night "), "\"Rock\" \"night\"");
        assert_eq!(fts_query("a\"b OR c*"), "\"a\"\"b\" \"OR\" \"c*\"");
    }

    #[test]
    fn places_are_trigram_phrases_of_three_characters_or_more() {
        assert_eq!(place_query("Ber"), Some("\"Ber\"".into()));
        assert_eq!(place_query("New \"York"), Some("\"New \"\"York\"".into()));
        assert_eq!(place_query("Bé"), None);
    }
}
