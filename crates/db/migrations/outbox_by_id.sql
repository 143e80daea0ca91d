-- Relayed rows are deleted, no longer stamped published_at, so every row
-- left is unpublished and this partial index held what the primary key
-- holds: one more index entry written for every message, for nothing.
DROP INDEX IF EXISTS outbox_pending;
