//! End-to-end tests through the gateway, as a client would use Ticketer:
//! against the embedded stack always, and against every service running as
//! its own `ticketer serve` process on PostgreSQL, RabbitMQ and Redis when
//! `TICKETER_TEST_POSTGRES_URL`, `TICKETER_TEST_AMQP_URL` and
//! `TICKETER_TEST_REDIS_URL` are set.

mod bookings;
mod gateway;
mod harness;
mod hostile;
mod process;
mod scenario;
