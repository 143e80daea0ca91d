-- One database per service (run once, by the postgres image, on an empty
-- data directory). The services create their tables themselves.
CREATE DATABASE ticketer_auth;
CREATE DATABASE ticketer_events;
CREATE DATABASE ticketer_notification;
CREATE DATABASE ticketer_booking;
CREATE DATABASE ticketer_ticket;
CREATE DATABASE ticketer_payment;
