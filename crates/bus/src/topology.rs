//! Exchange and queue names fixed by the contract.

use std::time::Duration;

use ticketer_contract::{
    exchanges, BookingCancelled, BookingConfirmed, BookingFailed, EventCancelled, EventCompleted,
    EventCreated, EventPublished, EventUpdated, HoldTickets, Message, PaymentFailed, PaymentRefunded,
    PaymentSucceeded, ProcessPayment, RefundPayment, ReleaseTickets, ReserveTickets, TicketsHeld,
    TicketsHoldFailed, TicketsReleased, TicketsReserveFailed, TicketsReserved, UserRegistered,
};

pub const EVENTS_EXCHANGE: &str = exchanges::EVENTS;
pub const BOOKING_EXCHANGE: &str = exchanges::BOOKING;
pub const PAYMENT_EXCHANGE: &str = exchanges::PAYMENT;
pub const TICKET_EXCHANGE: &str = exchanges::TICKET;
pub const AUTH_EXCHANGE: &str = exchanges::AUTH;
/// Where failed messages go; each queue's dead letters are routed by queue name.
pub const DEAD_LETTER_EXCHANGE: &str = "ticketer.dlx";

pub const TOPIC_EXCHANGES: [&str; 5] = [
    EVENTS_EXCHANGE,
    BOOKING_EXCHANGE,
    PAYMENT_EXCHANGE,
    TICKET_EXCHANGE,
    AUTH_EXCHANGE,
];

/// A queue binding for message type `M`: its exchange and its kind.
const fn on<M: Message>() -> (&'static str, &'static str) {
    (M::EXCHANGE, M::KIND)
}

/// The last word of the routing key of a message its sender also gave in
/// an answer over HTTP (`<kind>.answered`): the asking service's queues
/// bind the kind alone and so do not get a copy of what they were told,
/// while a queue bound to `<kind>.#` gets both.
pub const ANSWERED: &str = "answered";

/// The routing key of a message of `kind` also given in an answer.
pub fn answered_key(kind: &str) -> String {
    format!("{kind}.{ANSWERED}")
}

/// A queue every service knows about, declared with its bindings whenever
/// any service connects, so that a message published before its consumer
/// has started waits in the queue instead of being dropped.
#[derive(Debug, Clone, Copy)]
pub struct QueueSpec {
    pub name: &'static str,
    /// The service that consumes it (and keeps its inbox and, in process,
    /// its dead letters).
    pub consumer: &'static str,
    pub bindings: &'static [(&'static str, &'static str)],
    /// How long its consumer waits, after a batch's first delivery, for
    /// more to join the batch: none on a buyer's way to a booking's
    /// outcome; a moment where nobody waits for the effect, so that a sale
    /// costs fewer, larger transactions there. RabbitMQ only: in process, a
    /// publish waits for its consumers, and would hold back the sender's
    /// other messages.
    pub batch_wait: Duration,
}

/// The wait of a queue whose effects nobody waits for, and which a sale
/// keeps busy: bookings' notifications, refunds' and the sales figures.
/// (A welcome or an event's news is rare, and told at once.)
pub const OFF_THE_BUYERS_PATH: Duration = Duration::from_millis(100);

impl QueueSpec {
    /// A subscription to this queue with its bindings and default tuning.
    pub fn subscription(&self) -> Subscription {
        let sub = Subscription {
            batch_wait: self.batch_wait,
            ..Subscription::new(self.name)
        };
        self.bindings
            .iter()
            .fold(sub, |sub, (exchange, pattern)| sub.bind(exchange, pattern))
    }
}

/// Event changes the ticket service keeps its inventory in step with.
pub const TICKET_INVENTORY: QueueSpec = QueueSpec {
    name: "ticket.inventory",
    consumer: "ticket",
    batch_wait: Duration::ZERO,
    bindings: &[
        on::<EventPublished>(),
        on::<EventUpdated>(),
        on::<EventCancelled>(),
        on::<EventCompleted>(),
    ],
};

