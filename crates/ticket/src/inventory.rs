//! Inventory arithmetic with no I/O.

/// An event's seat counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub capacity: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
}

impl Counters {
    pub fn new(capacity: i64) -> Self {
        Counters {
            capacity,
            available: capacity,
            held: 0,
            sold: 0,
        }
    }

    /// The organizer changed the capacity. Seats already held or sold are
    /// never taken away: the capacity cannot drop below them (the events
    /// service refuses that for sold seats; a hold can still slip in between).
    pub fn resize(self, requested: i64) -> Counters {
        let taken = self.held + self.sold;
        let capacity = requested.max(taken);
        Counters {
            capacity,
            available: capacity - taken,
            ..self
        }
    }

    /// Takes `n` seats out of sale for a booking; None when fewer are left.
    pub fn hold(self, n: i64) -> Option<Counters> {
        (n > 0 && self.available >= n).then(|| Counters {
            available: self.available - n,
            held: self.held + n,
            ..self
        })
    }

    /// `n` held seats were paid for.
    pub fn sell(self, n: i64) -> Counters {
        let n = n.clamp(0, self.held);
        Counters {
            held: self.held - n,
            sold: self.sold + n,
            ..self
        }
    }

    /// `held` held seats and `sold` sold seats go back on sale.
    pub fn release(self, held: i64, sold: i64) -> Counters {
        let (held, sold) = (held.clamp(0, self.held), sold.clamp(0, self.sold));
        Counters {
            available: self.available + held + sold,
            held: self.held - held,
            sold: self.sold - sold,
            ..self
        }
    }

    pub fn is_consistent(&self) -> bool {
        self.available >= 0
            && self.held >= 0
            && self.sold >= 0
            && self.available + self.held + self.sold == self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_never_exceed_what_is_available() {
        let c = Counters::new(3);
        let c = c.hold(2).unwrap();
        assert_eq!((c.available, c.held), (1, 2));
        assert_eq!(c.hold(2), None, "only one seat left");
        assert_eq!(c.hold(0), None);
        let c = c.hold(1).unwrap();
        assert_eq!(c.hold(1), None, "sold out");
        assert!(c.is_consistent());
    }

    #[test]
    fn selling_and_releasing_keep_the_sum() {
        let c = Counters::new(10).hold(6).unwrap();
        let c = c.sell(4);
        assert_eq!((c.available, c.held, c.sold), (4, 2, 4));
        let c = c.release(2, 1);
        assert_eq!((c.available, c.held, c.sold), (7, 0, 3));
        // More than there is cannot be released or sold.
        assert_eq!(c.release(5, 0), c);
        assert_eq!(c.sell(1), c);
        assert!(c.is_consistent());
    }

    #[test]
    fn growing_and_shrinking() {
        let c = Counters {
            capacity: 100,
            available: 60,
            held: 10,
            sold: 30,
        };
        assert_eq!(
            c.resize(150),
            Counters {
                capacity: 150,
                available: 110,
                ..c
            }
        );
        assert_eq!(
            c.resize(50),
            Counters {
                capacity: 50,
                available: 10,
                ..c
            }
        );
        // Never below what is held or sold.
        assert_eq!(
            c.resize(20),
            Counters {
                capacity: 40,
                available: 0,
                ..c
            }
        );
        for requested in [0, 1, 40, 41, 1_000_000] {
            assert!(c.resize(requested).is_consistent(), "{requested}");
        }
        assert!(Counters::new(5).is_consistent());
    }
}
