-- One charge per booking: the UNIQUE booking_id is what makes a redelivered
-- or retried ProcessPayment harmless.
CREATE TABLE payments (
    payment_id         TEXT PRIMARY KEY,
    booking_id         TEXT NOT NULL UNIQUE,
    customer_id        TEXT NOT NULL,
    amount_minor       BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL,      -- SUCCEEDED, FAILED or REFUNDED
    failure_reason     TEXT,
    provider_reference TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX payments_customer ON payments (customer_id);
