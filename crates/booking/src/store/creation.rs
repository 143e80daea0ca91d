//! New bookings, each with the Idempotency-Key it was made with, and the
//! look-up of bookings by key.

use ticketer_contract::Money;
use ticketer_db::{
    lists::{array_literal, nullable_array_literal},
    time, value_rows, AnyConnection, Db, DbError, Dialect, Row,
};
use uuid::Uuid;

use super::{from_row, stage_name, Booking, COLUMNS};

/// The Idempotency-Key a booking was made with, and a digest of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub key: String,
    pub request_hash: String,
}

/// Inserts new bookings, each with the Idempotency-Key it was made with if
/// any, in one statement; the ids of those inserted. A booking whose
/// customer already used its key is not inserted (nor is the second of two
/// with the same key).
pub async fn insert_all(
    conn: &mut AnyConnection,
    new: &[(&Booking, Option<&RequestKey>)],
    deadlines: &[Option<String>],
) -> Result<Vec<Uuid>, DbError> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    if Dialect::of(conn) == Dialect::Postgres {
        return insert_all_postgres(conn, new, deadlines).await;
    }
    let sql = format!(
        "INSERT INTO bookings ({COLUMNS}, status, idempotency_key, request_hash, deadline_at)
         VALUES {}
         ON CONFLICT DO NOTHING RETURNING booking_id",
        value_rows(new.len(), 20)
    );
    let mut q = sqlx::query_as::<_, (String,)>(&sql);
    for ((b, key), deadline) in new.iter().zip(deadlines) {
        q = q
            .bind(b.booking_id.to_string())
            .bind(b.customer_id.to_string())
            .bind(b.event_id)
            .bind(b.number_of_tickets)
            .bind(b.payment.token())
            .bind(b.payment.method().map(|m| m.to_string()))
            .bind(stage_name(b.saga.stage))
            .bind(b.saga.failure.map(|f| f.as_str()))
            .bind(serde_json::to_string(&b.saga.ticket_ids).expect("uuids serialize"))
            .bind(b.saga.amount.map(Money::minor))
            .bind(b.currency.clone())
            .bind(b.version)
            .bind(b.created_at.clone())
            .bind(b.updated_at.clone())
            .bind(b.held_at.clone())
            .bind(b.saga.hold_until.map(time::format))
            .bind(b.saga.stage.status().as_str())
            .bind(key.map(|k| k.key.clone()))
            .bind(key.map(|k| k.request_hash.clone()))
            .bind(deadline.clone());
    }
    let rows = q.fetch_all(conn).await?;
    rows.iter().map(|(id,)| ticketer_db::uuid_of(id)).collect()
}

/// A new booking, the key it was asked with and its deadline.
type NewRow<'a> = (&'a Booking, Option<&'a RequestKey>, &'a Option<String>);

