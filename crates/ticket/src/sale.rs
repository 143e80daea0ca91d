//! One event's share of a batch of saga commands, worked out in memory with
//! no I/O: the event's counters and the ticket rows the batch reads, every
//! hold, sale and release applied in delivery order through the ticket
//! lifecycle, and what must be written back (new rows, changed rows, the
//! counters) and answered. The consumer reads the rows once, runs the
//! commands here, and writes the result in a few statements per batch
//! instead of several per command.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::{
    inventory::Counters,
    lifecycle::{transition, InvalidTransition, TicketAction, TicketStatus},
};

/// A ticket row as the batch sees and changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub ticket_id: String,
    pub status: TicketStatus,
    pub booking_id: Option<String>,
    pub customer_id: Option<String>,
    /// RFC 3339, comparable as text.
    pub hold_expires_at: Option<String>,
}

/// What a hold came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// These seats are the booking's until the expiry.
    Held {
        ticket_ids: Vec<String>,
        expires_at: String,
    },
    SoldOut,
}

/// What a reservation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    Sold(Vec<String>),
    /// No live hold (expired, released, or the event was cancelled); any
    /// seats still held went back on sale.
    HoldExpired,
}

/// One event's seats during a batch.
#[derive(Debug)]
pub struct EventSale {
    pub counters: Counters,
    seats: HashMap<String, Seat>,
    /// Each booking's tickets, in id order.
    by_booking: HashMap<String, BTreeMap<String, ()>>,
    /// Rows on sale that a hold may take, lowest id first.
    free: VecDeque<String>,
    created: Vec<String>,
    changed: HashSet<String>,
    counters_changed: bool,
}

impl EventSale {
    /// `seats`: every row of the bookings the batch concerns, and rows on
    /// sale (AVAILABLE) that holds may reuse.
    pub fn new(counters: Counters, seats: Vec<Seat>) -> Self {
        let mut sale = EventSale {
            counters,
            seats: HashMap::with_capacity(seats.len()),
            by_booking: HashMap::new(),
            free: VecDeque::new(),
            created: Vec::new(),
            changed: HashSet::new(),
            counters_changed: false,
        };
        let mut free: Vec<String> = Vec::new();
        for seat in seats {
            if let Some(b) = &seat.booking_id {
                sale.by_booking
                    .entry(b.clone())
                    .or_default()
                    .insert(seat.ticket_id.clone(), ());
            }
            if seat.status == TicketStatus::Available && seat.booking_id.is_none() {
                free.push(seat.ticket_id.clone());
            }
            sale.seats.insert(seat.ticket_id.clone(), seat);
        }
        free.sort();
        free.dedup();
        sale.free = free.into();
        sale
    }

