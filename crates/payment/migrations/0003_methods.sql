-- Cards a customer saved to pay with later. The provider's token stays
-- here and is never shown; the customer sees brand, last four and expiry.
CREATE TABLE payment_methods (
    id             TEXT PRIMARY KEY,
    customer_id    TEXT NOT NULL,
    provider_token TEXT NOT NULL,
    brand          TEXT NOT NULL,
    last4          TEXT NOT NULL,
    exp_month      BIGINT NOT NULL,
    exp_year       BIGINT NOT NULL,
    is_default     BIGINT NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL
);
CREATE INDEX payment_methods_customer ON payment_methods (customer_id, created_at);
-- At most one default per customer, whatever two saves do at once.
CREATE UNIQUE INDEX payment_methods_one_default ON payment_methods (customer_id) WHERE is_default = 1;