/// The booking saga's commands to the ticket service, and the payments
/// that turn holds into sales (without a ReserveTickets in between),
/// those the payment service answered the booking service with included.
pub const TICKET_COMMANDS: QueueSpec = QueueSpec {
    name: "ticket.commands",
    consumer: "ticket",
    batch_wait: Duration::ZERO,
    bindings: &[
        on::<HoldTickets>(),
        on::<ReserveTickets>(),
        on::<ReleaseTickets>(),
        (PAYMENT_EXCHANGE, "PaymentSucceeded.#"),
    ],
};

/// The booking saga's commands to the payment service, and the holds it
/// charges on (those that carry their booking's charge).
pub const PAYMENT_COMMANDS: QueueSpec = QueueSpec {
    name: "payment.commands",
    consumer: "payment",
    batch_wait: Duration::ZERO,
    bindings: &[on::<ProcessPayment>(), on::<RefundPayment>(), on::<TicketsHeld>()],
};

/// The ticket service's answers, for the booking saga.
pub const TICKET_OPERATIONS: QueueSpec = QueueSpec {
    name: "ticket.operations",
    consumer: "booking",
    batch_wait: Duration::ZERO,
    bindings: &[
        on::<TicketsHeld>(),
        on::<TicketsHoldFailed>(),
        on::<TicketsReserved>(),
        on::<TicketsReserveFailed>(),
        on::<TicketsReleased>(),
    ],
};

/// The payment service's answers, for the booking saga; not those it gave
/// the booking service over HTTP (`<kind>.answered`).
pub const BOOKING_PAYMENTS: QueueSpec = QueueSpec {
    name: "booking.payments",
    consumer: "booking",
    batch_wait: Duration::ZERO,
    bindings: &[
        on::<PaymentSucceeded>(),
        on::<PaymentFailed>(),
        on::<PaymentRefunded>(),
    ],
};

/// Event changes the booking service mirrors (ownership, dates, cancellation).
pub const BOOKING_EVENTS: QueueSpec = QueueSpec {
    name: "booking.events",
    consumer: "booking",
    batch_wait: Duration::ZERO,
    bindings: &[
        on::<EventPublished>(),
        on::<EventUpdated>(),
        on::<EventCancelled>(),
        on::<EventCompleted>(),
    ],
};

/// Bookings confirmed and cancelled, for the events service's sales figures.
pub const EVENTS_SALES: QueueSpec = QueueSpec {
    name: "events.sales",
    consumer: "events",
    batch_wait: OFF_THE_BUYERS_PATH,
    bindings: &[on::<BookingConfirmed>(), on::<BookingCancelled>()],
};

/// Registrations, for the notification service's contacts and welcomes.
pub const AUTH_NOTIFICATIONS: QueueSpec = QueueSpec {
    name: "auth.notifications",
    consumer: "notification",
    batch_wait: Duration::ZERO,
    bindings: &[on::<UserRegistered>()],
};

/// Event changes: the notification service's copy of each event, the
/// organizer told of publication, ticket holders of a cancellation.
pub const EVENT_NOTIFICATIONS: QueueSpec = QueueSpec {
    name: "event.notifications",
    consumer: "notification",
    batch_wait: Duration::ZERO,
    bindings: &[
        on::<EventCreated>(),
        on::<EventPublished>(),
        on::<EventUpdated>(),
        on::<EventCancelled>(),
    ],
};

/// Booking outcomes, told to their customers.
pub const BOOKING_NOTIFICATIONS: QueueSpec = QueueSpec {
    name: "booking.notifications",
    consumer: "notification",
    batch_wait: OFF_THE_BUYERS_PATH,
    bindings: &[
        on::<BookingConfirmed>(),
        on::<BookingFailed>(),
        on::<BookingCancelled>(),
    ],
};

/// Refunds, told to the customers who were paid back.
pub const PAYMENT_NOTIFICATIONS: QueueSpec = QueueSpec {
    name: "payment.notifications",
    consumer: "notification",
    batch_wait: OFF_THE_BUYERS_PATH,
    bindings: &[on::<PaymentRefunded>()],
};

