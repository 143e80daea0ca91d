//! The outbox relay on PostgreSQL, pipelined.
//!
//! Waiting for the broker's confirms before reading the next batch put one
//! confirm round trip (plus a select, an update and a commit) between every
//! batch: measured in a flash sale, a message waited 20-60 ms in the outbox,
//! on each of the seven hops of a booking. Here the relay sends a batch and
//! goes on reading while a second task awaits the confirms and deletes the
//! rows, so a committed message leaves within a few milliseconds.
//!
//! Without row locks held across the publish, two relays of the same
//! service would send everything twice; so one replica leads, holding a
//! session advisory lock, and the others wait to take over. The leader
//! reads past a cursor (the highest id it has sent). Ids are handed out at
//! insert and transactions commit in any order, so an id below the cursor
//! can still appear: ids skipped over are remembered for a while and asked
//! for again on every pass, and a slow sweep catches anything later still.
//! A row may be sent twice (a failed confirm, a new leader): consumers
//! deduplicate. It is never skipped for good.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use sqlx::pool::PoolConnection;
use ticketer_bus::{Bus, Confirms};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{outbox::OutboxRelay, placeholders, Any, Db, DbError, Row};

/// How long a skipped id is asked for again before the sweep takes over.
const GAP_PATIENCE: Duration = Duration::from_secs(10);
/// How often everything unpublished below the cursor is looked at.
const SWEEP: Duration = Duration::from_secs(5);
/// Ids skipped at most in one jump of the cursor that are remembered as
/// gaps; a wider jump is left to the sweep.
const GAPS_PER_JUMP: usize = 1_000;
/// How far below the last id handed out a leader starts: fewer than the
/// gaps one pass asks for again.
const START_WINDOW: i64 = 256;
/// Gaps asked for again in one pass.
const GAPS_PER_PASS: usize = 500;
/// Batches sent and not yet confirmed; more holds the reader back.
const IN_FLIGHT: usize = 16;

/// Where a new leader's cursor starts (see `Reader::relay`): below the
/// oldest unpublished row, and `$1` ids below the last one handed out, so
/// that a transaction that took one of those and commits later is a gap,
/// asked for at once, not left to the sweep. (Rows stamped published by
/// earlier versions are never read: they are not unpublished.)
const START: &str = "SELECT COALESCE(LEAST(
     (SELECT MIN(id) - 1 FROM outbox WHERE published_at IS NULL),
     pg_sequence_last_value(pg_get_serial_sequence('outbox', 'id')::regclass) - $1), 0)";

/// Ids sent and not yet deleted, shared by the reader and the confirmer.
type InFlight = Arc<Mutex<HashSet<i64>>>;

