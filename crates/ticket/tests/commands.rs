//! The ticket service as the booking saga sees it: commands in on the bus,
//! answers out on the bus, availability over HTTP. Run on SQLite with the
//! in-process bus, and on PostgreSQL with RabbitMQ when their URLs are set.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use ticketer_auth::keys::SigningKey;
use ticketer_bus::{
    testing::TestVhost,
    topology::{BOOKING_EXCHANGE, EVENTS_EXCHANGE, TICKET_OPERATIONS},
    BatchHandler, Bus, Envelope, HandleError, Outgoing,
};
use ticketer_config::{Env, InfraConfig, Service};
use ticketer_db::testing::TestDatabase;
use ticketer_http::{Claims, Role, ServiceParts};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Collects the ticket service's answers by kind.
#[derive(Default)]
struct Answers(Mutex<Vec<(String, Value)>>);

#[async_trait::async_trait]
impl BatchHandler for Answers {
    async fn handle_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        let mut all = self.0.lock().unwrap();
        all.extend(batch.iter().map(|m| (m.kind.clone(), m.payload.clone())));
        Ok(())
    }
}

impl Answers {
    fn for_bookings(&self, bookings: &HashSet<Uuid>) -> Vec<(String, Value)> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(_, p)| {
                p["booking_id"]
                    .as_str()
                    .and_then(|b| Uuid::parse_str(b).ok())
                    .is_some_and(|b| bookings.contains(&b))
            })
            .cloned()
            .collect()
    }

    async fn wait_for(&self, bookings: &HashSet<Uuid>, n: usize) -> Vec<(String, Value)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.for_bookings(bookings);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} answers arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

