-- A booking paid with a card the customer saved: its id, for the payment
-- service to look up (payment_token is then empty).
ALTER TABLE bookings ADD COLUMN payment_method_id TEXT;
