//! What the nemesis does and when: a plan drawn from a seed before the run,
//! so that a run that found something can be played again fault for fault.
//! No I/O here; `chaos::run` carries the plan out.

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;
use ticketer_config::Service;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL, then started again after `down_ms`.
    Kill { service: String, down_ms: u64 },
    /// SIGSTOP, then SIGCONT after `for_ms`: a process that hangs without
    /// dying, longer than holds and payment deadlines last.
    Pause { service: String, for_ms: u64 },
    /// The broker restarted: every connection and channel dropped.
    RestartRabbitmq,
    /// The database server restarted: every connection dropped.
    RestartPostgres,
    /// Redis stopped for `for_ms`, then started empty.
    StopRedis { for_ms: u64 },
    /// The service's links (to PostgreSQL and RabbitMQ, and from the
    /// gateway) add `delay_ms` to every chunk, each way.
    SlowNetwork {
        service: String,
        delay_ms: u64,
        for_ms: u64,
    },
    /// The service's links lose packets: one chunk in 20 waits a
    /// retransmission timeout.
    LossyNetwork { service: String, for_ms: u64 },
    /// The service cut off from PostgreSQL, RabbitMQ and the gateway.
    Partition { service: String, for_ms: u64 },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::RestartRabbitmq => "restart_rabbitmq",
            Fault::RestartPostgres => "restart_postgres",
            Fault::StopRedis { .. } => "stop_redis",
            Fault::SlowNetwork { .. } => "slow_network",
            Fault::LossyNetwork { .. } => "lossy_network",
            Fault::Partition { .. } => "partition",
        }
    }
}

/// A fault and when it starts, from the start of the sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub at_ms: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// What the plan is drawn for.
#[derive(Debug, Clone)]
pub struct Shape {
    /// How long faults are injected.
    pub run: Duration,
    /// A service is killed every `kill_every.0` to `kill_every.1`.
    pub kill_every: (Duration, Duration),
    /// How long the paused service stays stopped: longer than the hold TTL
    /// and the payment deadline, so both pass while it sleeps.
    pub pause_for: Duration,
    /// Restart RabbitMQ and PostgreSQL and stop Redis (the runner owns the
    /// machine's servers).
    pub servers: bool,
    /// Slow, lossy and cut links between a saga party and its servers.
    pub network: bool,
}

