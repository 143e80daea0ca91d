//! Liveness and readiness. Ready means every server this service depends on
//! answers right now; the gateway and orchestrators route by it.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, Json};
use serde_json::{json, Value};
use ticketer_bus::Bus;
use ticketer_cache::Cache;
use ticketer_db::Db;

/// What a service's readiness depends on.
#[derive(Clone, Default)]
pub struct Readiness {
    pub db: Option<Db>,
    pub bus: Option<Bus>,
    pub cache: Option<Cache>,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn check<F, E>(f: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

impl Readiness {
    pub async fn report(&self) -> (bool, Value) {
        let mut components = serde_json::Map::new();
        let mut ok = true;
        let mut put = |name: &str, kind: &str, res: Result<(), String>| {
            ok &= res.is_ok();
            let entry = match res {
                Ok(()) => json!({"status": "UP", "kind": kind}),
                Err(e) => json!({"status": "DOWN", "kind": kind, "error": e}),
            };
            components.insert(name.to_string(), entry);
        };
        if let Some(db) = &self.db {
            let kind = match db.dialect() {
                ticketer_db::Dialect::Postgres => "postgres",
                ticketer_db::Dialect::Sqlite => "sqlite",
            };
            put("database", kind, check(db.ping()).await);
        }
        if let Some(bus) = &self.bus {
            put("bus", bus.kind(), check(bus.ping()).await);
        }
        if let Some(cache) = &self.cache {
            put("cache", cache.kind(), check(cache.ping()).await);
        }
        let status = if ok { "UP" } else { "DOWN" };
        (ok, json!({"status": status, "components": components}))
    }
}

pub async fn live() -> Json<Value> {
    Json(json!({"status": "UP"}))
}

pub async fn ready(State(readiness): State<Readiness>) -> (StatusCode, Json<Value>) {
    let (ok, body) = readiness.report().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
