-- A booking and its saga state in one row: the saga advances the row under
-- its version, and its commands go to the outbox in the same transaction.
CREATE TABLE bookings (
    booking_id        TEXT PRIMARY KEY,
    customer_id       TEXT NOT NULL,
    event_id          BIGINT NOT NULL,
    number_of_tickets BIGINT NOT NULL,
    payment_token     TEXT NOT NULL,
    stage             TEXT NOT NULL,   -- the saga stage (saga.rs)
    status            TEXT NOT NULL,   -- PENDING, CONFIRMED, FAILED or CANCELLED
    failure_reason    TEXT,
    ticket_ids        TEXT NOT NULL,   -- JSON array
    amount_minor      BIGINT,
    currency          TEXT,
    version           BIGINT NOT NULL DEFAULT 1,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX bookings_customer ON bookings (customer_id, created_at);
CREATE INDEX bookings_event ON bookings (event_id, status);