pub(crate) async fn run(db: Db, bus: Bus, batch_size: usize, poll: Duration, shutdown: CancellationToken) {
    loop {
        let leader = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = lead(&db) => l,
        };
        match leader {
            Ok(Some(lock)) => {
                tracing::debug!("leading the outbox relay");
                let reader = Reader::new(db.clone(), bus.clone(), batch_size, poll);
                if let Err(e) = reader.relay(lock, &shutdown).await {
                    tracing::warn!(error = %e, "outbox relay stopped; will lead again");
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "outbox relay cannot reach the database"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The leader's lock: held by this connection for as long as it lives.
async fn lead(db: &Db) -> Result<Option<PoolConnection<Any>>, DbError> {
    let mut conn = db.pool().acquire().await?;
    let (won,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(crate::locks::OUTBOX_RELAY)
        .fetch_one(&mut *conn)
        .await?;
    Ok(won.then_some(conn))
}

struct Reader {
    db: Db,
    bus: Bus,
    batch_size: usize,
    poll: Duration,
    /// The highest id read.
    cursor: i64,
    /// Ids skipped over, and since when.
    gaps: BTreeMap<i64, Instant>,
    in_flight: InFlight,
    /// The lowest id whose confirm failed, to read again from; i64::MAX: none.
    rewind: Arc<AtomicI64>,
}

impl Reader {
    fn new(db: Db, bus: Bus, batch_size: usize, poll: Duration) -> Self {
        Reader {
            db,
            bus,
            batch_size,
            poll,
            cursor: 0,
            gaps: BTreeMap::new(),
            in_flight: InFlight::default(),
            rewind: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }

    async fn relay(
        mut self,
        mut lock: PoolConnection<Any>,
        shutdown: &CancellationToken,
    ) -> Result<(), DbError> {
        // Anything unpublished above the start is read, and ids missing
        // there (still uncommitted) become gaps. Published rows are
        // deleted, so the start follows the sequence (from 0, every id
        // ever used would be a gap).
        let (start,): (i64,) = sqlx::query_as(START)
            .bind(START_WINDOW)
            .fetch_one(self.db.pool())
            .await?;
        self.cursor = start;
        let (to_confirm, confirming) = mpsc::channel(IN_FLIGHT);
        let confirmer = tokio::spawn(confirm(
            self.db.clone(),
            confirming,
            self.in_flight.clone(),
            self.rewind.clone(),
        ));
        let signal = self.db.outbox_signal();
        let mut swept = Instant::now();
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            let rewind = self.rewind.swap(i64::MAX, Ordering::SeqCst);
            if rewind != i64::MAX {
                self.cursor = self.cursor.min(rewind - 1);
            }
            let sweep = swept.elapsed() >= SWEEP;
            if sweep {
                swept = Instant::now();
                // Still leading? The lock lives as long as its connection.
                if let Err(e) = sqlx::query("SELECT 1").execute(&mut *lock).await {
                    break Err(e.into());
                }
            }
            let full = match self.pass(sweep, &to_confirm).await {
                Ok(full) => full,
                Err(e) => break Err(e),
            };
            if full {
                continue;
            }
            // Everything committed so far has been read. A commit from now
            // on has left a permit on the signal (notify_one keeps one for
            // a relay that is not waiting yet), so waiting here misses
            // nothing; reading again at once found nothing new after almost
            // every commit (one wasted SELECT per consumer transaction).
            let wait = if self.gaps.is_empty() {
                self.poll
            } else {
                Duration::from_millis(5)
            };
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = signal.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        };
        drop(to_confirm);
        let _ = confirmer.await;
        result
    }

    /// Reads what is new (and what was skipped, or everything below the
    /// cursor when `sweep`) and sends it; true when the read came back
    /// full, so that more may be waiting.
    async fn pass(&mut self, sweep: bool, to_confirm: &mpsc::Sender<Sent>) -> Result<bool, DbError> {
        let gaps: Vec<i64> = self.gaps.keys().copied().take(GAPS_PER_PASS).collect();
        let below = if sweep {
            "id <= $1".to_string()
        } else if gaps.is_empty() {
            "FALSE".to_string()
        } else {
            format!("id IN ({})", placeholders(3, gaps.len()))
        };
        let sql = format!(
            "SELECT id, exchange, routing_key, body FROM outbox
             WHERE published_at IS NULL AND (id > $1 OR {below})
             ORDER BY id LIMIT $2"
        );
        let mut q = sqlx::query(&sql).bind(self.cursor).bind(self.batch_size as i64);
        if !sweep {
            for id in &gaps {
                q = q.bind(*id);
            }
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        let full = rows.len() >= self.batch_size;

        // Whatever was skipped between the cursor and what came back may
        // still commit; remember it.
        let now = Instant::now();
        let mut next = self.cursor;
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            self.gaps.remove(&id);
            if id > next {
                // Bounded: a wide jump (ids taken by rolled-back work, or a
                // rewind) is left to the sweep.
                for missing in (next + 1..id).take(GAPS_PER_JUMP) {
                    self.gaps.entry(missing).or_insert(now);
                }
                next = id;
            }
        }
        self.cursor = next;
        self.gaps.retain(|_, since| since.elapsed() < GAP_PATIENCE);

        let rows: Vec<_> = {
            let in_flight = self.in_flight.lock().expect("in-flight lock");
            rows.into_iter()
                .filter(|r| r.try_get::<i64, _>("id").is_ok_and(|id| !in_flight.contains(&id)))
                .collect()
        };
        let Some((ids, batch, spans)) = OutboxRelay::prepare(&self.db, &rows).await? else {
            return Ok(full);
        };
        if batch.is_empty() {
            return Ok(full);
        }
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .extend(ids.iter().copied());
        match self.bus.send(batch).await {
            Ok(confirms) => {
                // Waits here when too many batches await their confirms.
                if to_confirm.send((ids, confirms, spans)).await.is_err() {
                    return Err(DbError::Bus(ticketer_bus::BusError::Disconnected));
                }
            }
            Err(e) => {
                {
                    let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                    for id in &ids {
                        in_flight.remove(id);
                    }
                }
                self.cursor = self.cursor.min(ids[0] - 1);
                tracing::warn!(error = %e, "outbox relay could not send; will retry");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(false);
            }
        }
        Ok(full)
    }
}

/// A sent batch: its rows' ids, the broker's confirms, and the messages'
/// publish spans, which end once confirmed.
type Sent = (Vec<i64>, Confirms, Vec<tracing::Span>);

/// Awaits each sent batch's confirms in order and deletes the confirmed
/// rows, several batches per statement when they are ready together.
async fn confirm(db: Db, mut confirming: mpsc::Receiver<Sent>, in_flight: InFlight, rewind: Arc<AtomicI64>) {
    while let Some(first) = confirming.recv().await {
        let mut ready = vec![first];
        while let Ok(more) = confirming.try_recv() {
            ready.push(more);
        }
        let mut confirmed = Vec::new();
        // Each message's publish span ends once the broker confirmed it.
        for (ids, confirms, _spans) in ready {
            match confirms.await {
                Ok(()) => confirmed.extend(ids),
                Err(e) => {
                    tracing::warn!(error = %e, "the broker did not confirm a batch; sending it again");
                    let mut flying = in_flight.lock().expect("in-flight lock");
                    for id in &ids {
                        flying.remove(id);
                    }
                    rewind.fetch_min(ids[0], Ordering::SeqCst);
                }
            }
        }
        for chunk in confirmed.chunks(1_000) {
            let retired = async {
                let mut conn = db.pool().acquire().await?;
                OutboxRelay::retire_counted(&db, &mut conn, chunk).await
            }
            .await;
            if let Err(e) = retired {
                // Published but not deleted: sent again later, deduplicated.
                tracing::warn!(error = %e, "could not delete published outbox rows");
            }
        }
        let mut flying = in_flight.lock().expect("in-flight lock");
        for id in &confirmed {
            flying.remove(id);
        }
    }
}
