//! The topic exchanges the contract fixes, one per producing service.

pub const EVENTS: &str = "ticketer.events";
pub const BOOKING: &str = "ticketer.booking";
pub const PAYMENT: &str = "ticketer.payment";
pub const TICKET: &str = "ticketer.ticket";
/// Not in the contract's list: carries UserRegistered for the welcome mail.
pub const AUTH: &str = "ticketer.auth";
