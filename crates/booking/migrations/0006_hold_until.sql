-- Until when the ticket service keeps the booking's seats (from
-- TicketsHeld): a payment that succeeds with enough of the hold left
-- confirms the booking at once.
ALTER TABLE bookings ADD COLUMN hold_until TEXT;
