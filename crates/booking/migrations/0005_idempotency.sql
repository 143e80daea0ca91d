-- A booking remembers the Idempotency-Key it was made with, in its own row:
-- the key and the booking commit together, so a retry finds either both or
-- neither, whatever happened to the process in between.
ALTER TABLE bookings ADD COLUMN idempotency_key TEXT;
ALTER TABLE bookings ADD COLUMN request_hash TEXT;
CREATE UNIQUE INDEX bookings_idempotency ON bookings (customer_id, idempotency_key);
