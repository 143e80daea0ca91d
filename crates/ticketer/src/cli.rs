//! The command line: every way of running Ticketer, with its flags and
//! the environment variables they fall back to.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ticketer_config::Service;

#[derive(Parser)]
#[command(name = "ticketer", version, about = "Event ticketing that does not oversell")]
pub(crate) struct Cli {
    /// Where embedded data lives: SQLite files, the signing key, mail.
    #[arg(long, global = true, env = "TICKETER_DATA_DIR", default_value = "./data")]
    pub(crate) data_dir: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Every service in this process on its contract port (embedded by
    /// default: SQLite, in-process bus and cache; honours *_DATABASE_URL,
    /// AMQP_URL and REDIS_URL when set).
    Dev,
    /// One service, configured by environment variables.
    Serve {
        /// gateway, auth, events, notification, booking, ticket or payment.
        service: Service,
    },
    /// Applies database migrations for one service, or `all`.
    Migrate { service: String },
    /// Exits 0 if the service on this host answers /health/live on its
    /// port (`<PREFIX>PORT` or the contract's), 1 otherwise: the container
    /// image's HEALTHCHECK, which has no shell or curl.
    Health {
        /// The gateway (also what `ticketer dev` serves) by default.
        service: Option<Service>,
    },
    /// Load generators that check their results against the services' records.
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
    /// A flash sale on the production backend (every service its own
    /// process) while a seeded nemesis kills, pauses and restarts services
    /// and servers; then an audit of the services' records. Prints a JSON
    /// report as the last line; exits 1 unless the audit is clean.
    Chaos(ChaosArgs),
    /// Administrator accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Dead letters: the messages a queue's consumer gave up on (RabbitMQ's
    /// `<queue>.dlq` when AMQP_URL is set, else the consuming service's
    /// database).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(clap::Args)]
pub(crate) struct ChaosArgs {
    /// Draws the faults: the same seed, the same faults at the same times.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// How long faults are injected; buyers arrive over the first 80%.
    #[arg(long, default_value_t = 90)]
    pub(crate) seconds: u64,
    #[arg(long, default_value_t = 400)]
    pub(crate) tickets: i64,
    #[arg(long, default_value_t = 2_000)]
    pub(crate) buyers: usize,
    /// At most this many buyers in flight; buyers arrive on schedule
    /// whatever the others do, up to this cap.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// The services' hold TTL in seconds (short, so that holds expire in the run).
    #[arg(long, default_value_t = 15)]
    pub(crate) hold_ttl: u64,
    /// The services' payment deadline in seconds.
    #[arg(long, default_value_t = 10)]
    pub(crate) payment_timeout: u64,
    /// Seconds the system may take to settle after the nemesis (default:
    /// hold TTL + payment deadline + 60).
    #[arg(long)]
    pub(crate) drain: Option<u64>,
    /// Sells through a waiting room admitting this many buyers at once
    /// (claims of 15 s), every buyer joining it before booking.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) waiting_room: Option<u32>,
    /// Leave PostgreSQL, RabbitMQ and Redis alone.
    #[arg(long)]
    pub(crate) no_server_faults: bool,
    /// Leave the network between the services and their servers alone.
    #[arg(long)]
    pub(crate) no_network_faults: bool,
    /// Keep the run's databases and vhost.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Where logs and the signing key go (default: a new directory under the data dir).
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
    #[arg(
        long,
        env = "CHAOS_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub(crate) postgres_url: String,
    #[arg(
        long,
        env = "CHAOS_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672"
    )]
    pub(crate) amqp_url: String,
    #[arg(long, env = "CHAOS_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub(crate) redis_url: String,
    /// Shell command that restarts RabbitMQ (and returns once it is back).
    #[arg(
        long,
        env = "CHAOS_RESTART_RABBITMQ",
        default_value = "rabbitmqctl -q stop_app && rabbitmqctl -q start_app"
    )]
    pub(crate) restart_rabbitmq: String,
    /// Shell command that restarts PostgreSQL.
    #[arg(
        long,
        env = "CHAOS_RESTART_POSTGRES",
        default_value = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart -m fast"
    )]
    pub(crate) restart_postgres: String,
    #[arg(
        long,
        env = "CHAOS_STOP_REDIS",
        default_value = "redis-cli -h 127.0.0.1 -p 6379 shutdown nosave"
    )]
    pub(crate) stop_redis: String,
    #[arg(
        long,
        env = "CHAOS_START_REDIS",
        default_value = "mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log && until redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; do sleep 0.1; done"
    )]
    pub(crate) start_redis: String,
}

