-- Responses to mutating requests sent with an Idempotency-Key, replayed when
-- the same caller retries the same request. status is NULL while the first
-- request is still running.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       BIGINT,
    content_type TEXT,
    body         TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
