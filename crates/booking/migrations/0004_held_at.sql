-- When the seats were held: the customer's countdown starts there, and the
-- time from request to hold is the figure a flash sale is judged by.
ALTER TABLE bookings ADD COLUMN held_at TEXT;
