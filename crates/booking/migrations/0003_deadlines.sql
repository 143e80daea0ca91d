-- When a waiting saga stage gives up (set while waiting for the payment).
ALTER TABLE bookings ADD COLUMN deadline_at TEXT;
CREATE INDEX bookings_deadline ON bookings (deadline_at);