/// The queue named `name`.
pub fn queue(name: &str) -> Option<&'static QueueSpec> {
    QUEUES.iter().find(|q| q.name == name)
}

/// Every queue of the system.
pub const QUEUES: &[QueueSpec] = &[
    TICKET_INVENTORY,
    TICKET_COMMANDS,
    PAYMENT_COMMANDS,
    TICKET_OPERATIONS,
    BOOKING_PAYMENTS,
    BOOKING_EVENTS,
    EVENTS_SALES,
    AUTH_NOTIFICATIONS,
    EVENT_NOTIFICATIONS,
    BOOKING_NOTIFICATIONS,
    PAYMENT_NOTIFICATIONS,
];

/// The dead-letter queue that belongs to `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// A queue, what it is bound to, and how its consumer runs.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub queue: String,
    /// (exchange, topic pattern) pairs, e.g. `("ticketer.events", "#")`.
    pub bindings: Vec<(String, String)>,
    /// Deliveries the broker may push before acks (RabbitMQ basic.qos).
    pub prefetch: u16,
    /// Workers applying batches in parallel.
    pub concurrency: usize,
    /// Deliveries applied together (one database transaction per batch).
    pub batch_size: usize,
    /// How long a batch waits for more deliveries after its first (see
    /// [`QueueSpec::batch_wait`]); zero: only those already arrived.
    pub batch_wait: Duration,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt.
    pub backoff: Duration,
}

impl Subscription {
    pub fn new(queue: &str) -> Self {
        Subscription {
            queue: queue.to_string(),
            bindings: Vec::new(),
            prefetch: 200,
            concurrency: 2,
            batch_size: 100,
            batch_wait: Duration::ZERO,
            max_attempts: 5,
            backoff: Duration::from_millis(100),
        }
    }

    pub fn bind(mut self, exchange: &str, pattern: &str) -> Self {
        self.bindings.push((exchange.to_string(), pattern.to_string()));
        self
    }

    pub fn tuned(mut self, prefetch: u16, concurrency: usize, batch_size: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self.concurrency = concurrency.max(1);
        self.batch_size = batch_size.max(1);
        self
    }

    pub fn retries(mut self, max_attempts: u32, backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.backoff = backoff;
        self
    }
}

/// AMQP topic matching: `*` is one word, `#` is zero or more words.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(w), Some(x)) if w == x => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("#", "EventPublished"));
        assert!(topic_matches("EventPublished", "EventPublished"));
        assert!(!topic_matches("EventCreated", "EventPublished"));
        assert!(topic_matches("a.*", "a.b"));
        assert!(!topic_matches("a.*", "a.b.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#.z", "a.b.c.z"));
        assert!(!topic_matches("*", "a.b"));
    }

    /// Which queues a message reaches, by routing key.
    fn reached(exchange: &str, key: &str) -> Vec<&'static str> {
        QUEUES
            .iter()
            .filter(|q| {
                q.bindings
                    .iter()
                    .any(|(e, pattern)| *e == exchange && topic_matches(pattern, key))
            })
            .map(|q| q.name)
            .collect()
    }

    /// A payment answered over HTTP reaches the ticket service, which sells
    /// on it, and not the booking service, which had it in the answer; sent
    /// only on the bus, both.
    #[test]
    fn a_payment_answered_directly_is_not_sent_back_to_the_asker() {
        let succeeded = PaymentSucceeded::KIND;
        assert_eq!(
            reached(PaymentSucceeded::EXCHANGE, succeeded),
            ["ticket.commands", "booking.payments"]
        );
        assert_eq!(
            reached(PaymentSucceeded::EXCHANGE, &answered_key(succeeded)),
            ["ticket.commands"]
        );
        assert!(reached(PaymentFailed::EXCHANGE, &answered_key(PaymentFailed::KIND)).is_empty());
        assert_eq!(
            reached(PaymentFailed::EXCHANGE, PaymentFailed::KIND),
            ["booking.payments"]
        );
    }
}
