//! End-to-end tests through the gateway, as a client would use Ticketer:
//! against the embedded stack always, and against every service running as
//! its own `ticketer serve` process on PostgreSQL, RabbitMQ and Redis when
//! `TICKETER_TEST_POSTGRES_URL`, `TICKETER_TEST_AMQP_URL` and
//! `TICKETER_TEST_REDIS_URL` are set.

/// Declares the two tests of a scenario `async fn name(s: &TestStack)`:
/// `name::embedded`, always run, and `name::production`, with every service
/// its own process on PostgreSQL, RabbitMQ and Redis, ignored (so counted
/// as skipped) unless the servers are given. An optional list of settings
/// goes to both stacks.
macro_rules! both_backends {
    ($scenario:ident) => {
        both_backends!($scenario, &[]);
    };
    ($scenario:ident, $env:expr) => {
        mod $scenario {
            use super::*;
            use crate::harness::TestStack;

            #[tokio::test]
            async fn embedded() {
                $scenario(&TestStack::embedded($env).await).await;
            }

            #[tokio::test]
            #[ignore = "needs the servers in TICKETER_TEST_*_URL; ./scripts/test runs it when they are set"]
            async fn production() {
                let Some(s) = TestStack::production_with($env).await else {
                    return;
                };
                $scenario(&s).await;
            }
        }
    };
}

mod bookings;
mod channels;
mod gateway;
mod harness;
mod hostile;
mod logs;
mod notifications;
mod operations;
mod payments;
mod process;
mod scenario;
mod traces;
mod waiting_rooms;
mod web;
