//! The transactional outbox: a state change and the messages announcing it
//! commit together; the relay publishes committed messages in batches and
//! deletes them only after the broker confirmed them. A crash between
//! publishing and deleting means a duplicate (consumers deduplicate), never
//! a loss.
//!
//! Published rows used to be kept, stamped `published_at`, for a few days.
//! The stamp rewrote each row (its body too) and every index entry: in a
//! flash sale that cost PostgreSQL as much as writing the rows in the first
//! place (28 µs and 950 bytes of WAL a message each, pg_stat_statements),
//! for a copy nothing read. A deletion only marks the row. The messages'
//! history is in the traces and the consumers' inboxes; `published_at` is
//! NULL on every row a relay still has to send, and rows stamped by earlier
//! versions are pruned by the janitor.

use std::time::Duration;

use ticketer_bus::{topology::answered_key, Bus, Envelope, Outgoing};
use ticketer_contract::Message;
use tokio_util::sync::CancellationToken;

use crate::{
    lists::{any_of, array_literal, probed, Binds},
    time, value_rows, AnyConnection, Db, DbError, Dialect, Row,
};

/// A message for the outbox: its envelope and the exchange it goes to.
/// A message that could not be put in JSON is carried as the reason, and
/// [`enqueue`] refuses it, so the transaction it belongs to fails whole.
#[derive(Debug, Clone)]
pub struct Outbound {
    exchange: &'static str,
    envelope: Result<Envelope, String>,
}

impl Outbound {
    /// A contract message, to its producer's exchange.
    pub fn new<M: Message>(msg: &M) -> Self {
        Outbound {
            exchange: M::EXCHANGE,
            envelope: Envelope::of(msg).map_err(|e| format!("{}: {e}", M::KIND)),
        }
    }

    /// An envelope built by hand (tests, replays of dead letters).
    pub fn raw(exchange: &'static str, envelope: Envelope) -> Self {
        Outbound {
            exchange,
            envelope: Ok(envelope),
        }
    }

    /// Places it in a flow, e.g. the booking it belongs to.
    pub fn correlated(mut self, correlation_id: uuid::Uuid) -> Self {
        self.envelope = self.envelope.map(|e| e.correlated(correlation_id));
        self
    }

    /// Marks it as a consequence of `cause`: same flow, same trace.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        self.envelope = self.envelope.map(|e| e.caused_by(cause));
        self
    }

    /// The message as it will be sent (same id), unless it could not be
    /// encoded ([`enqueue`] refuses it then).
    pub fn envelope(&self) -> Option<&Envelope> {
        self.envelope.as_ref().ok()
    }
}

