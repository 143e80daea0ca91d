//! The ticket service as the booking saga sees it: commands in on the bus,
//! answers out on the bus, availability over HTTP. Run on SQLite with the
//! in-process bus, and on PostgreSQL with RabbitMQ when their URLs are set.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use ticketer_bus::{
    topology::{BOOKING_EXCHANGE, EVENTS_EXCHANGE, PAYMENT_EXCHANGE, TICKET_OPERATIONS},
    Envelope, Outgoing,
};
use ticketer_config::Service;
use ticketer_http::Role;
use ticketer_testkit::{Backend, ServiceRig};
use uuid::Uuid;

/// The ticket service alone; the test stands where the booking service
/// would, on its queue.
async fn start(backend: Backend, vars: &[(&str, &str)]) -> Option<ServiceRig> {
    ServiceRig::start(
        Service::Ticket,
        backend,
        vars,
        &[TICKET_OPERATIONS],
        ticketer_ticket::Settings::from_env,
        ticketer_ticket::build,
    )
    .await
}

/// Waits for `n` answers about any of `bookings`.
async fn answers_about(rig: &ServiceRig, bookings: &HashSet<Uuid>, n: usize) -> Vec<(String, Value)> {
    let what = format!("{n} answers");
    rig.heard(&TICKET_OPERATIONS)
        .until(Duration::from_secs(60), &what, |all| {
            let got: Vec<_> = all
                .iter()
                .filter(|(_, p)| {
                    p["booking_id"]
                        .as_str()
                        .and_then(|b| Uuid::parse_str(b).ok())
                        .is_some_and(|b| bookings.contains(&b))
                })
                .cloned()
                .collect();
            (got.len() >= n).then_some(got)
        })
        .await
}

async fn send(rig: &ServiceRig, exchange: &str, kind: &str, payload: Value) {
    rig.send(exchange, Envelope::new(kind, &payload).unwrap()).await;
}

async fn availability(rig: &ServiceRig, event_id: i64) -> Option<Value> {
    let r = rig
        .http
        .get(format!("{}/api/v1/tickets/availability/{event_id}", rig.base))
        .send()
        .await
        .unwrap();
    if r.status().is_success() {
        Some(r.json().await.unwrap())
    } else {
        None
    }
}

