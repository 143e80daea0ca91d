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