/// Adds `messages` to the outbox inside the caller's transaction, in one
/// statement and in their order.
pub async fn enqueue(conn: &mut AnyConnection, messages: &[Outbound]) -> Result<(), DbError> {
    if messages.is_empty() {
        return Ok(());
    }
    let now = time::now();
    let envelopes = messages
        .iter()
        .map(|m| m.envelope.as_ref().map_err(|e| DbError::Encode(e.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let body = |e: &Envelope| String::from_utf8(e.to_bytes()).expect("JSON is UTF-8");
    let keys = routing_keys(&envelopes);
    if Dialect::of(conn) == Dialect::Postgres {
        // One text for every batch size (see `lists`); the ids follow the
        // messages' order.
        sqlx::query(
            "INSERT INTO outbox (message_id, exchange, routing_key, body, created_at)
             SELECT m, e, k, b, $5
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS r(m, e, k, b, n)
             ORDER BY n",
        )
        .bind(array_literal(envelopes.iter().map(|e| e.message_id)))
        .bind(array_literal(messages.iter().map(|m| m.exchange)))
        .bind(array_literal(&keys))
        .bind(array_literal(envelopes.iter().map(|e| body(e))))
        .bind(&now)
        .execute(conn)
        .await?;
        tell(&envelopes, &keys);
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO outbox (message_id, exchange, routing_key, body, created_at) VALUES {}",
        value_rows(messages.len(), 5)
    );
    let mut q = sqlx::query(&sql);
    for ((m, envelope), key) in messages.iter().zip(&envelopes).zip(&keys) {
        q = q
            .bind(envelope.message_id.to_string())
            .bind(m.exchange)
            .bind(key)
            .bind(body(envelope))
            .bind(&now);
    }
    q.execute(conn).await?;
    tell(&envelopes, &keys);
    Ok(())
}

/// While [`answering`] runs in this task: the kinds it answers with, and
/// what [`enqueue`] wrote of them.
struct Answering {
    kinds: &'static [&'static str],
    told: Vec<Envelope>,
}

tokio::task_local! {
    static ANSWERING: std::cell::RefCell<Answering>;
}

/// Each message's routing key: its kind, or its answered key if this task
/// answers with it (see [`answering`]).
fn routing_keys(envelopes: &[&Envelope]) -> Vec<String> {
    let answered: &[&str] = ANSWERING.try_with(|a| a.borrow().kinds).unwrap_or_default();
    envelopes
        .iter()
        .map(|e| match answered.contains(&e.kind.as_str()) {
            true => answered_key(&e.kind),
            false => e.kind.clone(),
        })
        .collect()
}

fn tell(envelopes: &[&Envelope], keys: &[String]) {
    let _ = ANSWERING.try_with(|a| {
        let told = &mut a.borrow_mut().told;
        for (e, key) in envelopes.iter().zip(keys) {
            if *key != e.kind {
                told.push((*e).clone());
            }
        }
    });
}

/// Runs `work` for a service asked over HTTP that answers with messages
/// it also sends, and gives, beside `work`'s outcome, the messages of
/// `kinds` it wrote to the outbox in this task. They keep their ids, so a
/// consumer that hears them both ways applies them once, and they are
/// published under their answered routing key (`<kind>.answered`): a
/// queue of the asking service, which gets the answer, does not bind that
/// key, and is spared the copy. Should the answer not reach it, the asker
/// must ask again so as to hear a new message. Only what `work`'s
/// committed transactions wrote is true: use the list when `work`
/// succeeded and every transaction it opened committed.
pub async fn answering<F: std::future::Future>(
    kinds: &'static [&'static str],
    work: F,
) -> (F::Output, Vec<Envelope>) {
    let scope = Answering {
        kinds,
        told: Vec::new(),
    };
    ANSWERING
        .scope(std::cell::RefCell::new(scope), async move {
            let outcome = work.await;
            (
                outcome,
                ANSWERING.with(|a| std::mem::take(&mut a.borrow_mut().told)),
            )
        })
        .await
}

/// Enqueues the answer to `cause` (same flow, same trace) inside a
/// consumer's transaction.
pub async fn reply<M: Message>(
    conn: &mut AnyConnection,
    cause: &Envelope,
    msg: &M,
) -> Result<(), ticketer_bus::HandleError> {
    Ok(enqueue(conn, &[Outbound::new(msg).caused_by(cause)]).await?)
}

/// Outbox row ids and the messages they hold.
/// The rows' ids, their messages, and each message's publish span (kept
/// open until the broker has the message).
type Pending = (Vec<i64>, Vec<Outgoing>, Vec<tracing::Span>);

/// Where undecodable outbox rows are kept among the dead letters.
pub const UNDECODABLE: &str = "outbox";

/// Publishes committed outbox rows.
pub struct OutboxRelay {
    db: Db,
    bus: Bus,
    batch_size: usize,
    poll: Duration,
}

impl OutboxRelay {
    pub fn new(db: Db, bus: Bus, batch_size: usize, poll: Duration) -> Self {
        OutboxRelay {
            db,
            bus,
            batch_size: batch_size.max(1),
            poll,
        }
    }

    /// Runs until `shutdown`, woken by [`Db::outbox_written`] or every `poll`.
    /// On PostgreSQL the relay is pipelined (see [`crate::pipeline`]); on
    /// SQLite, one batch at a time.
    pub async fn run(self, shutdown: CancellationToken) {
        match self.db.dialect() {
            Dialect::Postgres => {
                crate::pipeline::run(self.db, self.bus, self.batch_size, self.poll, shutdown).await
            }
            Dialect::Sqlite => self.work(shutdown).await,
        }
    }

    async fn work(&self, shutdown: CancellationToken) {
        let signal = self.db.outbox_signal();
        let mut failures = 0u32;
        loop {
            match self.publish_pending().await {
                Ok(n) if n == self.batch_size && !shutdown.is_cancelled() => {
                    failures = 0;
                    continue;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "outbox relay could not publish; will retry");
                }
            }
            let wait = if failures == 0 {
                self.poll
            } else {
                Duration::from_millis(100 * 2u64.pow(failures.min(6)))
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = signal.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Publishes one batch of pending rows, oldest first; returns how many.
    /// Nothing is held while publishing (in process, that waits for the
    /// consumers), so the service keeps writing meanwhile. This is the relay
    /// loop of the one process that owns an SQLite file, and a one-shot
    /// publish for tests; on PostgreSQL the running relay is
    /// [`crate::pipeline`], and a one-shot beside it may send a row twice,
    /// which consumers deduplicate.
    pub async fn publish_pending(&self) -> Result<usize, DbError> {
        let rows = sqlx::query(
            "SELECT id, exchange, routing_key, body FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(self.batch_size as i64)
        .fetch_all(self.db.reader())
        .await?;
        let Some((ids, batch, spans)) = Self::prepare(&self.db, &rows).await? else {
            return Ok(0);
        };
        if !batch.is_empty() {
            self.bus.publish(&batch).await?;
            Self::retire_counted(&self.db, &mut *self.db.pool().acquire().await?, &ids).await?;
        }
        drop(spans);
        Ok(rows.len())
    }

    /// The rows' ids and the messages to publish, each in a publish span
    /// (a child of the span that wrote it, and the parent of its consumers'
    /// spans: the hop shows in the message's trace); None when there are
    /// none.
    /// A row whose body is not a message envelope (never written by
    /// [`enqueue`]; a hand-made or damaged row) cannot be routed: it is kept
    /// with this service's dead letters (consumer `outbox`, where `ticketer
    /// dlq list` finds it) and retired, in one transaction, instead of
    /// being published for nobody.
    pub(crate) async fn prepare(db: &Db, rows: &[crate::AnyRow]) -> Result<Option<Pending>, DbError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut batch = Vec::with_capacity(rows.len());
        let mut spans = Vec::with_capacity(rows.len());
        let mut broken = Vec::new();
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let exchange: String = row.try_get("exchange")?;
            let body: String = row.try_get("body")?;
            let routing_key: String = row.try_get("routing_key")?;
            match Envelope::from_bytes(body.as_bytes()) {
                Ok(mut env) => {
                    let span = tracing::info_span!(
                        "publish",
                        exchange = %exchange,
                        kind = %env.kind,
                        message_id = %env.message_id,
                    );
                    ticketer_telemetry::set_remote_parent(&span, env.traceparent.as_deref());
                    if let Some(tp) = ticketer_telemetry::traceparent_of(&span) {
                        env.traceparent = Some(tp);
                    }
                    ids.push(id);
                    // As written: a message given in an answer as well
                    // is routed apart (see `answering`).
                    batch.push(Outgoing {
                        routing_key,
                        ..Outgoing::new(&exchange, &env)
                    });
                    spans.push(span);
                }
                Err(e) => {
                    tracing::error!(outbox_id = id, error = %e, "undecodable outbox row kept as a dead letter");
                    let letter = ticketer_bus::DeadLetter {
                        exchange,
                        routing_key,
                        body: body.into_bytes(),
                        reason: format!("undecodable outbox row: {e}"),
                    };
                    broken.push((id, letter));
                }
            }
        }
        if !broken.is_empty() {
            let mut tx = db.begin().await?;
            for (_, letter) in &broken {
                crate::dead_letters::keep_in(&mut tx, UNDECODABLE, letter).await?;
            }
            let retired: Vec<i64> = broken.iter().map(|(id, _)| *id).collect();
            Self::retire(&mut tx, &retired).await?;
            tx.commit().await?;
        }
        Ok(Some((ids, batch, spans)))
    }

    /// Deletes the rows of messages the broker has confirmed (or that were
    /// kept as dead letters instead).
    pub(crate) async fn retire(conn: &mut AnyConnection, ids: &[i64]) -> Result<(), DbError> {
        let dialect = Dialect::of(conn);
        // Only relays retire rows (and a row retired twice is as retired),
        // so on PostgreSQL each is found by its address.
        let sql = match dialect {
            Dialect::Postgres => format!(
                "DELETE FROM outbox USING {} WHERE outbox.ctid = v.row_id",
                probed("outbox", "unnest($1::bigint[]) AS v(id)", "v", "id = v.id")
            ),
            Dialect::Sqlite => format!(
                "DELETE FROM outbox WHERE id {}",
                any_of(dialect, 1, ids.len(), "bigint")
            ),
        };
        sqlx::query(&sql).bind_list(dialect, ids).execute(conn).await?;
        tracing::debug!(count = ids.len(), "published outbox batch");
        Ok(())
    }

    /// [`Self::retire`], counted in `db`'s tally of published messages.
    pub(crate) async fn retire_counted(
        db: &Db,
        conn: &mut AnyConnection,
        ids: &[i64],
    ) -> Result<(), DbError> {
        Self::retire(conn, ids).await?;
        db.tally()
            .published
            .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// How many rows wait to be published, and when the oldest was written.
pub async fn backlog(db: &Db) -> Result<(i64, Option<chrono::DateTime<chrono::Utc>>), DbError> {
    let (n,) = sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(db.reader())
        .await?;
    if n == 0 {
        return Ok((0, None));
    }
    let oldest: Option<(String,)> =
        sqlx::query_as("SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1")
            .fetch_optional(db.reader())
            .await?;
    let oldest = oldest.map(|(at,)| time::parse(&at)).transpose()?;
    Ok((n, oldest))
}

/// Messages not yet published, for readiness and metrics.
pub async fn pending_count(db: &Db) -> Result<i64, DbError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(db.reader())
        .await?;
    Ok(n)
}
