//! Waiting rooms: a first-come queue in front of a crowded sale.
//!
//! Every buyer who joins gets the next number. At most `admitted_at_once`
//! numbers are admitted at a time; an admitted buyer holds a claim until
//! they leave (their booking is made and answered) or the claim runs out,
//! and each claim that ends admits the next number. The room shapes load
//! and keeps arrival order; it decides nothing about seats (the ticket
//! service does), so a claim that runs out early only admits one buyer more.
//!
//! The rules are here, without I/O, for the memory backend and the tests;
//! the Redis backend runs the same steps in Lua, on the server's clock.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

/// How a room admits, as the event's organizer set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRule {
    /// Buyers admitted and not yet done, at most.
    pub admitted_at_once: u32,
    /// How long an admitted buyer keeps their claim without leaving.
    pub claim: Duration,
}

/// How long a place is remembered: a buyer who never comes back gives it
/// up then (and the embedded room forgets it).
pub const PLACE_KEPT: Duration = Duration::from_secs(6 * 3600);

/// A buyer's place in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Not admitted yet: `ahead` numbers before theirs are not admitted.
    Waiting { number: u64, ahead: u64 },
    /// Admitted: may book for `claim_left` more.
    Admitted { number: u64, claim_left: Duration },
    /// Admitted earlier, but the claim ran out before they booked.
    Lapsed { number: u64 },
}

impl Place {
    pub fn number(&self) -> u64 {
        match *self {
            Place::Waiting { number, .. } | Place::Admitted { number, .. } | Place::Lapsed { number } => {
                number
            }
        }
    }
}

