//! Saved payment methods: each customer's own, one of them the default.

use std::collections::HashMap;

use ticketer_db::{placeholders, time, AnyRow, Db, DbError, Row};
use uuid::Uuid;

/// A saved card as stored (the token included: for charging only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    pub id: String,
    pub customer_id: String,
    pub provider_token: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub is_default: bool,
    pub created_at: String,
}

const COLUMNS: &str =
    "id, customer_id, provider_token, brand, last4, exp_month, exp_year, is_default, created_at";

fn from_row(r: &AnyRow) -> Result<Method, sqlx::Error> {
    Ok(Method {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        provider_token: r.try_get("provider_token")?,
        brand: r.try_get("brand")?,
        last4: r.try_get("last4")?,
        exp_month: r.try_get("exp_month")?,
        exp_year: r.try_get("exp_year")?,
        is_default: r.try_get::<i64, _>("is_default")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

/// The customer's methods, the default first, then the newest.
pub async fn of_customer(db: &Db, customer_id: &str) -> Result<Vec<Method>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payment_methods WHERE customer_id = $1 AND deleted_at IS NULL
         ORDER BY is_default DESC, created_at DESC, id DESC"
    );
    let rows = sqlx::query(&sql).bind(customer_id).fetch_all(db.pool()).await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Why a method was not saved.
#[derive(Debug, PartialEq, Eq)]
pub enum NotSaved {
    /// The customer already has `limit`.
    Full { limit: i64 },
}

/// Saves `m` unless the customer already has `limit` methods. It becomes
/// the default when asked or when it is the customer's first; a new
/// default takes the mark from the old one in the same transaction.
pub async fn save(db: &Db, m: &Method, limit: i64) -> Result<Result<Method, NotSaved>, DbError> {
    match save_once(db, m, limit).await {
        // Two first saves at once both found no rows to lock; the index
        // let one be the default. The other, tried again, sees it.
        Err(DbError::Sqlx(e)) if ticketer_db::is_unique_violation(&e) => save_once(db, m, limit).await,
        other => other,
    }
}

async fn save_once(db: &Db, m: &Method, limit: i64) -> Result<Result<Method, NotSaved>, DbError> {
    let mut tx = db.begin().await?;
    // Taking the customer's rows in order serializes two saves of one
    // customer on PostgreSQL; SQLite has one writer anyway.
    let sql = format!(
        "SELECT id FROM payment_methods WHERE customer_id = $1 AND deleted_at IS NULL ORDER BY id{}",
        ticketer_db::for_update(&tx)
    );
    let existing: Vec<(String,)> = sqlx::query_as(&sql)
        .bind(&m.customer_id)
        .fetch_all(&mut *tx)
        .await?;
    if existing.len() as i64 >= limit {
        return Ok(Err(NotSaved::Full { limit }));
    }
    let is_default = m.is_default || existing.is_empty();
    if is_default {
        sqlx::query("UPDATE payment_methods SET is_default = 0 WHERE customer_id = $1 AND is_default = 1")
            .bind(&m.customer_id)
            .execute(&mut *tx)
            .await?;
    }
    let saved = Method {
        is_default,
        created_at: time::now(),
        ..m.clone()
    };
    sqlx::query(
        "INSERT INTO payment_methods (id, customer_id, provider_token, brand, last4, exp_month, exp_year,
             is_default, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&saved.id)
    .bind(&saved.customer_id)
    .bind(&saved.provider_token)
    .bind(&saved.brand)
    .bind(&saved.last4)
    .bind(saved.exp_month)
    .bind(saved.exp_year)
    .bind(i64::from(saved.is_default))
    .bind(&saved.created_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(saved))
}

/// Deletes the customer's method `id`; false when they have none by that
/// id. When it was the default, their newest remaining method becomes it.
/// The row stays, marked deleted: a charge made with the card and not yet
/// answered by the provider can still be asked about.
pub async fn delete(db: &Db, customer_id: &str, id: &str) -> Result<bool, DbError> {
    let mut tx = db.begin().await?;
    let found: Option<(i64,)> = sqlx::query_as(
        "SELECT is_default FROM payment_methods WHERE id = $1 AND customer_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(customer_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((was_default,)) = found else {
        return Ok(false);
    };
    sqlx::query("UPDATE payment_methods SET deleted_at = $1, is_default = 0 WHERE id = $2")
        .bind(time::now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if was_default != 0 {
        sqlx::query(
            "UPDATE payment_methods SET is_default = 1 WHERE id = (
                 SELECT id FROM payment_methods WHERE customer_id = $1 AND deleted_at IS NULL
                 ORDER BY created_at DESC, id DESC LIMIT 1)",
        )
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The provider tokens of the saved cards `ids`, each with its owner's id.
/// Deleted cards are left out unless `deleted_too` (a charge made before
/// the deletion, still to be asked about).
pub async fn tokens(
    db: &Db,
    ids: &[Uuid],
    deleted_too: bool,
) -> Result<HashMap<Uuid, (String, String)>, DbError> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT id, customer_id, provider_token FROM payment_methods WHERE id IN ({}){}",
            placeholders(1, chunk.len()),
            if deleted_too {
                ""
            } else {
                " AND deleted_at IS NULL"
            }
        );
        let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for (id, customer, token) in q.fetch_all(db.pool()).await? {
            found.insert(ticketer_db::uuid_of(&id)?, (customer, token));
        }
    }
    Ok(found)
}
