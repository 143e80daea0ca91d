//! The chaos run's sale: buyers arrive while the nemesis works; then the
//! system drains and the services' records are read for the audit.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::AtomicUsize, Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use ticketer_bus::Bus;
use ticketer_config::{Env, Service};
use ticketer_db::Db;

use super::{
    all_ready, audit, inject, nemesis, shoppers, Audit, Config, Network, Processes, Records, Report,
    Resources, Shape,
};
use crate::bench::{
    client::Client,
    setup::{event_on_sale, Room},
};

/// How long an admitted buyer keeps their turn in a run with a waiting
/// room (the least the service allows, plus a little).
const ROOM_CLAIM_SECONDS: u64 = 15;

/// The sale itself, with the nemesis running beside it, then the drain
/// and the audit of every service's records.
pub(super) async fn sale(
    cfg: &Config,
    res: &Resources,
    shape: Shape,
    procs: &Arc<Processes>,
    network: Option<Arc<Network>>,
    env: &HashMap<String, String>,
) -> anyhow::Result<Report> {
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.run.concurrency.max(1))
            .timeout(Duration::from_secs(60))
            .build()?,
        base: "http://127.0.0.1:5000".into(),
        sent: AtomicUsize::new(0),
    });
    // A room's claims are kept short: a booking service killed mid-sale
    // leaves its admitted buyers' turns to lapse, and the queue waits that
    // long.
    let room = cfg.run.waiting_room.map(|at_once| Room {
        at_once,
        claim_seconds: Some(ROOM_CLAIM_SECONDS),
    });
    let (event_id, _) = event_on_sale(&client, &res.id, cfg.run.tickets, room).await?;
    let auth_env = Env::from_map(Service::Auth, env.clone());
    let tokens = crate::bench::provision_buyers(&auth_env, &cfg.work_dir, cfg.run.buyers).await?;
    let plan = nemesis::plan(cfg.run.seed, &shape);
    eprintln!(
        "chaos: event {event_id}, {} tickets, {} buyers; {} faults over {} s (seed {})",
        cfg.run.tickets,
        tokens.len(),
        plan.len(),
        cfg.run.seconds,
        cfg.run.seed
    );

    let started = Instant::now();
    let failed_faults = Arc::new(Mutex::new(Vec::new()));
    let mut faults = Vec::new();
    for planned in plan.clone() {
        let (procs, servers, network, failed) = (
            procs.clone(),
            cfg.servers.clone(),
            network.clone(),
            failed_faults.clone(),
        );
        faults.push(tokio::spawn(async move {
            tokio::time::sleep_until((started + Duration::from_millis(planned.at_ms)).into()).await;
            eprintln!(
                "chaos: {:>6.1} s {:?}",
                started.elapsed().as_secs_f64(),
                planned.fault
            );
            if let Err(e) = inject(&procs, servers.as_ref(), network.as_deref(), &planned.fault).await {
                eprintln!("chaos: {e:#}");
                failed.lock().expect("faults lock").push(format!("{e:#}"));
            }
        }));
    }
    let spread = Duration::from_secs(cfg.run.seconds) * 8 / 10;
    let shopping = shoppers::shop(
        client.clone(),
        tokens,
        event_id,
        spread,
        cfg.run.concurrency,
        cfg.run.seed,
        cfg.run.waiting_room.is_some(),
    )
    .await?;
    for f in faults {
        f.await?;
    }
    let nemesis_over = Instant::now();
    eprintln!(
        "chaos: nemesis done after {:.1} s; waiting for the system to settle",
        started.elapsed().as_secs_f64()
    );

    // Everything up again before the records are read.
    let recovered_after_s = all_ready(Duration::from_secs(120)).await?;
    let records = connect(res).await?;
    let drain_by = nemesis_over + Duration::from_secs(cfg.drain_s);
    let mut overdue = 0;
    let audit = loop {
        let a = audit::audit(&records, event_id, cfg.run.tickets).await?;
        // A sweep runs every second; the first few after the nemesis may
        // still be catching up with holds a paused service or database kept.
        if nemesis_over.elapsed() > Duration::from_secs(5) {
            let late = audit::overdue_holds(&records.ticket, event_id, Duration::from_secs(3)).await?;
            overdue = overdue.max(late);
        }
        if a.settled() || Instant::now() > drain_by {
            break a;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let drained_after_s = nemesis_over.elapsed().as_secs_f64();
    let availability_off_by = availability_off_by(&client, &records.ticket, event_id).await?;
    let audit = Audit {
        overdue_holds: overdue,
        availability_off_by,
        ..audit
    };
    for (_, db) in records.all {
        db.close().await;
    }

    let mut by_kind: BTreeMap<&'static str, usize> = BTreeMap::new();
    for p in &plan {
        *by_kind.entry(p.fault.kind()).or_default() += 1;
    }
    let outcomes = &shopping.outcomes;
    let faults_failed = failed_faults.lock().expect("faults lock").clone();
    Ok(Report {
        run: cfg.run.clone(),
        faults: by_kind,
        clean: audit.clean() && faults_failed.is_empty(),
        faults_failed,
        crash_restarts: procs.restarts.load(std::sync::atomic::Ordering::Relaxed),
        requests: client.sent.load(std::sync::atomic::Ordering::Relaxed),
        errors: shopping.errors,
        gave_up: outcomes.iter().filter(|o| o.status == "ERROR").count(),
        refused: outcomes.iter().filter(|o| o.status == "REFUSED").count(),
        left_pending: outcomes.iter().filter(|o| o.status == "PENDING").count(),
        cancels_asked: shopping.cancels_asked,
        cancels_unanswered: shopping.cancels_unanswered,
        recovered_after_s,
        drained_after_s,
        audit,
        logs: cfg.work_dir.display().to_string(),
        plan,
    })
}

/// How far the public availability figure is from the inventory counters,
/// once the gateway's and the cache's copies have had time to catch up
/// (each is at most a second old).
async fn availability_off_by(client: &Client, ticket: &Db, event_id: i64) -> anyhow::Result<i64> {
    let path = format!("/api/v1/tickets/availability/{event_id}");
    let mut off = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (available, held, sold) = audit::counters(ticket, event_id).await?;
        let shown = client
            .expect(reqwest::Method::GET, &path, None, None, 200)
            .await?;
        let figure = |k: &str| shown[k].as_i64().unwrap_or(-1);
        off = (figure("available") - available).abs()
            + (figure("held") - held).abs()
            + (figure("sold") - sold).abs();
        if off == 0 {
            break;
        }
    }
    Ok(off)
}

async fn connect(res: &Resources) -> anyhow::Result<Records> {
    let mut all = Vec::new();
    for svc in Service::BACKENDS {
        let db = Db::connect(&res.database_url(svc), 2)
            .await
            .with_context(|| format!("reading the {svc} database"))?;
        all.push((svc.name().to_string(), db));
    }
    let by_name = |name: &str| {
        all.iter()
            .find(|(n, _)| n == name)
            .map(|(_, db)| db.clone())
            .expect("every service database is connected")
    };
    Ok(Records {
        booking: by_name("booking"),
        ticket: by_name("ticket"),
        payment: by_name("payment"),
        notification: by_name("notification"),
        bus: Bus::connect(Some(&res.amqp_url())).await?,
        all,
    })
}