/// One event's room, in memory. Times are milliseconds on any clock that
/// does not go back.
#[derive(Debug, Default)]
pub struct Room {
    /// Numbers given out so far (the last one given).
    issued: u64,
    /// Numbers up to this one have been admitted.
    admitted: u64,
    /// Admitted numbers still holding a claim, and when it runs out.
    claims: HashMap<u64, u64>,
    /// Each buyer's number, and when the place is forgotten.
    places: HashMap<String, (u64, u64)>,
    /// Numbers whose buyers left before they were admitted: skipped when
    /// their turn comes, so no claim waits for a buyer who is gone.
    gone: HashSet<u64>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Room {
    /// Admits the next numbers while claims are free; returns the highest
    /// number admitted.
    pub fn admit(&mut self, now: u64, rule: RoomRule) -> u64 {
        self.claims.retain(|_, until| *until > now);
        let until = now + ms(rule.claim);
        while self.admitted < self.issued && self.claims.len() < rule.admitted_at_once as usize {
            self.admitted += 1;
            if !self.gone.remove(&self.admitted) {
                self.claims.insert(self.admitted, until);
            }
        }
        self.admitted
    }

    fn place_of(&self, number: u64, now: u64) -> Place {
        if number > self.admitted {
            Place::Waiting {
                number,
                ahead: number - self.admitted - 1,
            }
        } else if let Some(until) = self.claims.get(&number) {
            Place::Admitted {
                number,
                claim_left: Duration::from_millis(until.saturating_sub(now)),
            }
        } else {
            Place::Lapsed { number }
        }
    }

    /// The buyer's place, if they have one.
    pub fn place(&mut self, user: &str, now: u64, rule: RoomRule) -> Option<Place> {
        self.admit(now, rule);
        let (number, forget) = *self.places.get(user)?;
        if forget <= now {
            self.places.remove(user);
            return None;
        }
        Some(self.place_of(number, now))
    }

    /// Joins the queue: the buyer's place if they are waiting or admitted,
    /// else (new, lapsed or forgotten) the next number.
    pub fn join(&mut self, user: &str, now: u64, rule: RoomRule) -> Place {
        if let Some(p @ (Place::Waiting { .. } | Place::Admitted { .. })) = self.place(user, now, rule) {
            return p;
        }
        // Places of buyers who never came back are dropped now and then,
        // so that a long-open room does not grow without bound.
        if self.places.len() >= 1024 && self.places.len().is_power_of_two() {
            self.places.retain(|_, (_, forget)| *forget > now);
        }
        self.issued += 1;
        self.places
            .insert(user.to_string(), (self.issued, now + ms(PLACE_KEPT)));
        self.admit(now, rule);
        self.place_of(self.issued, now)
    }

    /// The buyer is done (booked, or gave up): their claim is freed for the
    /// next number (or, still waiting, their number is skipped), and
    /// joining again puts them at the back. Returns the highest number
    /// admitted.
    pub fn leave(&mut self, user: &str, now: u64, rule: RoomRule) -> u64 {
        if let Some((number, _)) = self.places.remove(user) {
            if number > self.admitted {
                self.gone.insert(number);
            } else {
                self.claims.remove(&number);
            }
        }
        self.admit(now, rule)
    }

    /// Nothing waits or holds a claim: the room can be forgotten.
    pub fn is_idle(&self) -> bool {
        self.claims.is_empty() && self.places.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: RoomRule = RoomRule {
        admitted_at_once: 2,
        claim: Duration::from_secs(10),
    };

    fn admitted(p: Place) -> bool {
        matches!(p, Place::Admitted { .. })
    }

    #[test]
    fn the_first_are_admitted_at_once_and_the_rest_wait_in_order() {
        let mut room = Room::default();
        let places: Vec<Place> = ["a", "b", "c", "d"]
            .iter()
            .map(|u| room.join(u, 0, RULE))
            .collect();
        assert!(admitted(places[0]) && admitted(places[1]), "{places:?}");
        assert_eq!(places[2], Place::Waiting { number: 3, ahead: 0 });
        assert_eq!(places[3], Place::Waiting { number: 4, ahead: 1 });
        // Joining again keeps the place.
        assert_eq!(room.join("d", 1, RULE), Place::Waiting { number: 4, ahead: 1 });
        assert_eq!(room.place("nobody", 1, RULE), None);
    }

    #[test]
    fn each_buyer_who_leaves_admits_the_next() {
        let mut room = Room::default();
        for u in ["a", "b", "c", "d"] {
            room.join(u, 0, RULE);
        }
        room.leave("a", 5, RULE);
        assert!(admitted(room.place("c", 5, RULE).unwrap()));
        assert_eq!(
            room.place("d", 5, RULE),
            Some(Place::Waiting { number: 4, ahead: 0 })
        );
        // Leaving twice, or without a place, frees nothing more.
        room.leave("a", 6, RULE);
        room.leave("zed", 6, RULE);
        assert!(!admitted(room.place("d", 6, RULE).unwrap()));
        // Back at the end of the queue.
        assert_eq!(room.join("a", 7, RULE), Place::Waiting { number: 5, ahead: 1 });
    }

    #[test]
    fn a_buyer_who_leaves_while_waiting_is_skipped_when_their_turn_comes() {
        let mut room = Room::default();
        for u in ["a", "b", "c", "d", "e"] {
            room.join(u, 0, RULE);
        }
        // c and d give up while waiting; a's leaving admits e, not a claim
        // for c that nobody would use until it lapsed.
        room.leave("c", 1, RULE);
        room.leave("d", 1, RULE);
        assert_eq!(room.leave("a", 2, RULE), 5);
        assert!(admitted(room.place("e", 2, RULE).unwrap()));
        assert_eq!(room.claims.len(), 2, "b and e hold the claims");
        assert!(room.gone.is_empty(), "skipped numbers are not kept");
        // Nobody left to admit: b's leaving frees a claim that waits.
        assert_eq!(room.leave("b", 3, RULE), 5);
        assert_eq!(
            room.join("f", 4, RULE),
            Place::Admitted {
                number: 6,
                claim_left: Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn a_claim_that_runs_out_lapses_and_admits_the_next() {
        let mut room = Room::default();
        for u in ["a", "b", "c"] {
            room.join(u, 0, RULE);
        }
        assert_eq!(
            room.place("a", 4_000, RULE),
            Some(Place::Admitted {
                number: 1,
                claim_left: Duration::from_secs(6)
            })
        );
        assert_eq!(room.place("a", 10_000, RULE), Some(Place::Lapsed { number: 1 }));
        let c = room.place("c", 10_000, RULE).unwrap();
        assert_eq!(
            c,
            Place::Admitted {
                number: 3,
                claim_left: Duration::from_secs(10)
            }
        );
        // A lapsed buyer who joins again queues anew (and with one claim
        // free, is admitted at once).
        let again = room.join("a", 10_001, RULE);
        assert!(admitted(again) && again.number() == 4, "{again:?}");
        assert_eq!(
            room.join("b", 10_002, RULE),
            Place::Waiting { number: 5, ahead: 0 }
        );
    }

    #[test]
    fn never_more_claims_than_the_rule_allows() {
        let mut room = Room::default();
        let rule = RoomRule {
            admitted_at_once: 3,
            claim: Duration::from_secs(1),
        };
        let users: Vec<String> = (0..50).map(|n| format!("u{n}")).collect();
        let mut now = 0;
        for (i, u) in users.iter().enumerate() {
            room.join(u, now, rule);
            if i % 4 == 0 {
                room.leave(&users[i / 2], now, rule);
            }
            now += 170;
            room.admit(now, rule);
            let claims = users
                .iter()
                .filter(|u| room.place(u, now, rule).is_some_and(admitted))
                .count();
            assert!(claims <= 3, "{claims} admitted at {now}");
        }
    }

    #[test]
    fn forgotten_places_do_not_pile_up() {
        let mut room = Room::default();
        let rule = RoomRule {
            admitted_at_once: 1,
            claim: Duration::from_millis(1),
        };
        let day = ms(PLACE_KEPT) + 1;
        for n in 0..100_000u64 {
            room.join(&format!("u{n}"), n * day, rule);
        }
        assert!(room.places.len() < 4096, "{} places kept", room.places.len());
    }
}
