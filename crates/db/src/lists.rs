//! Lists bound as parameters, so that a statement's text does not depend
//! on how many rows a batch has.
//!
//! A batch of 3 and a batch of 4 written as `IN ($1, $2, $3)` and
//! `IN ($1, $2, $3, $4)` are two statements: PostgreSQL parses and plans
//! each anew, and the client first asks it to describe the new statement
//! (a round trip more) before running it. Batches come in every size, so
//! nearly every statement of a sale was new to its connection. On
//! PostgreSQL a list is therefore one array parameter (`IN (SELECT
//! unnest($1::text[]))`, `unnest($1::text[], $2::text[])`), written as an array literal because
//! the `Any` driver binds no arrays; the statement is prepared once per
//! connection and reused. SQLite parses in process and cheaply, so it keeps
//! one placeholder per item.
//!
//! A statement prepared once is also planned once per connection for every
//! list, without knowing how long the list is or how large the table has
//! become. Planned while a table is nearly empty (a new database, a sale's
//! first seconds), `key IN (SELECT unnest(..))` and `UPDATE .. FROM
//! unnest(..)` become a hash join over a scan of the whole table, and stay
//! that on every call as the table grows: in a production flash sale the
//! bookings, tickets, payments and outbox tables were read whole on each
//! batch (252,000 rows read for 1,000 bookings). [`rows_with`] and
//! [`probed`] write those statements so that PostgreSQL's only sensible
//! plan is one index probe per item, whatever the table's size.

use sqlx::{
    any::AnyArguments,
    query::{Query, QueryAs},
    Any,
};

use crate::{placeholders, Dialect};

/// `IN (SELECT unnest($n::T[]))` on PostgreSQL, `IN ($n, ...)` on SQLite,
/// for `len` items from placeholder `n`; `pg_type` is the items'
/// PostgreSQL type. Bind the items with [`Binds::bind_list`]. An empty list
/// matches nothing.
///
/// Not `= ANY($n::T[])`: the driver sends the literal as text, and a cast
/// of a parameter in a row filter is evaluated for every row the scan
/// reads (measured: 4-10 ms a statement on a few thousand rows), where
/// the subquery turns it into rows once.
pub fn any_of(dialect: Dialect, n: usize, len: usize, pg_type: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("IN (SELECT unnest(${n}::{pg_type}[]))"),
        Dialect::Sqlite if len == 0 => "IN (SELECT NULL WHERE 0)".to_string(),
        Dialect::Sqlite => format!("IN ({})", placeholders(n, len)),
    }
}

/// Whether [`rows_with`] locks the rows it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    No,
    /// FOR UPDATE on PostgreSQL, taken in key order so that two batches
    /// cannot wait on each other; SQLite's one writer needs none.
    ForUpdate,
}

/// `SELECT {columns} FROM {table}` for the rows whose `key` is one of the
/// `len` items bound from placeholder `n` (with [`Binds::bind_list`]).
///
/// On PostgreSQL each distinct item looks its rows up by itself (a lateral
/// subquery that the planner cannot merge into a join), so the plan is an
/// index probe per item even when the statement was planned on an empty
/// table; `key` needs an index. `columns` are plain column names.
#[allow(clippy::too_many_arguments)]
pub fn rows_with(
    dialect: Dialect,
    columns: &str,
    table: &str,
    key: &str,
    n: usize,
    len: usize,
    pg_type: &str,
    lock: Lock,
) -> String {
    // Locked rows are taken in key order; unlocked, `OFFSET 0` keeps the
    // planner from merging the subquery into a join.
    let locked = lock == Lock::ForUpdate;
    let pin = if locked { "FOR UPDATE" } else { "OFFSET 0" };
    let ordered = |by: &str| {
        if locked {
            format!(" ORDER BY {by}")
        } else {
            String::new()
        }
    };
    match dialect {
        Dialect::Postgres => format!(
            "SELECT found.* FROM (SELECT DISTINCT unnest(${n}::{pg_type}[]) AS wanted) AS keys \
             CROSS JOIN LATERAL (SELECT {columns} FROM {table} WHERE {key} = keys.wanted {pin}) AS found{}",
            ordered("keys.wanted")
        ),
        Dialect::Sqlite => format!(
            "SELECT {columns} FROM {table} WHERE {key} {}{}",
            any_of(dialect, n, len, pg_type),
            ordered(key)
        ),
    }
}

