//! Charges the provider had not answered when their batch was recorded:
//! they stand as PROCESSING, their messages settled, so that the queue's
//! worker goes on with the next batch instead of waiting for a slow card.
//! Each is finished when its provider call answers: the payment settled and
//! the saga answered in one transaction, only if still PROCESSING, so
//! whoever finishes first answers and nobody answers twice. A charge left
//! PROCESSING by a crash is found by the sweep, on any replica, and asked
//! again with the same idempotency key, which never charges twice.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use ticketer_bus::{Envelope, HandleError};
use ticketer_db::{enqueue, time, Db};
use tokio::sync::{mpsc::UnboundedReceiver, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    ledger::{answer, settled},
    Answer, PaymentCommand,
};
use crate::{
    provider::{ChargeOutcome, PaymentProvider},
    store,
};

/// At most this many stale charges are taken up by one sweep.
const SWEEP_BATCH: i64 = 100;

pub struct Processing {
    db: Db,
    provider: Arc<dyn PaymentProvider>,
    /// Provider calls in flight, shared with the consumer.
    calls: Arc<Semaphore>,
    /// Bookings whose charge this process is finishing: the sweep leaves
    /// them alone.
    finishing: Mutex<HashSet<Uuid>>,
}

impl Processing {
    pub(super) fn new(db: Db, provider: Arc<dyn PaymentProvider>, calls: Arc<Semaphore>) -> Self {
        Processing {
            db,
            provider,
            calls,
            finishing: Mutex::new(HashSet::new()),
        }
    }

    /// Finishes `bookings` (recorded PROCESSING) as their calls answer on
    /// `answers`, in a task of its own.
    pub(super) fn finish_when_answered(
        self: &Arc<Self>,
        bookings: HashSet<Uuid>,
        mut answers: UnboundedReceiver<Answer>,
    ) {
        self.finishing.lock().expect("finishing lock").extend(&bookings);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(a) = answers.recv().await {
                if !bookings.contains(&a.booking) {
                    continue;
                }
                match a.answer {
                    Ok(asked) => {
                        for outcome in asked.charges.into_values() {
                            this.finish_and_log(a.booking, outcome).await;
                        }
                    }
                    Err(e) => tracing::warn!(booking_id = %a.booking, error = %e, "charge left to the sweep"),
                }
                this.finishing.lock().expect("finishing lock").remove(&a.booking);
            }
        });
    }

    async fn finish_and_log(&self, booking: Uuid, outcome: ChargeOutcome) {
        match self.finish(booking, outcome).await {
            Ok(true) => tracing::debug!(booking_id = %booking, "slow charge settled"),
            Ok(false) => tracing::debug!(booking_id = %booking, "slow charge settled elsewhere"),
            Err(e) => tracing::warn!(booking_id = %booking, error = %e, "charge left to the sweep"),
        }
    }

    /// Settles the booking's PROCESSING charge with `outcome` and answers
    /// the saga, in one transaction. False when it was not PROCESSING.
    pub async fn finish(&self, booking: Uuid, outcome: ChargeOutcome) -> Result<bool, HandleError> {
        let mut tx = self.db.begin().await.map_err(HandleError::from)?;
        let Some(payment) = store::by_bookings(&mut tx, &[booking.to_string()]).await?.pop() else {
            return Ok(false);
        };
        let Some(command) = payment
            .pending_command
            .clone()
            .filter(|_| payment.status == store::PROCESSING)
        else {
            return Ok(false);
        };
        let cause = Envelope::from_bytes(command.as_bytes())?;
        let payment = settled(payment, outcome);
        if !store::settle(&mut tx, &payment).await? {
            return Ok(false);
        }
        enqueue(&mut tx, &[answer(&cause, &payment)?]).await?;
        tx.commit().await.map_err(ticketer_db::DbError::from)?;
        self.db.outbox_written();
        Ok(true)
    }

    /// Asks the provider again for charges PROCESSING for longer than
    /// `stale` that this process is not finishing (left by a crash, here or
    /// on another replica), and finishes them. Returns how many it took up.
    pub async fn sweep(self: &Arc<Self>, stale: Duration) -> Result<usize, HandleError> {
        let before = time::ago(stale);
        let found = store::processing_since(&self.db, &before, SWEEP_BATCH).await?;
        let mut taken = 0;
        for (booking, command) in found {
            let Ok(booking) = Uuid::parse_str(&booking) else {
                continue;
            };
            let mut charge =
                match Envelope::from_bytes(command.as_bytes()).and_then(|e| PaymentCommand::of(&e)) {
                    Ok(Some(PaymentCommand::ProcessPayment(c))) => c,
                    _ => {
                        tracing::error!(booking_id = %booking, "a PROCESSING charge without its command");
                        continue;
                    }
                };
            if !self.finishing.lock().expect("finishing lock").insert(booking) {
                continue;
            }
            taken += 1;
            let this = self.clone();
            tokio::spawn(async move {
                let permit = this.calls.clone().acquire_owned().await;
                // The card it was charged to, deleted since or not.
                let outcome = match super::cards::with_saved_cards(&this.db, vec![&mut charge], true).await {
                    Ok(()) => super::cards::charge_with(&*this.provider, &charge).await,
                    Err(e) => {
                        tracing::warn!(booking_id = %booking, error = %e, "saved card not read; swept again later");
                        drop(permit);
                        this.finishing.lock().expect("finishing lock").remove(&booking);
                        return;
                    }
                };
                drop(permit);
                this.finish_and_log(booking, outcome).await;
                this.finishing.lock().expect("finishing lock").remove(&booking);
            });
        }
        Ok(taken)
    }

    /// Sweeps every `every` until `shutdown`.
    pub async fn run_sweeps(self: Arc<Self>, every: Duration, stale: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.sweep(stale).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(charges = n, "stale PROCESSING charges asked again"),
                Err(e) => tracing::warn!(error = %e, "payment sweep failed"),
            }
        }
    }
}