    /// The booking's tickets in `status`, in id order.
    fn of(&self, booking: &str, status: TicketStatus) -> Vec<String> {
        self.by_booking
            .get(booking)
            .map(|ids| {
                ids.keys()
                    .filter(|id| self.seats[*id].status == status)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Moves one ticket through the lifecycle; seats back on sale lose
    /// their booking and may be held again in this batch (a refunded
    /// ticket turns void and keeps its booking: its seat is sold again
    /// under a new ticket).
    fn apply(&mut self, id: &str, action: TicketAction) -> Result<(), InvalidTransition> {
        let seat = self.seats.get_mut(id).expect("a seat the batch knows");
        seat.status = transition(seat.status, action)?;
        seat.hold_expires_at = None;
        if seat.status == TicketStatus::Available {
            if let Some(b) = seat.booking_id.take() {
                if let Some(ids) = self.by_booking.get_mut(&b) {
                    ids.remove(id);
                }
            }
            seat.customer_id = None;
            self.free.push_back(id.to_string());
        }
        if !self.created.iter().any(|c| c == id) {
            self.changed.insert(id.to_string());
        }
        Ok(())
    }

    /// The seats this booking holds, if it holds any (a repeated hold),
    /// with the expiry of the first; else the seats it bought, without an
    /// expiry. The hold's news is what makes the payment, so a booking may
    /// be sold before its saga asks again: it never gets seats twice.
    pub fn holding(&self, booking: &str) -> Option<(Vec<String>, Option<String>)> {
        let mut ids = self.of(booking, TicketStatus::Held);
        if ids.is_empty() {
            ids = self.of(booking, TicketStatus::Sold);
        }
        let first = ids.first()?;
        let expires = self.seats[first].hold_expires_at.clone();
        Some((ids, expires))
    }

    /// Holds `n` seats for a booking until `expires_at`, reusing seats back
    /// on sale before making new ones (`new_id` names those).
    pub fn hold(
        &mut self,
        booking: &str,
        customer: &str,
        n: i64,
        expires_at: &str,
        mut new_id: impl FnMut() -> String,
    ) -> Result<Hold, InvalidTransition> {
        let Some(counters) = self.counters.hold(n) else {
            return Ok(Hold::SoldOut);
        };
        let mut ids = Vec::with_capacity(n as usize);
        while (ids.len() as i64) < n {
            let id = match self.free.pop_front() {
                // A seat may have been taken since it was freed.
                Some(id) if self.seats[&id].status != TicketStatus::Available => continue,
                Some(id) => {
                    self.apply(&id, TicketAction::Hold)?;
                    id
                }
                None => {
                    let id = new_id();
                    self.seats.insert(
                        id.clone(),
                        Seat {
                            ticket_id: id.clone(),
                            status: TicketStatus::Held,
                            booking_id: None,
                            customer_id: None,
                            hold_expires_at: None,
                        },
                    );
                    self.created.push(id.clone());
                    id
                }
            };
            let seat = self.seats.get_mut(&id).expect("just placed");
            seat.booking_id = Some(booking.to_string());
            seat.customer_id = Some(customer.to_string());
            seat.hold_expires_at = Some(expires_at.to_string());
            self.by_booking
                .entry(booking.to_string())
                .or_default()
                .insert(id.clone(), ());
            ids.push(id);
        }
        ids.sort();
        self.counters = counters;
        self.counters_changed = true;
        Ok(Hold::Held {
            ticket_ids: ids,
            expires_at: expires_at.to_string(),
        })
    }

    /// Turns the booking's live hold into a sale. `on_sale` is false once
    /// the event was cancelled; `now` decides which holds still live.
    pub fn reserve(&mut self, booking: &str, now: &str, on_sale: bool) -> Result<Reserve, InvalidTransition> {
        let held = self.of(booking, TicketStatus::Held);
        let live = held
            .iter()
            .any(|id| self.seats[id].hold_expires_at.as_deref().is_some_and(|e| e > now));
        let sold = self.of(booking, TicketStatus::Sold);
        if !sold.is_empty() && !live {
            // Asked again: it is done.
            return Ok(Reserve::Sold(sold));
        }
        if !live || !on_sale {
            // Expired (perhaps not swept yet): give the seats back now.
            for id in &held {
                self.apply(id, TicketAction::Expire)?;
            }
            if !held.is_empty() {
                self.counters = self.counters.release(held.len() as i64, 0);
                self.counters_changed = true;
            }
            return Ok(Reserve::HoldExpired);
        }
        for id in &held {
            self.apply(id, TicketAction::Sell)?;
        }
        self.counters = self.counters.sell(held.len() as i64);
        self.counters_changed = true;
        Ok(Reserve::Sold(held))
    }

    /// Gives back the booking's held seats whose hold ran out by `now` (the
    /// expiry sweep); the ids, none if its hold still lives or is gone.
    pub fn expire(&mut self, booking: &str, now: &str) -> Result<Vec<String>, InvalidTransition> {
        let due: Vec<String> = self
            .of(booking, TicketStatus::Held)
            .into_iter()
            .filter(|id| {
                self.seats[id]
                    .hold_expires_at
                    .as_deref()
                    .is_some_and(|e| e <= now)
            })
            .collect();
        for id in &due {
            self.apply(id, TicketAction::Expire)?;
        }
        if !due.is_empty() {
            self.counters = self.counters.release(due.len() as i64, 0);
            self.counters_changed = true;
        }
        Ok(due)
    }

    /// Gives back whatever the booking holds or bought (held seats go back
    /// on sale as they are; bought ones turn void); the ids, none if it had
    /// nothing (a repeated release).
    pub fn release(&mut self, booking: &str) -> Result<Vec<String>, InvalidTransition> {
        let held = self.of(booking, TicketStatus::Held);
        let sold = self.of(booking, TicketStatus::Sold);
        for id in &held {
            self.apply(id, TicketAction::Release)?;
        }
        for id in &sold {
            self.apply(id, TicketAction::Refund)?;
        }
        if !held.is_empty() || !sold.is_empty() {
            self.counters = self.counters.release(held.len() as i64, sold.len() as i64);
            self.counters_changed = true;
        }
        Ok(held.into_iter().chain(sold).collect())
    }

    /// Rows to insert, rows to update, and whether the counters changed.
    pub fn into_writes(self) -> (Vec<Seat>, Vec<Seat>, Option<Counters>) {
        let mut seats = self.seats;
        let created = self.created.iter().filter_map(|id| seats.remove(id)).collect();
        let mut changed: Vec<Seat> = self.changed.iter().filter_map(|id| seats.remove(id)).collect();
        changed.sort_by(|a, b| a.ticket_id.cmp(&b.ticket_id));
        (created, changed, self.counters_changed.then_some(self.counters))
    }
}

#[cfg(test)]
mod tests;
