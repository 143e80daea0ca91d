//! What a service's consumers gave up on, for an administrator over HTTP
//! (`GET /api/v1/{segment}/dead-letters`, and a replay per queue): the
//! same letters `ticketer dlq` shows, from RabbitMQ's `<queue>.dlq` in
//! production or from the service's own database in process.

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Router,
};
use serde::Serialize;
use ticketer_bus::{topology, Bus, Envelope};
use ticketer_config::Service;
use ticketer_db::{dead_letters::Kept, Db};
use ticketer_http::{ApiError, ApiResult, AuthUser, Role};

/// One dead letter, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Letter {
    pub queue: String,
    /// The message type.
    #[serde(rename = "type")]
    pub kind: String,
    /// None when the body was not even a message envelope.
    pub message_id: Option<String>,
    pub reason: String,
    /// When it died (kept letters only; RabbitMQ does not say).
    pub dead_at: Option<String>,
}

impl Letter {
    pub fn from_broker(queue: &str, l: ticketer_bus::DeadLetter) -> Self {
        Letter {
            queue: queue.to_string(),
            message_id: Envelope::from_bytes(&l.body)
                .ok()
                .map(|e| e.message_id.to_string()),
            kind: l.routing_key,
            reason: l.reason,
            dead_at: None,
        }
    }

    pub fn from_kept(queue: &str, k: Kept) -> Self {
        Letter {
            queue: queue.to_string(),
            kind: k.kind,
            message_id: k.message_id,
            reason: k.reason,
            dead_at: Some(k.dead_at),
        }
    }
}

/// The queues `service` consumes, whose dead letters it answers for.
pub fn queues_of(service: Service) -> Vec<&'static str> {
    topology::QUEUES
        .iter()
        .filter(|q| q.consumer == service.name())
        .map(|q| q.name)
        .collect()
}

/// The waiting dead letters of one of the service's queues.
pub async fn list(bus: &Bus, db: &Db, queue: &str) -> anyhow::Result<Vec<Letter>> {
    Ok(match bus {
        Bus::Rabbit(_) => bus
            .peek_dead_letters(queue)
            .await?
            .into_iter()
            .map(|l| Letter::from_broker(queue, l))
            .collect(),
        Bus::InProcess(_) => ticketer_db::dead_letters::waiting(db, queue)
            .await?
            .into_iter()
            .map(|k| Letter::from_kept(queue, k))
            .collect(),
    })
}

/// Sends a queue's waiting dead letters back to its consumer; how many.
pub async fn replay(bus: &Bus, db: &Db, queue: &str) -> anyhow::Result<usize> {
    Ok(match bus {
        Bus::Rabbit(_) => bus.replay_dead_letters(queue).await?,
        Bus::InProcess(_) => {
            let n = ticketer_db::dead_letters::replay(db, queue).await?;
            // This process's relay sends them on now, not at its next poll.
            db.outbox_written();
            n
        }
    })
}

#[derive(Clone)]
struct Letters {
    service: Service,
    bus: Bus,
    db: Db,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LetterList {
    pub items: Vec<Letter>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    pub queue: String,
    pub replayed: usize,
}

/// The administrator's routes for `service`, if it consumes any queue.
pub fn router(service: Service, bus: Bus, db: Db) -> Option<Router> {
    let segment = service.api_segment()?;
    if queues_of(service).is_empty() {
        return None;
    }
    Some(
        Router::new()
            .route(&format!("/api/v1/{segment}/dead-letters"), get(all))
            .route(
                &format!("/api/v1/{segment}/dead-letters/{{queue}}/replay"),
                post(send_again),
            )
            .with_state(Letters { service, bus, db }),
    )
}

#[utoipa::path(get, path = "/api/v1/{segment}/dead-letters", tag = "operations", security(("bearer" = [])),
    params(("segment" = String, Path, description = "the service's path: events, tickets, bookings, payments or notifications")),
    responses((status = 200, body = LetterList), (status = 403, body = ticketer_http::Problem)))]
async fn all(State(l): State<Letters>, caller: AuthUser) -> ApiResult<axum::Json<LetterList>> {
    caller.require(Role::Admin)?;
    let mut items = Vec::new();
    for queue in queues_of(l.service) {
        items.extend(list(&l.bus, &l.db, queue).await.map_err(ApiError::internal)?);
    }
    Ok(axum::Json(LetterList { items }))
}

#[utoipa::path(post, path = "/api/v1/{segment}/dead-letters/{queue}/replay", tag = "operations", security(("bearer" = [])),
    params(("segment" = String, Path, description = "the service's path"), ("queue" = String, Path, description = "one of the service's queues")),
    responses((status = 200, body = Replayed), (status = 403, body = ticketer_http::Problem), (status = 404, body = ticketer_http::Problem)))]
async fn send_again(
    State(l): State<Letters>,
    caller: AuthUser,
    Path(queue): Path<String>,
) -> ApiResult<axum::Json<Replayed>> {
    caller.require(Role::Admin)?;
    let Some(queue) = queues_of(l.service).into_iter().find(|q| *q == queue) else {
        return Err(ApiError::NotFound(format!(
            "{} consumes no queue `{queue}`",
            l.service.name()
        )));
    };
    let replayed = replay(&l.bus, &l.db, queue).await.map_err(ApiError::internal)?;
    tracing::info!(queue, replayed, "dead letters replayed by an administrator");
    Ok(axum::Json(Replayed {
        queue: queue.to_string(),
        replayed,
    }))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(all, send_again), components(schemas(Letter, LetterList, Replayed)))]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumer_answers_for_its_own_queues_only() {
        for q in topology::QUEUES {
            let owners: Vec<Service> = Service::ALL
                .into_iter()
                .filter(|s| queues_of(*s).contains(&q.name))
                .collect();
            assert_eq!(owners.len(), 1, "{}", q.name);
            assert_eq!(owners[0].name(), q.consumer);
        }
        assert!(queues_of(Service::Gateway).is_empty());
    }
}