impl ChaosArgs {
    pub(crate) fn config(self, data_dir: &std::path::Path) -> anyhow::Result<ticketer::chaos::Config> {
        let work_dir = self.work_dir.unwrap_or_else(|| {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
            data_dir.join(format!("chaos-{stamp}-seed{}", self.seed))
        });
        Ok(ticketer::chaos::Config {
            run: ticketer::chaos::Run {
                seed: self.seed,
                seconds: self.seconds,
                tickets: self.tickets,
                buyers: self.buyers,
                concurrency: self.concurrency,
                hold_ttl_s: self.hold_ttl,
                payment_timeout_s: self.payment_timeout,
                waiting_room: self.waiting_room,
            },
            drain_s: self.drain.unwrap_or(self.hold_ttl + self.payment_timeout + 60),
            postgres_url: self.postgres_url,
            amqp_url: self.amqp_url,
            redis_url: self.redis_url,
            servers: (!self.no_server_faults).then_some(ticketer::chaos::ServerCommands {
                restart_rabbitmq: self.restart_rabbitmq,
                restart_postgres: self.restart_postgres,
                stop_redis: self.stop_redis,
                start_redis: self.start_redis,
            }),
            network: !self.no_network_faults,
            bin: std::env::current_exe().context("finding this binary")?,
            work_dir: std::path::absolute(work_dir)?,
            keep: self.keep,
        })
    }
}

#[derive(Subcommand)]
pub(crate) enum DlqCommand {
    /// Prints the waiting dead letters of a queue, one JSON line each.
    List { queue: String },
    /// Sends them back to the queue's consumer, once each.
    Replay { queue: String },
}

#[derive(Subcommand)]
pub(crate) enum BenchScenario {
    /// All buyers book at once through the gateway; prints progress on
    /// stderr and a JSON report as the last line of stdout.
    FlashSale {
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        gateway: String,
        /// A preset (pretix: 1,000 tickets, 5,000 buyers, 64 at once;
        /// standard: 10,000, 40,000, 500); the flags below override it.
        #[arg(long, value_enum)]
        scenario: Option<ticketer::bench::Scenario>,
        #[arg(long)]
        tickets: Option<i64>,
        #[arg(long)]
        buyers: Option<usize>,
        #[arg(long)]
        concurrency: Option<usize>,
        #[arg(long, default_value_t = 1)]
        tickets_per_booking: i64,
        /// How buyers are made: `direct` writes them into the auth database
        /// and signs their tokens with the service's key (operator access:
        /// the same --data-dir or AUTH_* variables as the server); `api`
        /// registers and logs in each through the gateway (two Argon2
        /// hashes per buyer).
        #[arg(long, value_enum, default_value = "direct")]
        provision: Provisioning,
        /// The server processes whose /metrics and /health/ready are read,
        /// as name=url pairs separated by commas; by default the contract
        /// ports on the gateway's host.
        #[arg(long)]
        service_urls: Option<String>,
        /// Also writes every buyer's outcome to this file, one CSV line
        /// each (when its request went out, what it got and when), for a
        /// closer look at where a sale's tail comes from.
        #[arg(long)]
        outcomes: Option<std::path::PathBuf>,
        /// Sells through a waiting room admitting this many buyers at once
        /// (opened by the bench's organizer): each buyer joins it, waits
        /// to be admitted, then books.
        #[arg(long)]
        waiting_room: Option<u32>,
    },
    /// Anonymous searches through the gateway over a catalogue of
    /// published events (created through the API first, if fewer are
    /// there); prints a JSON report.
    Search {
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        gateway: String,
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
    },
    /// An event with this many ticket holders is cancelled: how long the
    /// notification service takes to store and to send one email each
    /// (its own listener, worker and channel, in this process). Prints a
    /// JSON report.
    FanOut {
        #[arg(long, default_value_t = 10_000)]
        recipients: usize,
        /// A scratch PostgreSQL database for the run (emptied first is
        /// up to you; never a live service's); by default a new SQLite
        /// file under a temporary directory.
        #[arg(long)]
        database_url: Option<String>,
        /// Send over SMTP (lettre's URL forms) instead of writing `.eml`
        /// files under a temporary directory.
        #[arg(long)]
        smtp_url: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Provisioning {
    Direct,
    Api,
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// Creates an administrator, or grants ADMIN to an existing account.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, env = "TICKETER_ADMIN_PASSWORD")]
        password: String,
    },
}
