//! One API reference for all services: their OpenAPI documents merged, and
//! Swagger UI served from assets compiled into the binary.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Json,
};
use futures::future::join_all;
use serde_json::{json, Map, Value};

use crate::Gateway;

/// Merges `parts` (each a service's document) into one OpenAPI 3.1 document.
pub fn merge(parts: Vec<(String, Value)>) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    let mut tags = Vec::new();
    let mut missing = Vec::new();
    for (service, doc) in parts {
        if doc.is_null() {
            missing.push(service);
            continue;
        }
        if let Some(p) = doc.get("paths").and_then(Value::as_object) {
            paths.extend(p.clone());
        }
        if let Some(s) = doc.pointer("/components/schemas").and_then(Value::as_object) {
            schemas.extend(s.clone());
        }
        if let Some(t) = doc.get("tags").and_then(Value::as_array) {
            tags.extend(t.iter().cloned());
        }
    }
    let mut description = "Every Ticketer service behind the gateway.".to_string();
    if !missing.is_empty() {
        description.push_str(&format!(" Not available right now: {}.", missing.join(", ")));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Ticketer API", "version": env!("CARGO_PKG_VERSION"), "description": description},
        "paths": paths,
        "tags": tags,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
}

/// The services' API documents merged, gathered at most every ten seconds.
pub async fn openapi(State(gw): State<Gateway>) -> Json<Value> {
    Json(gw.openapi.get_or(|| gather(&gw)).await)
}

async fn gather(gw: &Gateway) -> Value {
    let fetches = gw.config.services.iter().map(|(svc, base)| {
        let http = gw.http.clone();
        let url = format!("{base}/openapi.json");
        async move {
            let doc = match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.unwrap_or(Value::Null),
                _ => Value::Null,
            };
            (svc.name().to_string(), doc)
        }
    });
    merge(join_all(fetches).await)
}

pub async fn docs_root() -> Redirect {
    Redirect::permanent("/docs/")
}

pub async fn docs_index() -> Response {
    serve_file("index.html")
}

pub async fn docs_file(Path(tail): Path<String>) -> Response {
    serve_file(&tail)
}

fn serve_file(tail: &str) -> Response {
    let tail = if tail.is_empty() { "index.html" } else { tail };
    let config = Arc::new(utoipa_swagger_ui::Config::from("/openapi.json"));
    match utoipa_swagger_ui::serve(tail, config) {
        Ok(Some(file)) => ([(header::CONTENT_TYPE, file.content_type)], file.bytes.to_vec()).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "serving API docs");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_paths_and_schemas_and_names_the_missing() {
        let a = json!({"paths": {"/api/v1/auth/login": {}}, "components": {"schemas": {"Login": {}}}});
        let b = json!({"paths": {"/api/v1/events": {}}, "components": {"schemas": {"Event": {}}}});
        let merged = merge(vec![
            ("auth".into(), a),
            ("events".into(), b),
            ("ticket".into(), Value::Null),
        ]);
        assert!(merged.pointer("/paths/~1api~1v1~1auth~1login").is_some());
        assert!(merged.pointer("/paths/~1api~1v1~1events").is_some());
        assert!(merged.pointer("/components/schemas/Event").is_some());
        assert!(merged["info"]["description"].as_str().unwrap().contains("ticket"));
    }
}