/// For PostgreSQL's `UPDATE {table} SET .. FROM {probed(..)} WHERE
/// {table}.ctid = {alias}.row_id`: each row of `source` (a FROM item named
/// `alias`, such as `unnest($1::text[]) AS v(id)`) with the physical
/// address of the `table` row that `matches` it, found by one index probe
/// per source row (see the module's notes). A row that `matches` nothing is
/// left out, as in a join.
///
/// The address is that of the row version the statement sees, so this is
/// for rows this transaction has locked, or that nothing else updates: a
/// row another transaction changed meanwhile would be skipped.
pub fn probed(table: &str, source: &str, alias: &str, matches: &str) -> String {
    format!(
        "(SELECT {alias}.*, found.row_id FROM {source} \
         CROSS JOIN LATERAL (SELECT ctid AS row_id FROM {table} WHERE {matches} OFFSET 0) AS found) AS {alias}"
    )
}

/// A PostgreSQL array literal of `items`, each quoted (`{"a","b\"c"}`), for
/// a text parameter cast to an array type.
pub fn array_literal<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    nullable_array_literal(items.into_iter().map(Some))
}

/// [`array_literal`] with `None` as SQL NULL (unquoted, so never the text
/// "NULL").
pub fn nullable_array_literal<T: ToString>(items: impl IntoIterator<Item = Option<T>>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let Some(item) = item else {
            out.push_str("NULL");
            continue;
        };
        out.push('"');
        for c in item.to_string().chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// Queries that take list parameters.
pub trait Binds<'q>: Sized {
    fn bind_text(self, value: String) -> Self;

    /// Binds `items` as a list at the next placeholder: one array literal
    /// on PostgreSQL, one placeholder each on SQLite (see [`any_of`]).
    fn bind_list<T: ToString>(self, dialect: Dialect, items: impl IntoIterator<Item = T>) -> Self {
        match dialect {
            Dialect::Postgres => self.bind_text(array_literal(items)),
            Dialect::Sqlite => items
                .into_iter()
                .fold(self, |q, item| q.bind_text(item.to_string())),
        }
    }
}

impl<'q> Binds<'q> for Query<'q, Any, AnyArguments<'q>> {
    fn bind_text(self, value: String) -> Self {
        self.bind(value)
    }
}

impl<'q, O> Binds<'q> for QueryAs<'q, Any, O, AnyArguments<'q>> {
    fn bind_text(self, value: String) -> Self {
        self.bind(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_quote_every_item() {
        assert_eq!(array_literal(Vec::<String>::new()), "{}");
        assert_eq!(array_literal([1, 22]), r#"{"1","22"}"#);
        assert_eq!(
            array_literal([r#"{"k":"a\"b\\c"}"#, "NULL", ""]),
            r#"{"{\"k\":\"a\\\"b\\\\c\"}","NULL",""}"#
        );
    }

    #[test]
    fn nulls_are_unquoted_and_the_text_null_quoted() {
        assert_eq!(
            nullable_array_literal([Some("NULL"), None, Some("x")]),
            r#"{"NULL",NULL,"x"}"#
        );
        assert_eq!(nullable_array_literal(Vec::<Option<i64>>::new()), "{}");
    }

    #[test]
    fn a_list_is_one_array_on_postgres_and_one_placeholder_per_item_on_sqlite() {
        assert_eq!(
            any_of(Dialect::Postgres, 2, 5, "bigint"),
            "IN (SELECT unnest($2::bigint[]))"
        );
        assert_eq!(any_of(Dialect::Sqlite, 2, 3, "bigint"), "IN ($2, $3, $4)");
    }
}