/// The services a pause is most telling for: the saga's three parties.
/// Also the services whose network is hurt (chaos/network.rs proxies
/// exactly these).
pub const SAGA_PARTIES: [Service; 3] = [Service::Booking, Service::Ticket, Service::Payment];

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The plan for `seed`: one pause early, the server faults spread through
/// the middle (never two at once), kills at random intervals throughout,
/// never of the service that is paused at the time.
pub fn plan(seed: u64, shape: &Shape) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let run = ms(shape.run);
    let mut faults = Vec::new();

    let paused = SAGA_PARTIES[rng.gen_range(0..SAGA_PARTIES.len())];
    let pause_at = run / 10 + rng.gen_range(0..=run / 20);
    let pause_for = ms(shape.pause_for);
    faults.push(Planned {
        at_ms: pause_at,
        fault: Fault::Pause {
            service: paused.name().into(),
            for_ms: pause_for,
        },
    });

    if shape.servers {
        // Each in its own tenth of the run, so one has passed before the
        // next begins and each is seen on its own.
        let redis_for = 3_000 + rng.gen_range(0..=4_000);
        let slots: [(u64, Fault); 3] = [
            (run * 3 / 10, Fault::RestartRabbitmq),
            (run * 5 / 10, Fault::RestartPostgres),
            (run * 7 / 10, Fault::StopRedis { for_ms: redis_for }),
        ];
        for (at, fault) in slots {
            faults.push(Planned {
                at_ms: at + rng.gen_range(0..=run / 20),
                fault,
            });
        }
    }

    if shape.network {
        let hurt = |rng: &mut StdRng| {
            SAGA_PARTIES[rng.gen_range(0..SAGA_PARTIES.len())]
                .name()
                .to_string()
        };
        let lasting = |rng: &mut StdRng| 4_000 + rng.gen_range(0..=4_000);
        let slow = Fault::SlowNetwork {
            service: hurt(&mut rng),
            delay_ms: 20 + rng.gen_range(0..=80),
            for_ms: lasting(&mut rng),
        };
        let lossy = Fault::LossyNetwork {
            service: hurt(&mut rng),
            for_ms: lasting(&mut rng),
        };
        let cut = Fault::Partition {
            service: hurt(&mut rng),
            for_ms: lasting(&mut rng),
        };
        for (at, fault) in [(run * 2 / 10, slow), (run * 4 / 10, lossy), (run * 6 / 10, cut)] {
            faults.push(Planned {
                at_ms: at + rng.gen_range(0..=run / 20),
                fault,
            });
        }
    }

    let (lo, hi) = (ms(shape.kill_every.0).max(1), ms(shape.kill_every.1).max(1));
    let mut at = rng.gen_range(lo..=hi.max(lo));
    while at + 1_000 < run {
        let down_ms = rng.gen_range(200..=2_000);
        let candidates: Vec<Service> = Service::ALL
            .into_iter()
            .filter(|s| {
                let overlaps_pause = at + down_ms >= pause_at && at <= pause_at + pause_for;
                !(*s == paused && overlaps_pause)
            })
            .collect();
        let service = candidates[rng.gen_range(0..candidates.len())];
        faults.push(Planned {
            at_ms: at,
            fault: Fault::Kill {
                service: service.name().into(),
                down_ms,
            },
        });
        at += rng.gen_range(lo..=hi.max(lo));
    }
    faults.sort_by_key(|f| f.at_ms);
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(servers: bool) -> Shape {
        Shape {
            run: Duration::from_secs(90),
            kill_every: (Duration::from_secs(2), Duration::from_secs(5)),
            pause_for: Duration::from_secs(30),
            servers,
            network: servers,
        }
    }

    fn count(plan: &[Planned], kind: &str) -> usize {
        plan.iter().filter(|p| p.fault.kind() == kind).count()
    }

    #[test]
    fn a_seed_gives_the_same_plan_every_time_and_another_seed_another() {
        assert_eq!(plan(7, &shape(true)), plan(7, &shape(true)));
        assert_ne!(plan(7, &shape(true)), plan(8, &shape(true)));
    }

    #[test]
    fn every_kind_of_fault_is_in_the_plan_once_or_often() {
        for seed in 0..200 {
            let p = plan(seed, &shape(true));
            assert_eq!(count(&p, "pause"), 1, "seed {seed}");
            assert_eq!(count(&p, "restart_rabbitmq"), 1, "seed {seed}");
            assert_eq!(count(&p, "restart_postgres"), 1, "seed {seed}");
            assert_eq!(count(&p, "stop_redis"), 1, "seed {seed}");
            for network in ["slow_network", "lossy_network", "partition"] {
                assert_eq!(count(&p, network), 1, "seed {seed}");
            }
            // 90 s at one kill every 2 to 5 s.
            let kills = count(&p, "kill");
            assert!((17..=45).contains(&kills), "seed {seed}: {kills} kills");
        }
    }

    #[test]
    fn without_server_and_network_faults_only_processes_are_hurt() {
        for seed in 0..50 {
            let p = plan(seed, &shape(false));
            assert!(p
                .iter()
                .all(|f| matches!(f.fault, Fault::Kill { .. } | Fault::Pause { .. })));
        }
    }

    #[test]
    fn the_plan_is_in_time_order_and_inside_the_run() {
        for seed in 0..200 {
            let p = plan(seed, &shape(true));
            assert!(p.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "seed {seed}");
            assert!(p.iter().all(|f| f.at_ms < 90_000), "seed {seed}");
        }
    }

    #[test]
    fn server_faults_never_overlap_one_another() {
        for seed in 0..200 {
            let p = plan(seed, &shape(true));
            let servers: Vec<&Planned> = p
                .iter()
                .filter(|f| {
                    matches!(
                        f.fault,
                        Fault::RestartRabbitmq | Fault::RestartPostgres | Fault::StopRedis { .. }
                    )
                })
                .collect();
            // A restart takes a few seconds; each starts at least 13.5 s
            // (a fifth of the run less its jitter) after the one before.
            for w in servers.windows(2) {
                assert!(w[1].at_ms - w[0].at_ms >= 13_500, "seed {seed}: {w:?}");
            }
        }
    }

    #[test]
    fn the_paused_service_is_a_saga_party_and_never_killed_while_paused() {
        for seed in 0..200 {
            let p = plan(seed, &shape(true));
            let (paused, from, to) = p
                .iter()
                .find_map(|f| match &f.fault {
                    Fault::Pause { service, for_ms } => Some((service.clone(), f.at_ms, f.at_ms + for_ms)),
                    _ => None,
                })
                .unwrap();
            assert!(["booking", "ticket", "payment"].contains(&paused.as_str()));
            assert_eq!(to - from, 30_000, "the pause lasts what was asked");
            for f in &p {
                if let Fault::Kill { service, down_ms } = &f.fault {
                    let overlaps = f.at_ms + down_ms >= from && f.at_ms <= to;
                    assert!(!(service == &paused && overlaps), "seed {seed}: {f:?}");
                }
            }
        }
    }

    #[test]
    fn network_faults_hurt_a_saga_party_for_a_few_seconds() {
        for seed in 0..200 {
            for f in plan(seed, &shape(true)) {
                let (service, for_ms) = match &f.fault {
                    Fault::SlowNetwork {
                        service,
                        delay_ms,
                        for_ms,
                    } => {
                        assert!((20..=100).contains(delay_ms), "seed {seed}: {f:?}");
                        (service, for_ms)
                    }
                    Fault::LossyNetwork { service, for_ms } | Fault::Partition { service, for_ms } => {
                        (service, for_ms)
                    }
                    _ => continue,
                };
                assert!(["booking", "ticket", "payment"].contains(&service.as_str()));
                assert!((4_000..=8_000).contains(for_ms), "seed {seed}: {f:?}");
            }
        }
    }

    #[test]
    fn every_service_gets_killed_over_enough_runs() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..20 {
            for f in plan(seed, &shape(false)) {
                if let Fault::Kill { service, .. } = f.fault {
                    seen.insert(service);
                }
            }
        }
        assert_eq!(seen.len(), Service::ALL.len());
    }
}
