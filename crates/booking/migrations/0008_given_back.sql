-- Holds given back for bookings that were never made. A new booking's
-- seats are asked for while its row is committed; when the commit leaves
-- the row out (its Idempotency-Key was taken meanwhile) or fails, seats
-- held for it go back through the ticket service's queue. Until they are
-- back, a hold refused as sold out must wait for them like for those of a
-- failed booking (store::seats_coming_back).
CREATE TABLE given_back (
    booking_id TEXT PRIMARY KEY,
    event_id   BIGINT NOT NULL,
    given_at   TEXT NOT NULL
);
CREATE INDEX given_back_event ON given_back (event_id, given_at);
