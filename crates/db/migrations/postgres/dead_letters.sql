-- Messages a consumer gave up on, kept by the consuming service when the
-- bus has no durable dead-letter queue of its own (the in-process bus;
-- RabbitMQ keeps them in `<queue>.dlq`). `ticketer dlq replay` sends them
-- again through this service's outbox and stamps replayed_at.
CREATE TABLE dead_letters (
    id           BIGSERIAL PRIMARY KEY,
    consumer     TEXT NOT NULL,
    message_id   TEXT,
    exchange     TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    body         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    dead_at      TEXT NOT NULL,
    replayed_at  TEXT
);
CREATE INDEX dead_letters_waiting ON dead_letters (consumer, id) WHERE replayed_at IS NULL;
