//! An administrator sees what the ticket service's consumer gave up on and
//! sends it back, over HTTP: from the service's database on the in-process
//! bus, from RabbitMQ's `<queue>.dlq` in production.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ticketer_bus::{topology::BOOKING_EXCHANGE, Envelope};
use ticketer_config::Service;
use ticketer_http::Role;
use ticketer_testkit::{Backend, ServiceRig};

async fn letters(rig: &ServiceRig, token: &str) -> (u16, Value) {
    let r = rig
        .http
        .get(format!("{}/api/v1/tickets/dead-letters", rig.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

/// Waits until the list holds `n` letters.
async fn until_listed(rig: &ServiceRig, admin: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = letters(rig, admin).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n {
            return items;
        }
        assert!(Instant::now() < deadline, "{n} dead letters never listed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn listed_and_replayed(backend: Backend) {
    let Some(rig) = ServiceRig::start(
        Service::Ticket,
        backend,
        &[],
        &[],
        ticketer_ticket::Settings::from_env,
        ticketer_ticket::build,
    )
    .await
    else {
        return;
    };
    let admin = rig.token(&uuid::Uuid::new_v4().to_string(), vec![Role::Admin]);
    let customer = rig.token(&uuid::Uuid::new_v4().to_string(), vec![Role::Customer]);

    // A command no ticket service can apply: given up on at once.
    let poison = Envelope::new("HoldTickets", &json!({"booking_id": "not a uuid"})).unwrap();
    rig.send(BOOKING_EXCHANGE, poison.clone()).await;
    let items = until_listed(&rig, &admin, 1).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["queue"], "ticket.commands");
    assert_eq!(items[0]["type"], "HoldTickets");
    assert_eq!(items[0]["message_id"], poison.message_id.to_string());
    assert!(!items[0]["reason"].as_str().unwrap().is_empty());

    // Administrators only; only the service's own queues.
    assert_eq!(letters(&rig, &customer).await.0, 403);
    let replay = |queue: &str, token: &str| {
        rig.http
            .post(format!("{}/api/v1/tickets/dead-letters/{queue}/replay", rig.base))
            .bearer_auth(token.to_string())
            .send()
    };
    assert_eq!(replay("ticket.commands", &customer).await.unwrap().status(), 403);
    assert_eq!(replay("payment.commands", &admin).await.unwrap().status(), 404);

    // Sent back once: the consumer tries again, gives up again, and the
    // letter is listed once more (still poison), not lost.
    let r = replay("ticket.commands", &admin).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["replayed"], 1, "{body}");
    let again = until_listed(&rig, &admin, 1).await;
    assert_eq!(again[0]["message_id"], poison.message_id.to_string());
}

#[tokio::test]
async fn embedded_dead_letters_are_listed_and_replayed() {
    listed_and_replayed(Backend::Embedded).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_dead_letters_are_listed_and_replayed() {
    listed_and_replayed(Backend::Servers).await;
}
