use super::*;

const LATER: &str = "2030-01-01T00:00:00Z";
const NOW: &str = "2029-01-01T00:00:00Z";

fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("t{n:03}")
    }
}

fn held_seats(h: Hold) -> Vec<String> {
    match h {
        Hold::Held { ticket_ids, .. } => ticket_ids,
        Hold::SoldOut => panic!("sold out"),
    }
}

#[test]
fn holds_never_take_more_than_is_left() {
    let mut sale = EventSale::new(Counters::new(5), vec![]);
    let mut next = ids();
    assert_eq!(
        held_seats(sale.hold("a", "c", 3, LATER, &mut next).unwrap()).len(),
        3
    );
    assert_eq!(sale.hold("b", "c", 3, LATER, &mut next).unwrap(), Hold::SoldOut);
    assert_eq!(
        held_seats(sale.hold("b", "c", 2, LATER, &mut next).unwrap()).len(),
        2
    );
    assert_eq!(sale.hold("d", "c", 1, LATER, &mut next).unwrap(), Hold::SoldOut);
    assert_eq!((sale.counters.available, sale.counters.held), (0, 5));
    let (created, changed, counters) = sale.into_writes();
    assert_eq!((created.len(), changed.len()), (5, 0));
    assert!(counters.unwrap().is_consistent());
}

#[test]
fn a_released_seat_is_held_again_in_the_same_batch_and_written_once() {
    let mut sale = EventSale::new(Counters::new(2), vec![]);
    let mut next = ids();
    let a = held_seats(sale.hold("a", "c1", 2, LATER, &mut next).unwrap());
    assert_eq!(sale.release("a").unwrap(), a);
    let b = held_seats(sale.hold("b", "c2", 2, LATER, &mut next).unwrap());
    assert_eq!(a, b, "the freed rows are reused, no new ones made");
    let (created, changed, counters) = sale.into_writes();
    assert_eq!(created.len(), 2);
    assert!(changed.is_empty(), "new rows are inserted in their final state");
    assert!(created.iter().all(|s| s.booking_id.as_deref() == Some("b")));
    assert_eq!(counters.unwrap().held, 2);
}

#[test]
fn reserve_sells_a_live_hold_once_and_refuses_an_expired_one() {
    let seats = vec![
        Seat {
            ticket_id: "x1".into(),
            status: TicketStatus::Held,
            booking_id: Some("live".into()),
            customer_id: Some("c".into()),
            hold_expires_at: Some(LATER.into()),
        },
        Seat {
            ticket_id: "x2".into(),
            status: TicketStatus::Held,
            booking_id: Some("stale".into()),
            customer_id: Some("c".into()),
            hold_expires_at: Some("2028-01-01T00:00:00Z".into()),
        },
    ];
    let counters = Counters {
        capacity: 3,
        available: 1,
        held: 2,
        sold: 0,
    };
    let mut sale = EventSale::new(counters, seats);
    assert_eq!(
        sale.reserve("live", NOW, true).unwrap(),
        Reserve::Sold(vec!["x1".into()])
    );
    assert_eq!(
        sale.reserve("live", NOW, true).unwrap(),
        Reserve::Sold(vec!["x1".into()])
    );
    assert_eq!(sale.reserve("stale", NOW, true).unwrap(), Reserve::HoldExpired);
    assert_eq!(
        sale.counters,
        Counters {
            capacity: 3,
            available: 2,
            held: 0,
            sold: 1
        }
    );
    // The expired seat is on sale again, and a hold takes it first.
    let mut next = ids();
    let taken = held_seats(sale.hold("new", "c", 1, LATER, &mut next).unwrap());
    assert_eq!(taken, ["x2"]);
    let (created, changed, _) = sale.into_writes();
    assert!(created.is_empty());
    let statuses: Vec<(&str, TicketStatus)> =
        changed.iter().map(|s| (s.ticket_id.as_str(), s.status)).collect();
    assert_eq!(statuses, [("x1", TicketStatus::Sold), ("x2", TicketStatus::Held)]);
}

