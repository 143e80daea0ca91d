//! `GET /health`: every service's readiness in one answer.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, Json};
use futures::future::join_all;
use serde_json::{json, Map, Value};

use crate::Gateway;

/// Every service's readiness, asked at most once a second however often
/// this is called.
pub async fn aggregate(State(gw): State<Gateway>) -> (StatusCode, Json<Value>) {
    let (status, body) = gw.health.get_or(|| ask_everyone(&gw)).await;
    (status, Json(body))
}

async fn ask_everyone(gw: &Gateway) -> (StatusCode, Value) {
    let checks = gw.config.services.iter().map(|(svc, base)| {
        let http = gw.http.clone();
        let url = format!("{base}/health/ready");
        async move {
            let res = http.get(&url).timeout(Duration::from_secs(3)).send().await;
            let entry = match res {
                Ok(r) => {
                    let up = r.status().is_success();
                    let detail = r.json::<Value>().await.unwrap_or(Value::Null);
                    json!({"status": if up { "UP" } else { "DOWN" }, "details": detail})
                }
                Err(e) => json!({"status": "DOWN", "error": e.to_string()}),
            };
            (svc.name().to_string(), entry)
        }
    });
    let results = join_all(checks).await;
    let all_up = results.iter().all(|(_, v)| v["status"] == "UP");
    let services: Map<String, Value> = results.into_iter().collect();
    let status = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        json!({"status": if all_up { "UP" } else { "DOWN" }, "services": services}),
    )
}
