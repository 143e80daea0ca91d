-- Waiting rooms organizers open in front of a crowded sale: while one is
-- open, only buyers it has admitted may book the event.
CREATE TABLE waiting_rooms (
    event_id         BIGINT PRIMARY KEY,
    admitted_at_once INTEGER NOT NULL,
    claim_seconds    INTEGER NOT NULL,
    opened_by        TEXT NOT NULL,
    opened_at        TEXT NOT NULL
);
