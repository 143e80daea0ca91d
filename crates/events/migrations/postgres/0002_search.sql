-- PostgreSQL has searched a generated tsvector with a GIN index since the
-- first migration; this step exists for SQLite's FTS5 table.
SELECT 1;