#[test]
fn a_cancelled_event_sells_nothing() {
    let mut sale = EventSale::new(Counters::new(2), vec![]);
    let mut next = ids();
    held_seats(sale.hold("a", "c", 2, LATER, &mut next).unwrap());
    assert_eq!(sale.reserve("a", NOW, false).unwrap(), Reserve::HoldExpired);
    assert_eq!(sale.counters, Counters::new(2));
}

#[test]
fn a_repeated_release_frees_nothing_twice() {
    let mut sale = EventSale::new(Counters::new(3), vec![]);
    let mut next = ids();
    held_seats(sale.hold("a", "c", 2, LATER, &mut next).unwrap());
    sale.reserve("a", NOW, true).unwrap();
    assert_eq!(sale.release("a").unwrap().len(), 2);
    assert!(sale.release("a").unwrap().is_empty());
    assert_eq!(sale.counters, Counters::new(3));
}

#[test]
fn a_refunded_ticket_turns_void_and_its_seat_sells_under_a_new_id() {
    let mut sale = EventSale::new(Counters::new(1), vec![]);
    let mut next = ids();
    let first = held_seats(sale.hold("a", "c1", 1, LATER, &mut next).unwrap());
    sale.reserve("a", NOW, true).unwrap();
    assert_eq!(sale.release("a").unwrap(), first);
    let second = held_seats(sale.hold("b", "c2", 1, LATER, &mut next).unwrap());
    assert_ne!(first, second, "a refunded ticket id is never handed out again");
    let (created, _, counters) = sale.into_writes();
    let void = created.iter().find(|s| s.ticket_id == first[0]).unwrap();
    assert_eq!(
        (void.status, void.booking_id.as_deref()),
        (TicketStatus::Void, Some("a")),
        "the void ticket keeps the booking it was sold to"
    );
    assert_eq!(
        counters.unwrap(),
        Counters {
            capacity: 1,
            available: 0,
            held: 1,
            sold: 0
        }
    );
}

/// The expiry sweep gives back only holds that ran out, and only once; a
/// sold seat stays sold however late the sweep comes.
#[test]
fn expiry_frees_only_holds_that_ran_out() {
    let mut sale = EventSale::new(Counters::new(4), vec![]);
    let mut next = ids();
    let late = held_seats(sale.hold("late", "c1", 2, NOW, &mut next).unwrap());
    held_seats(sale.hold("live", "c2", 1, LATER, &mut next).unwrap());
    held_seats(sale.hold("paid", "c3", 1, LATER, &mut next).unwrap());
    sale.reserve("paid", NOW, true).unwrap();
    let after = "2029-06-01T00:00:00Z";
    assert_eq!(sale.expire("late", after).unwrap(), late);
    assert!(sale.expire("late", after).unwrap().is_empty(), "freed twice");
    assert!(
        sale.expire("live", after).unwrap().is_empty(),
        "a live hold was freed"
    );
    assert!(
        sale.expire("paid", LATER).unwrap().is_empty(),
        "a sold seat was freed"
    );
    assert_eq!(sale.holding("live").map(|(ids, _)| ids.len()), Some(1));
    let counters = sale.into_writes().2.unwrap();
    assert_eq!(
        (counters.available, counters.held, counters.sold),
        (2, 1, 1),
        "{counters:?}"
    );
}

/// The payment is made on the hold's news and the sale on the payment's,
/// so a saga that asks for its hold again may find its seats sold: it is
/// told of those, never given more.
#[test]
fn a_repeated_hold_of_a_sold_booking_names_its_sold_seats() {
    let mut sale = EventSale::new(Counters::new(5), vec![]);
    let mut next = ids();
    let held = held_seats(sale.hold("a", "c", 2, LATER, &mut next).unwrap());
    assert_eq!(sale.holding("a"), Some((held.clone(), Some(LATER.to_string()))));
    assert_eq!(sale.reserve("a", NOW, true).unwrap(), Reserve::Sold(held.clone()));
    let before = sale.counters;
    assert_eq!(sale.holding("a"), Some((held, None)));
    assert_eq!(sale.holding("b"), None);
    assert_eq!(sale.counters, before);
}