/// [`insert_all`] on PostgreSQL: one text for every batch size, the
/// columns as arrays (see `ticketer_db::lists`), inserted in their order so
/// that the first of two with one key wins.
async fn insert_all_postgres(
    conn: &mut AnyConnection,
    new: &[(&Booking, Option<&RequestKey>)],
    deadlines: &[Option<String>],
) -> Result<Vec<Uuid>, DbError> {
    let rows: Vec<NewRow> = new.iter().zip(deadlines).map(|((b, k), d)| (*b, *k, d)).collect();
    let column = |f: &dyn Fn(&NewRow) -> Option<String>| nullable_array_literal(rows.iter().map(f));
    let sql = format!(
        "INSERT INTO bookings ({COLUMNS}, status, idempotency_key, request_hash, deadline_at)
         SELECT id, customer, event, n, token, method, stage, failure, tickets, amount, currency,
                version, created, updated, held, until, status, key, hash, deadline
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::bigint[],
                     $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                     $19::text[], $20::text[])
              WITH ORDINALITY AS v(id, customer, event, n, token, method, stage, failure, tickets,
                                   amount, currency, version, created, updated, held, until,
                                   status, key, hash, deadline, ord)
         ORDER BY ord
         ON CONFLICT DO NOTHING RETURNING booking_id"
    );
    let made: Vec<(String,)> = sqlx::query_as(&sql)
        .bind(column(&|(b, _, _)| Some(b.booking_id.to_string())))
        .bind(column(&|(b, _, _)| Some(b.customer_id.to_string())))
        .bind(column(&|(b, _, _)| Some(b.event_id.to_string())))
        .bind(column(&|(b, _, _)| Some(b.number_of_tickets.to_string())))
        .bind(column(&|(b, _, _)| Some(b.payment.token())))
        .bind(column(&|(b, _, _)| b.payment.method().map(|m| m.to_string())))
        .bind(column(&|(b, _, _)| Some(stage_name(b.saga.stage).to_string())))
        .bind(column(&|(b, _, _)| {
            b.saga.failure.map(|f| f.as_str().to_string())
        }))
        .bind(column(&|(b, _, _)| {
            Some(serde_json::to_string(&b.saga.ticket_ids).expect("uuids serialize"))
        }))
        .bind(column(&|(b, _, _)| b.saga.amount.map(|a| a.minor().to_string())))
        .bind(column(&|(b, _, _)| b.currency.clone()))
        .bind(column(&|(b, _, _)| Some(b.version.to_string())))
        .bind(column(&|(b, _, _)| Some(b.created_at.clone())))
        .bind(column(&|(b, _, _)| Some(b.updated_at.clone())))
        .bind(column(&|(b, _, _)| b.held_at.clone()))
        .bind(column(&|(b, _, _)| b.saga.hold_until.map(time::format)))
        .bind(column(&|(b, _, _)| {
            Some(b.saga.stage.status().as_str().to_string())
        }))
        .bind(column(&|(_, k, _)| k.map(|k| k.key.clone())))
        .bind(column(&|(_, k, _)| k.map(|k| k.request_hash.clone())))
        .bind(column(&|(_, _, d)| (*d).clone()))
        .fetch_all(conn)
        .await?;
    made.iter().map(|(id,)| ticketer_db::uuid_of(id)).collect()
}

/// Inserts a new booking; false when its customer already used its key.
#[cfg(test)]
pub async fn insert(
    conn: &mut AnyConnection,
    b: &Booking,
    key: Option<&RequestKey>,
) -> Result<bool, DbError> {
    Ok(!insert_all(conn, &[(b, key)], &[None]).await?.is_empty())
}

/// The bookings made with these (customer, Idempotency-Key) pairs, in one
/// statement: each with its customer, key and the digest of the request
/// that made it. Pairs without a booking are simply absent.
pub async fn by_keys(db: &Db, keys: &[(Uuid, String)]) -> Result<Vec<(Booking, String, String)>, DbError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows = if db.dialect() == Dialect::Postgres {
        // One text for every batch size, and a probe of the key's index
        // per pair whatever the plan was made on (see `ticketer_db::lists`).
        let sql = format!(
            "SELECT found.* FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS k(customer, idem)) AS keys
             CROSS JOIN LATERAL (SELECT {COLUMNS}, idempotency_key, request_hash FROM bookings
                 WHERE customer_id = keys.customer AND idempotency_key = keys.idem OFFSET 0) AS found"
        );
        sqlx::query(&sql)
            .bind(array_literal(keys.iter().map(|(c, _)| c)))
            .bind(array_literal(keys.iter().map(|(_, k)| k)))
            .fetch_all(db.reader())
            .await?
    } else {
        let sql = format!(
            "SELECT {COLUMNS}, idempotency_key, request_hash FROM bookings
             WHERE (customer_id, idempotency_key) IN ({})",
            value_rows(keys.len(), 2)
        );
        let mut q = sqlx::query(&sql);
        for (customer, key) in keys {
            q = q.bind(customer.to_string()).bind(key.clone());
        }
        q.fetch_all(db.reader()).await?
    };
    rows.iter()
        .map(|r| {
            let key: Option<String> = r.try_get("idempotency_key")?;
            let hash: Option<String> = r.try_get("request_hash")?;
            Ok((from_row(r)?, key.unwrap_or_default(), hash.unwrap_or_default()))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::from)
}
