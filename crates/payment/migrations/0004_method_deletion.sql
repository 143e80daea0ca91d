-- A deleted card is kept (no longer listed, usable or default) so that a
-- charge made with it and left PROCESSING can still be asked about.
ALTER TABLE payment_methods ADD COLUMN deleted_at TEXT;
