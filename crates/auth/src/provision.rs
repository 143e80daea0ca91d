//! Operator tooling: customer accounts made straight in the auth database,
//! with access tokens signed by the service's own key. A flash sale's
//! buyers exist before it opens; registering 40,000 of them through the API
//! would spend 80,000 Argon2 computations (register and log in) and tell
//! nothing about the sale. This needs what only an operator has (the auth
//! database and the signing key), so it opens nothing to clients.
//!
//! The accounts get one random password nobody is told, hashed once with
//! the production parameters: they can be used only through the tokens
//! handed back, until those expire. They are not announced (no
//! UserRegistered): they are load-test fixtures, not people to welcome.

use chrono::Utc;
use rand::RngCore;
use ticketer_db::{time, value_rows, Db};
use ticketer_http::{Claims, Role};
use uuid::Uuid;

use crate::service::AuthService;

/// One provisioned customer.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub id: Uuid,
    pub email: String,
    pub access_token: String,
}

/// Rows per INSERT: well under both dialects' bound-parameter limits.
const CHUNK: usize = 500;

impl AuthService {
    /// Creates `count` customers `<label>-<n>@bench.invalid` and signs an
    /// access token for each.
    pub async fn provision_customers(&self, label: &str, count: usize) -> anyhow::Result<Vec<Provisioned>> {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let hash = self.hasher.hash(password).await?;
        let now = time::now();
        let issued = Utc::now().timestamp();
        let users: Vec<(Uuid, String)> = (1..=count)
            .map(|n| {
                (
                    Uuid::now_v7(),
                    format!("{label}-{n}@bench.invalid").to_lowercase(),
                )
            })
            .collect();
        for chunk in users.chunks(CHUNK) {
            insert_chunk(&self.db, chunk, &hash, &now).await?;
        }
        Ok(users
            .into_iter()
            .map(|(id, email)| {
                let claims = Claims {
                    sub: id.to_string(),
                    email: email.clone(),
                    roles: vec![Role::Customer],
                    iat: issued,
                    exp: issued + self.access_ttl.as_secs() as i64,
                    iss: self.issuer.clone(),
                    nbf: Some(issued),
                };
                Provisioned {
                    id,
                    email,
                    access_token: self.key.sign(&claims),
                }
            })
            .collect())
    }
}

async fn insert_chunk(db: &Db, users: &[(Uuid, String)], hash: &str, now: &str) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    // users: id, email, password_hash, first_name, last_name, created_at, updated_at
    let sql = format!(
        "INSERT INTO users (id, email, password_hash, first_name, last_name, created_at, updated_at) VALUES {}",
        value_rows(users.len(), 7)
    );
    let mut q = sqlx::query(&sql);
    for (id, email) in users {
        q = q
            .bind(id.to_string())
            .bind(email.clone())
            .bind(hash.to_string())
            .bind("Bench")
            .bind("Buyer")
            .bind(now.to_string())
            .bind(now.to_string());
    }
    q.execute(&mut *tx).await?;
    let sql = format!(
        "INSERT INTO user_roles (user_id, role, granted_at) VALUES {}",
        value_rows(users.len(), 3)
    );
    let mut q = sqlx::query(&sql);
    for (id, _) in users {
        q = q
            .bind(id.to_string())
            .bind(Role::Customer.as_str())
            .bind(now.to_string());
    }
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use ticketer_testkit::TestDatabase;

    use super::*;
    use crate::{
        keys::SigningKey,
        password::{HashLimits, Hasher},
        store, MIGRATIONS,
    };

    #[tokio::test]
    async fn provisioned_customers_exist_and_their_tokens_verify() {
        let tdb = TestDatabase::sqlite();
        let db = tdb.connect().await.unwrap();
        db.migrate("auth", MIGRATIONS).await.unwrap();
        let key = Arc::new(SigningKey::from_pem(&SigningKey::generate_pem()).unwrap());
        let auth = AuthService {
            db: db.clone(),
            key: key.clone(),
            issuer: "ticketer".into(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(3600),
            hasher: Hasher::new(HashLimits::default()),
            throttle: crate::throttle::Throttle::off(),
        };
        // More than one INSERT's worth.
        let made = auth.provision_customers("Buyer-T", CHUNK + 3).await.unwrap();
        assert_eq!(made.len(), CHUNK + 3);
        let verifier = key.verifier("ticketer");
        for p in [&made[0], &made[CHUNK + 2]] {
            let claims = verifier.verify(&p.access_token).await.unwrap();
            assert_eq!(claims.sub, p.id.to_string());
            assert_eq!(claims.roles, vec![Role::Customer]);
            let user = store::user_by_email(&db, &p.email).await.unwrap().unwrap();
            assert_eq!((user.id, user.roles), (p.id, vec![Role::Customer]));
            assert!(p.email.starts_with("buyer-t-"), "{}", p.email);
        }
    }
}
