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