async fn get_as(rig: &ServiceRig, path: &str, user: Uuid, role: Role) -> (u16, Value) {
    let r = rig
        .http
        .get(format!("{}{path}", rig.base))
        .bearer_auth(rig.token(&user.to_string(), vec![role]))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_on_sale(rig: &ServiceRig, event_id: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while availability(rig, event_id).await.is_none() {
        assert!(Instant::now() < deadline, "inventory never appeared");
        tokio::time::sleep(Duration::from_millis(25)).await;
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

async fn never_oversells(backend: Backend) {
    let Some(rig) = start(backend, &[]).await else {
        return;
    };
    send(&rig, EVENTS_EXCHANGE, "EventPublished", published(1, 100)).await;
    wait_on_sale(&rig, 1).await;

    // 300 buyers for 100 seats, all at once.
    let bookings: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
    let mut senders = Vec::new();
    for chunk in bookings.chunks(50) {
        let batch: Vec<Outgoing> = chunk
            .iter()
            .map(|b| {
                Outgoing::new(
                    BOOKING_EXCHANGE,
                    &Envelope::new("HoldTickets", &hold(*b, 1)).unwrap(),
                )
            })
            .collect();
        let bus = rig.bus.clone();
        senders.push(tokio::spawn(async move { bus.publish(&batch).await }));
    }
    for s in senders {
        s.await.unwrap().unwrap();
    }
    let all: HashSet<Uuid> = bookings.iter().copied().collect();
    let answers = answers_about(&rig, &all, 300).await;
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
    assert_eq!(counters(&availability(&rig, 1).await.unwrap()), (100, 0, 100, 0));

    // Ten pay, ten give up, one asks again, one asks for an unknown event.
    let winners: Vec<Uuid> = held
        .iter()
        .map(|p| Uuid::parse_str(p["booking_id"].as_str().unwrap()).unwrap())
        .collect();
    let (paying, rest) = winners.split_at(10);
    let (leaving, rest) = rest.split_at(10);
    for b in paying {
        send(
            &rig,
            BOOKING_EXCHANGE,
            "ReserveTickets",
            json!({"booking_id": b, "event_id": 1}),
        )
        .await;
    }
    for b in leaving {
        send(
            &rig,
            BOOKING_EXCHANGE,
            "ReleaseTickets",
            json!({"booking_id": b, "event_id": 1}),
        )
        .await;
    }
    send(&rig, BOOKING_EXCHANGE, "HoldTickets", hold(rest[0], 1)).await;
    let stranger = Uuid::new_v4();
    send(&rig, BOOKING_EXCHANGE, "HoldTickets", hold(stranger, 999)).await;
    let watched: HashSet<Uuid> = paying
        .iter()
        .chain(leaving)
        .chain([&rest[0], &stranger])
        .copied()
        .collect();
    // Each watched booking already had one answer (its hold), except the stranger.
    let answers = answers_about(&rig, &watched, 21 + 22).await;
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
    assert_eq!(counters(&availability(&rig, 1).await.unwrap()), (100, 10, 80, 10));

    // The ten released seats sell again, to ten of twenty new buyers.
    let late: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    let batch: Vec<Outgoing> = late
        .iter()
        .map(|b| {
            Outgoing::new(
                BOOKING_EXCHANGE,
                &Envelope::new("HoldTickets", &hold(*b, 1)).unwrap(),
            )
        })
        .collect();
    rig.bus.publish(&batch).await.unwrap();
    let late_set: HashSet<Uuid> = late.iter().copied().collect();
    let answers = answers_about(&rig, &late_set, 20).await;
    let reheld: HashSet<&str> = answers
        .iter()
        .filter(|(k, _)| k == "TicketsHeld")
        .flat_map(|(_, p)| p["ticket_ids"].as_array().unwrap())
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(reheld.len(), 10);
    assert!(reheld.is_subset(&seats), "released seats are the ones sold again");
    assert_eq!(counters(&availability(&rig, 1).await.unwrap()), (100, 0, 90, 10));
}

#[tokio::test]
async fn embedded_ticket_holds_never_oversell() {
    never_oversells(Backend::Embedded).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_ticket_holds_never_oversell() {
    never_oversells(Backend::Servers).await;
}

async fn holds_expire_and_the_seats_go_back_on_sale(backend: Backend) {
    let extra = [("TICKET_HOLD_TTL_SECONDS", "1"), ("TICKET_HOLD_SWEEP_MS", "100")];
    let Some(rig) = start(backend, &extra).await else {
        return;
    };
    send(&rig, EVENTS_EXCHANGE, "EventPublished", published(2, 5)).await;
    wait_on_sale(&rig, 2).await;
    let bookings: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for b in &bookings {
        send(&rig, BOOKING_EXCHANGE, "HoldTickets", hold(*b, 2)).await;
    }
    let all: HashSet<Uuid> = bookings.iter().copied().collect();
    answers_about(&rig, &all, 3).await;
    // Nobody pays: after the hold time every seat is back.
    let answers = answers_about(&rig, &all, 6).await;
    let expired: Vec<&Value> = answers
        .iter()
        .filter(|(k, p)| k == "TicketsReleased" && p["reason"] == "HOLD_EXPIRED")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(expired.len(), 3, "{answers:?}");
    assert_eq!(counters(&availability(&rig, 2).await.unwrap()), (5, 5, 0, 0));
    // Paying now is too late.
    send(
        &rig,
        BOOKING_EXCHANGE,
        "ReserveTickets",
        json!({"booking_id": bookings[0], "event_id": 2}),
    )
    .await;
    let answers = answers_about(&rig, &all, 7).await;
    assert!(answers
        .iter()
        .any(|(k, p)| k == "TicketsReserveFailed" && p["reason"] == "HOLD_EXPIRED"));
    assert_eq!(counters(&availability(&rig, 2).await.unwrap()), (5, 5, 0, 0));
}

#[tokio::test]
async fn embedded_holds_expire() {
    holds_expire_and_the_seats_go_back_on_sale(Backend::Embedded).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_holds_expire() {
    holds_expire_and_the_seats_go_back_on_sale(Backend::Servers).await;
}

async fn tickets_are_seen_by_their_holder_and_organizer(backend: Backend) {
    let Some(rig) = start(backend, &[]).await else {
        return;
    };
    let organizer = Uuid::new_v4();
    let mut event = published(3, 10);
    event["organizer"] = json!(organizer);
    send(&rig, EVENTS_EXCHANGE, "EventPublished", event).await;
    wait_on_sale(&rig, 3).await;
    let (customer, booking) = (Uuid::new_v4(), Uuid::new_v4());
    send(
        &rig,
        BOOKING_EXCHANGE,
        "HoldTickets",
        hold_for(booking, 3, customer),
    )
    .await;
    let answers = answers_about(&rig, &HashSet::from([booking]), 1).await;
    let ids = answers[0].1["ticket_ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 2);

    let (status, mine) = get_as(&rig, "/api/v1/tickets/mine", customer, Role::Customer).await;
    assert_eq!((status, mine["total"].as_i64()), (200, Some(2)));
    assert!(mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "HELD"));
    let one = format!("/api/v1/tickets/{}", ids[0].as_str().unwrap());
    assert_eq!(get_as(&rig, &one, customer, Role::Customer).await.0, 200);
    assert_eq!(get_as(&rig, &one, organizer, Role::Organizer).await.0, 200);
    assert_eq!(get_as(&rig, &one, Uuid::new_v4(), Role::Customer).await.0, 403);
    let (status, list) = get_as(&rig, "/api/v1/tickets?event_id=3", organizer, Role::Organizer).await;
    assert_eq!((status, list["total"].as_i64()), (200, Some(2)));
    assert_eq!(
        get_as(
            &rig,
            "/api/v1/tickets?event_id=3",
            Uuid::new_v4(),
            Role::Organizer
        )
        .await
        .0,
        403
    );
    assert_eq!(
        get_as(&rig, "/api/v1/tickets?event_id=3", customer, Role::Customer)
            .await
            .0,
        403
    );
    assert_eq!(
        get_as(&rig, "/api/v1/tickets?event_id=3", Uuid::new_v4(), Role::Admin)
            .await
            .0,
        200
    );
    let missing = format!("/api/v1/tickets/{}", Uuid::new_v4());
    assert_eq!(get_as(&rig, &missing, customer, Role::Customer).await.0, 404);
}

#[tokio::test]
async fn embedded_ticket_visibility() {
    tickets_are_seen_by_their_holder_and_organizer(Backend::Embedded).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_ticket_visibility() {
    tickets_are_seen_by_their_holder_and_organizer(Backend::Servers).await;
}

async fn paid(rig: &ServiceRig, booking: Uuid) {
    let settled = json!({"booking_id": booking, "payment_id": Uuid::new_v4(), "amount": "12.50",
                         "currency": "EUR"});
    send(rig, PAYMENT_EXCHANGE, "PaymentSucceeded", settled).await;
}

async fn wait_for_counters(rig: &ServiceRig, event_id: i64, want: (i64, i64, i64, i64)) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = counters(&availability(rig, event_id).await.unwrap());
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "counters stayed {now:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The payment's own news sells the booking's hold, with no ReserveTickets
/// and no answer (the saga confirmed on the same news); only a sale that
/// cannot be made is answered. Duplicates change nothing, and news about a
/// booking with no tickets here is ignored.
async fn a_payment_sells_its_hold_and_is_answered_only_when_it_cannot(backend: Backend) {
    // No sweep during the test: the payment itself finds the hold expired.
    let extra = [
        ("TICKET_HOLD_TTL_SECONDS", "3"),
        ("TICKET_HOLD_SWEEP_MS", "600000"),
    ];
    let Some(rig) = start(backend, &extra).await else {
        return;
    };
    send(&rig, EVENTS_EXCHANGE, "EventPublished", published(3, 5)).await;
    wait_on_sale(&rig, 3).await;
    let (early, late, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let all: HashSet<Uuid> = [early, late, stranger].into();
    send(&rig, BOOKING_EXCHANGE, "HoldTickets", hold(early, 3)).await;
    send(&rig, BOOKING_EXCHANGE, "HoldTickets", hold(late, 3)).await;
    answers_about(&rig, &all, 2).await;
    wait_for_counters(&rig, 3, (5, 3, 2, 0)).await;

    paid(&rig, early).await;
    wait_for_counters(&rig, 3, (5, 3, 1, 1)).await;

    // The other hold runs out before its payment's news arrives.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    paid(&rig, late).await;
    paid(&rig, stranger).await;
    let answers = answers_about(&rig, &all, 3).await;
    assert_eq!(answers[2].0, "TicketsReserveFailed", "{answers:?}");
    assert_eq!(answers[2].1["booking_id"], json!(late));
    assert_eq!(answers[2].1["reason"], "HOLD_EXPIRED");
    wait_for_counters(&rig, 3, (5, 4, 0, 1)).await;

    // The news again, then the saga's own ask: only the ask is answered.
    paid(&rig, early).await;
    send(
        &rig,
        BOOKING_EXCHANGE,
        "ReserveTickets",
        json!({"booking_id": early, "event_id": 3}),
    )
    .await;
    let answers = answers_about(&rig, &all, 4).await;
    assert_eq!(answers[3].0, "TicketsReserved", "{answers:?}");
    assert_eq!(answers[3].1["booking_id"], json!(early));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kinds: Vec<String> = answers_about(&rig, &all, 4)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        kinds,
        [
            "TicketsHeld",
            "TicketsHeld",
            "TicketsReserveFailed",
            "TicketsReserved"
        ]
    );
    assert_eq!(counters(&availability(&rig, 3).await.unwrap()), (5, 4, 0, 1));
}

#[tokio::test]
async fn embedded_a_payment_sells_its_hold() {
    a_payment_sells_its_hold_and_is_answered_only_when_it_cannot(Backend::Embedded).await;
}

#[tokio::test]
#[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
async fn postgres_rabbitmq_a_payment_sells_its_hold() {
    a_payment_sells_its_hold_and_is_answered_only_when_it_cannot(Backend::Servers).await;
}
