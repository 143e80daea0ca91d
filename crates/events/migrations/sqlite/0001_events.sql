CREATE TABLE events (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_name         TEXT NOT NULL,
    description        TEXT NOT NULL,
    category           TEXT NOT NULL,
    location           TEXT NOT NULL,
    event_date         TEXT NOT NULL,   -- YYYY-MM-DD
    start_time         TEXT NOT NULL,   -- HH:MM
    end_time           TEXT NOT NULL,   -- HH:MM
    ticket_capacity    BIGINT NOT NULL CHECK (ticket_capacity BETWEEN 1 AND 1000000),
    ticket_price_minor BIGINT NOT NULL CHECK (ticket_price_minor >= 0),
    currency           TEXT NOT NULL,
    organizer          TEXT NOT NULL,
    status             TEXT NOT NULL,
    tickets_sold       BIGINT NOT NULL DEFAULT 0,
    version            BIGINT NOT NULL DEFAULT 1,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX events_listing ON events (status, event_date, start_time, id);
CREATE INDEX events_organizer ON events (organizer);