struct Rig {
    bus: Bus,
    key: SigningKey,
    base: String,
    answers: Arc<Answers>,
    shutdown: CancellationToken,
    _db: TestDatabase,
    _vhost: Option<TestVhost>,
    _data: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Rig {
    async fn start(real: bool, extra: &[(&str, &str)]) -> Option<Rig> {
        let (db, bus, vhost) = if real {
            let (Some(pg), Some(amqp)) = (
                ticketer_db::testing::postgres_url(),
                ticketer_bus::testing::amqp_url(),
            ) else {
                ticketer_config::skip_test(
                    "ticket commands on PostgreSQL/RabbitMQ",
                    "TICKETER_TEST_POSTGRES_URL and TICKETER_TEST_AMQP_URL",
                );
                return None;
            };
            let vhost = TestVhost::create(&amqp).unwrap();
            let bus = Bus::connect(Some(&vhost.url)).await.unwrap();
            (
                TestDatabase::postgres(&pg, "ticket").await.unwrap(),
                bus,
                Some(vhost),
            )
        } else {
            (TestDatabase::sqlite(), Bus::in_process(), None)
        };
        let data = tempfile::tempdir().unwrap();
        let mut vars = HashMap::from([
            ("TICKET_DATABASE_URL".to_string(), db.url.clone()),
            ("TICKET_OUTBOX_POLL_MS".to_string(), "20".to_string()),
        ]);
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env = Env::from_map(Service::Ticket, vars);
        let infra = InfraConfig::from_env(Service::Ticket, &env, data.path().to_path_buf()).unwrap();
        let shutdown = CancellationToken::new();
        let answers = Arc::new(Answers::default());
        // The test stands where the booking service would: on its queue.
        let sub = TICKET_OPERATIONS.subscription();
        bus.subscribe(sub, answers.clone(), shutdown.clone())
            .await
            .unwrap();
        let key = SigningKey::from_pem(&SigningKey::generate_pem()).unwrap();
        let parts = ServiceParts {
            db: db.connect().await.unwrap(),
            bus: bus.clone(),
            cache: Some(ticketer_cache::Cache::memory()),
            verifier: key.verifier("ticketer-auth"),
        };
        let listener = ticketer_http::bind("127.0.0.1", 0).await.unwrap();
        let app = ticketer_ticket::build(&infra, parts, listener, shutdown.clone())
            .await
            .unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        Some(Rig {
            bus,
            key,
            base,
            answers,
            shutdown,
            _db: db,
            _vhost: vhost,
            _data: data,
        })
    }

    async fn send(&self, exchange: &str, kind: &str, payload: Value) {
        let msg = Outgoing::new(exchange, &Envelope::new(kind, &payload));
        self.bus.publish(&[msg]).await.unwrap();
    }

    async fn availability(&self, event_id: i64) -> Option<Value> {
        let r = reqwest::get(format!("{}/api/v1/tickets/availability/{event_id}", self.base))
            .await
            .unwrap();
        if r.status().is_success() {
            Some(r.json().await.unwrap())
        } else {
            None
        }
    }

    fn token(&self, user: Uuid, role: Role) -> String {
        let now = chrono::Utc::now().timestamp();
        self.key.sign(&Claims {
            sub: user.to_string(),
            email: "t@example.com".into(),
            roles: vec![role],
            iat: now,
            exp: now + 300,
            iss: "ticketer-auth".into(),
            nbf: None,
        })
    }

    async fn get_as(&self, path: &str, user: Uuid, role: Role) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token(user, role))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn wait_on_sale(&self, event_id: i64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.availability(event_id).await.is_none() {
            assert!(Instant::now() < deadline, "inventory never appeared");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn published(event_id: i64, capacity: i64) -> Value {
    json!({
        "event_id": event_id, "event_name": "Flash", "category": "Music", "location": "Here",
        "event_date": "2031-01-01", "start_time": "18:00", "end_time": "20:00",
        "ticket_capacity": capacity, "ticket_price": "12.50", "currency": "EUR",
        "organizer": Uuid::nil(), "status": "PUBLISHED", "version": 2
    })
}

fn hold_for(booking: Uuid, event_id: i64, customer: Uuid) -> Value {
    json!({"booking_id": booking, "event_id": event_id, "customer_id": customer, "quantity": 2})
}

fn hold(booking: Uuid, event_id: i64) -> Value {
    json!({"booking_id": booking, "event_id": event_id, "customer_id": Uuid::new_v4(), "quantity": 1})
}

fn counters(v: &Value) -> (i64, i64, i64, i64) {
    let n = |k: &str| v[k].as_i64().unwrap();
    (n("capacity"), n("available"), n("held"), n("sold"))
}

async fn never_oversells(real: bool) {
    let Some(rig) = Rig::start(real, &[]).await else {
        return;
    };
    rig.send(EVENTS_EXCHANGE, "EventPublished", published(1, 100))
        .await;
    rig.wait_on_sale(1).await;

    // 300 buyers for 100 seats, all at once.
    let bookings: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
    let mut senders = Vec::new();
    for chunk in bookings.chunks(50) {
        let batch: Vec<Outgoing> = chunk
            .iter()
            .map(|b| Outgoing::new(BOOKING_EXCHANGE, &Envelope::new("HoldTickets", &hold(*b, 1))))
            .collect();
        let bus = rig.bus.clone();
        senders.push(tokio::spawn(async move { bus.publish(&batch).await }));
    }
    for s in senders {
        s.await.unwrap().unwrap();
    }
    let all: HashSet<Uuid> = bookings.iter().copied().collect();
    let answers = rig.answers.wait_for(&all, 300).await;
    let held: Vec<&Value> = answers
        .iter()
        .filter(|(k, _)| k == "TicketsHeld")
        .map(|(_, p)| p)
        .collect();
    let failed: Vec<&Value> = answers
        .iter()
        .filter(|(k, _)| k == "TicketsHoldFailed")
        .map(|(_, p)| p)
        .collect();
    assert_eq!((held.len(), failed.len()), (100, 200));
    assert!(failed.iter().all(|p| p["reason"] == "SOLD_OUT"));
    let seats: HashSet<&str> = held
        .iter()
        .flat_map(|p| p["ticket_ids"].as_array().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(seats.len(), 100, "a seat was handed out twice");
    assert!(held
        .iter()
        .all(|p| p["amount"] == "12.50" && p["currency"] == "EUR"));
    assert_eq!(counters(&rig.availability(1).await.unwrap()), (100, 0, 100, 0));

    // Ten pay, ten give up, one asks again, one asks for an unknown event.
    let winners: Vec<Uuid> = held
        .iter()
        .map(|p| Uuid::parse_str(p["booking_id"].as_str().unwrap()).unwrap())
        .collect();
    let (paying, rest) = winners.split_at(10);
    let (leaving, rest) = rest.split_at(10);
    for b in paying {
        rig.send(
            BOOKING_EXCHANGE,
            "ReserveTickets",
            json!({"booking_id": b, "event_id": 1}),
        )
        .await;
    }
    for b in leaving {
        rig.send(
            BOOKING_EXCHANGE,
            "ReleaseTickets",
            json!({"booking_id": b, "event_id": 1}),
        )
        .await;
    }
    rig.send(BOOKING_EXCHANGE, "HoldTickets", hold(rest[0], 1)).await;
    let stranger = Uuid::new_v4();
    rig.send(BOOKING_EXCHANGE, "HoldTickets", hold(stranger, 999))
        .await;
    let watched: HashSet<Uuid> = paying
        .iter()
        .chain(leaving)
        .chain([&rest[0], &stranger])
        .copied()
        .collect();
    // Each watched booking already had one answer (its hold), except the stranger.
    let answers = rig.answers.wait_for(&watched, 21 + 22).await;
    let count = |kind: &str| answers.iter().filter(|(k, _)| k == kind).count();
    assert_eq!(count("TicketsReserved"), 10);
    assert_eq!(count("TicketsReleased"), 10);
    let again: Vec<&Value> = answers
        .iter()
        .filter(|(k, p)| k == "TicketsHeld" && p["booking_id"] == json!(rest[0]))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(again.len(), 2);
    assert_eq!(
        again[0]["ticket_ids"], again[1]["ticket_ids"],
        "a repeated hold took more seats"
    );
    assert!(answers
        .iter()
        .any(|(k, p)| k == "TicketsHoldFailed" && p["reason"] == "EVENT_NOT_ON_SALE"));
    assert_eq!(counters(&rig.availability(1).await.unwrap()), (100, 10, 80, 10));

    // The ten released seats sell again, to ten of twenty new buyers.
    let late: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let batch: Vec<Outgoing> = late
        .iter()
        .map(|b| Outgoing::new(BOOKING_EXCHANGE, &Envelope::new("HoldTickets", &hold(*b, 1))))
        .collect();
    rig.bus.publish(&batch).await.unwrap();
    let late_set: HashSet<Uuid> = late.iter().copied().collect();
    let answers = rig.answers.wait_for(&late_set, 20).await;
    let reheld: HashSet<&str> = answers
        .iter()
        .filter(|(k, _)| k == "TicketsHeld")
        .flat_map(|(_, p)| p["ticket_ids"].as_array().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(reheld.len(), 10);
    assert!(reheld.is_subset(&seats), "released seats are the ones sold again");
    assert_eq!(counters(&rig.availability(1).await.unwrap()), (100, 0, 90, 10));
}

#[tokio::test]
async fn embedded_ticket_holds_never_oversell() {
    never_oversells(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_ticket_holds_never_oversell() {
    never_oversells(true).await;
}

async fn holds_expire_and_the_seats_go_back_on_sale(real: bool) {
    let extra = [("TICKET_HOLD_TTL_SECONDS", "1"), ("TICKET_HOLD_SWEEP_MS", "100")];
    let Some(rig) = Rig::start(real, &extra).await else {
        return;
    };
    rig.send(EVENTS_EXCHANGE, "EventPublished", published(2, 5)).await;
    rig.wait_on_sale(2).await;
    let bookings: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for b in &bookings {
        rig.send(BOOKING_EXCHANGE, "HoldTickets", hold(*b, 2)).await;
    }
    let all: HashSet<Uuid> = bookings.iter().copied().collect();
    rig.answers.wait_for(&all, 3).await;
    // Nobody pays: after the hold time every seat is back.
    let answers = rig.answers.wait_for(&all, 6).await;
    let expired: Vec<&Value> = answers
        .iter()
        .filter(|(k, p)| k == "TicketsReleased" && p["reason"] == "HOLD_EXPIRED")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(expired.len(), 3, "{answers:?}");
    assert_eq!(counters(&rig.availability(2).await.unwrap()), (5, 5, 0, 0));
    // Paying now is too late.
    rig.send(
        BOOKING_EXCHANGE,
        "ReserveTickets",
        json!({"booking_id": bookings[0], "event_id": 2}),
    )
    .await;
    let answers = rig.answers.wait_for(&all, 7).await;
    assert!(answers
        .iter()
        .any(|(k, p)| k == "TicketsReserveFailed" && p["reason"] == "HOLD_EXPIRED"));
    assert_eq!(counters(&rig.availability(2).await.unwrap()), (5, 5, 0, 0));
}

#[tokio::test]
async fn embedded_holds_expire() {
    holds_expire_and_the_seats_go_back_on_sale(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_holds_expire() {
    holds_expire_and_the_seats_go_back_on_sale(true).await;
}

async fn tickets_are_seen_by_their_holder_and_organizer(real: bool) {
    let Some(rig) = Rig::start(real, &[]).await else {
        return;
    };
    let organizer = Uuid::new_v4();
    let mut event = published(3, 10);
    event["organizer"] = json!(organizer);
    rig.send(EVENTS_EXCHANGE, "EventPublished", event).await;
    rig.wait_on_sale(3).await;
    let (customer, booking) = (Uuid::new_v4(), Uuid::new_v4());
    rig.send(BOOKING_EXCHANGE, "HoldTickets", hold_for(booking, 3, customer))
        .await;
    let answers = rig.answers.wait_for(&HashSet::from([booking]), 1).await;
    let ids = answers[0].1["ticket_ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 2);

    let (status, mine) = rig.get_as("/api/v1/tickets/mine", customer, Role::Customer).await;
    assert_eq!((status, mine["total"].as_i64()), (200, Some(2)));
    assert!(mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "HELD"));
    let one = format!("/api/v1/tickets/{}", ids[0].as_str().unwrap());
    assert_eq!(rig.get_as(&one, customer, Role::Customer).await.0, 200);
    assert_eq!(rig.get_as(&one, organizer, Role::Organizer).await.0, 200);
    assert_eq!(rig.get_as(&one, Uuid::new_v4(), Role::Customer).await.0, 403);
    let (status, list) = rig
        .get_as("/api/v1/tickets?event_id=3", organizer, Role::Organizer)
        .await;
    assert_eq!((status, list["total"].as_i64()), (200, Some(2)));
    assert_eq!(
        rig.get_as("/api/v1/tickets?event_id=3", Uuid::new_v4(), Role::Organizer)
            .await
            .0,
        403
    );
    assert_eq!(
        rig.get_as("/api/v1/tickets?event_id=3", customer, Role::Customer)
            .await
            .0,
        403
    );
    assert_eq!(
        rig.get_as("/api/v1/tickets?event_id=3", Uuid::new_v4(), Role::Admin)
            .await
            .0,
        200
    );
    let missing = format!("/api/v1/tickets/{}", Uuid::new_v4());
    assert_eq!(rig.get_as(&missing, customer, Role::Customer).await.0, 404);
}

#[tokio::test]
async fn embedded_ticket_visibility() {
    tickets_are_seen_by_their_holder_and_organizer(false).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_ticket_visibility() {
    tickets_are_seen_by_their_holder_and_organizer(true).await;
}
