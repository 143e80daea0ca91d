-- One row per published event: what can still be sold. The counters are
-- the source of truth for availability and always add up to the capacity.
CREATE TABLE inventory (
    event_id    BIGINT PRIMARY KEY,
    organizer   TEXT NOT NULL,
    status      TEXT NOT NULL,          -- ON_SALE, CANCELLED or CLOSED
    capacity    BIGINT NOT NULL,
    available   BIGINT NOT NULL,
    held        BIGINT NOT NULL DEFAULT 0,
    sold        BIGINT NOT NULL DEFAULT 0,
    price_minor BIGINT NOT NULL,
    currency    TEXT NOT NULL,
    event_date  TEXT NOT NULL,
    -- The version of the event snapshot applied last; older ones are stale.
    event_version BIGINT NOT NULL,
    updated_at  TEXT NOT NULL,
    CHECK (available >= 0 AND held >= 0 AND sold >= 0),
    CHECK (available + held + sold = capacity)
);

-- Tickets exist from the moment a seat is first held (a million-seat event
-- costs one inventory row, not a million ticket rows).
CREATE TABLE tickets (
    ticket_id       TEXT PRIMARY KEY,
    event_id        BIGINT NOT NULL REFERENCES inventory (event_id),
    status          TEXT NOT NULL,      -- AVAILABLE, HELD, SOLD or CANCELLED
    booking_id      TEXT,
    customer_id     TEXT,
    hold_expires_at TEXT,
    version         BIGINT NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX tickets_event_status ON tickets (event_id, status);
CREATE INDEX tickets_booking ON tickets (booking_id);
CREATE INDEX tickets_hold_expiry ON tickets (hold_expires_at) WHERE status = 'HELD';
