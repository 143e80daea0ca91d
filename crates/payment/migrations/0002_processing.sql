-- A charge the provider has not answered yet stands as PROCESSING and keeps
-- the ProcessPayment envelope that asked for it (token, amount, and the
-- flow to answer in), so that whichever process finds it (the one that
-- asked, or any replica's sweep after a crash) can finish it with the same
-- idempotency key and answer the saga. Cleared once the charge is settled.
ALTER TABLE payments ADD COLUMN pending_command TEXT;
CREATE INDEX payments_processing ON payments (status, updated_at);
