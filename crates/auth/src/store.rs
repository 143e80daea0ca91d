//! The auth service's SQL.

use chrono::{DateTime, Utc};
use ticketer_db::{time, AnyConnection, Db, DbError, Migration, Row};
use ticketer_http::Role;
use uuid::Uuid;

pub const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "users, roles, refresh tokens",
    include_str!("../migrations/0001_users.sql"),
)];

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
}

pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub roles: &'a [Role],
}

/// Inserts the user and its roles; a duplicate email is a unique violation.
pub async fn insert_user(conn: &mut AnyConnection, new: &NewUser<'_>) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let now = time::now();
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, first_name, last_name, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(id.to_string())
    .bind(new.email)
    .bind(new.password_hash)
    .bind(new.first_name)
    .bind(new.last_name)
    .bind(&now)
    .execute(&mut *conn)
    .await?;
    for role in new.roles {
        grant_role(conn, id, *role).await?;
    }
    Ok(id)
}

pub async fn grant_role(conn: &mut AnyConnection, user: Uuid, role: Role) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_roles (user_id, role, granted_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(user.to_string())
    .bind(role.as_str())
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn revoke_role(db: &Db, user: Uuid, role: Role) -> Result<(), DbError> {
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
        .bind(user.to_string())
        .bind(role.as_str())
        .execute(db.pool())
        .await?;
    Ok(())
}

const USER_COLUMNS: &str = "id, email, password_hash, first_name, last_name, created_at";

async fn load(conn: &mut AnyConnection, filter: &str, value: String) -> Result<Option<User>, DbError> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE {filter} = $1"))
        .bind(value)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let id: String = row.try_get("id")?;
    let roles = sqlx::query("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .filter_map(|r| r.try_get::<String, _>("role").ok()?.parse().ok())
        .collect();
    Ok(Some(user_of(&row, roles)?))
}

/// A user from a row of [`USER_COLUMNS`] and its roles.
fn user_of(row: &ticketer_db::AnyRow, roles: Vec<Role>) -> Result<User, DbError> {
    Ok(User {
        id: ticketer_db::uuid_of(&row.try_get::<String, _>("id")?)?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        roles,
        created_at: time::parse(&row.try_get::<String, _>("created_at")?)?,
    })
}

/// One page of users, newest first, whose email or name contains `q`
/// (any case); with the number of matches.
pub async fn list_users(
    db: &Db,
    q: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<User>, i64), DbError> {
    let filter = "($1 = '' OR lower(email) LIKE $2 ESCAPE '\\' \
                  OR lower(first_name || ' ' || last_name) LIKE $2 ESCAPE '\\')";
    let q = q.map(str::trim).unwrap_or_default();
    let pattern = ticketer_db::like_pattern(q);
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM users WHERE {filter}"))
        .bind(q)
        .bind(&pattern)
        .fetch_one(db.reader())
        .await?;
    let page = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE {filter} ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
    );
    let rows = sqlx::query(&page)
        .bind(q)
        .bind(&pattern)
        .bind(limit)
        .bind(offset)
        .fetch_all(db.reader())
        .await?;
    // The page's roles in one statement, by the ids just read.
    let ids = rows
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut roles: std::collections::HashMap<String, Vec<Role>> = std::collections::HashMap::new();
    if !ids.is_empty() {
        let sql = format!(
            "SELECT user_id, role FROM user_roles WHERE user_id IN ({}) ORDER BY role",
            ticketer_db::placeholders(1, ids.len())
        );
        let mut query = sqlx::query(&sql);
        for id in &ids {
            query = query.bind(id);
        }
        for r in &query.fetch_all(db.reader()).await? {
            if let Ok(role) = r.try_get::<String, _>("role")?.parse() {
                roles.entry(r.try_get("user_id")?).or_default().push(role);
            }
        }
    }
    let users = rows
        .iter()
        .zip(&ids)
        .map(|(row, id)| user_of(row, roles.remove(id).unwrap_or_default()))
        .collect::<Result<_, DbError>>()?;
    Ok((users, total))
}

pub async fn user_by_email(db: &Db, email: &str) -> Result<Option<User>, DbError> {
    load(&mut *db.reading().await?, "email", email.to_string()).await
}

pub async fn user_by_id(conn: &mut AnyConnection, id: Uuid) -> Result<Option<User>, DbError> {
    load(conn, "id", id.to_string()).await
}

pub async fn update_profile(
    conn: &mut AnyConnection,
    id: Uuid,
    first_name: Option<&str>,
    last_name: Option<&str>,
    password_hash: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE users SET first_name = COALESCE($2, first_name), last_name = COALESCE($3, last_name),
                password_hash = COALESCE($4, password_hash), updated_at = $5
         WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(first_name)
    .bind(last_name)
    .bind(password_hash)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored refresh token, looked up by the hash of the presented value.
pub struct RefreshRow {
    pub user_id: Uuid,
    pub family_id: String,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
    pub revoked: bool,
}

pub async fn insert_refresh(
    conn: &mut AnyConnection,
    token_hash: &str,
    user: Uuid,
    family: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, user_id, family_id, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(user.to_string())
    .bind(family)
    .bind(time::format(expires_at))
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find_refresh(conn: &mut AnyConnection, token_hash: &str) -> Result<Option<RefreshRow>, DbError> {
    let row = sqlx::query(
        "SELECT user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let user: String = row.try_get("user_id")?;
    Ok(Some(RefreshRow {
        user_id: Uuid::parse_str(&user).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        family_id: row.try_get("family_id")?,
        expires_at: time::parse(&row.try_get::<String, _>("expires_at")?)?,
        used: row.try_get::<Option<String>, _>("used_at")?.is_some(),
        revoked: row.try_get::<Option<String>, _>("revoked_at")?.is_some(),
    }))
}

/// Marks the token used; false if someone else used it first.
pub async fn mark_used(conn: &mut AnyConnection, token_hash: &str) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $2
         WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(token_hash)
    .bind(time::now())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn revoke_family(conn: &mut AnyConnection, family: &str) -> Result<(), DbError> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family)
        .bind(time::now())
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn revoke_all_for_user(conn: &mut AnyConnection, user: Uuid) -> Result<(), DbError> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user.to_string())
        .bind(time::now())
        .execute(conn)
        .await?;
    Ok(())
}
