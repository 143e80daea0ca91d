-- What the service knows of the people it writes to, copied from auth's
-- UserRegistered: addresses are never guessed.
CREATE TABLE contacts (
    user_id    TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name  TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- The events, as their last snapshot said (name, place, date, organizer).
CREATE TABLE events (
    event_id   BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    location   TEXT NOT NULL,
    event_date TEXT NOT NULL,
    start_time TEXT NOT NULL,
    organizer  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Confirmed bookings standing, by event: who to tell when it is cancelled.
CREATE TABLE holdings (
    booking_id  TEXT PRIMARY KEY,
    event_id    BIGINT NOT NULL,
    customer_id TEXT NOT NULL
);
CREATE INDEX holdings_event ON holdings (event_id);

-- Every notification, stored before it is sent: the delivery work queue
-- and its record. dedup_key (the cause and the recipient) makes a
-- redelivered message create nothing twice.
CREATE TABLE notifications (
    id                TEXT PRIMARY KEY,
    dedup_key         TEXT NOT NULL UNIQUE,
    recipient_id      TEXT,
    recipient         TEXT NOT NULL,
    channel           TEXT NOT NULL,
    notification_type TEXT NOT NULL,
    subject           TEXT NOT NULL,
    body_text         TEXT NOT NULL,
    body_html         TEXT NOT NULL,
    status            TEXT NOT NULL,          -- PENDING, SENT or FAILED
    retry_count       INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT NOT NULL,
    last_error        TEXT,
    event_id          BIGINT,
    booking_id        TEXT,
    created_at        TEXT NOT NULL,
    sent_at           TEXT
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX notifications_recipient ON notifications (recipient_id, created_at);
CREATE INDEX notifications_booking ON notifications (booking_id);
CREATE INDEX notifications_event ON notifications (event_id);
