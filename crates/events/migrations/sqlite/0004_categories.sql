-- A category's events in listing order straight from an index. Without it
-- PostgreSQL, which keeps no statistics for lower(category), guessed that
-- few events match, read the whole table and sorted it (page 15 of a
-- category of 10,000 events: 12 ms); SQLite read every row for its
-- category while walking the listing.
CREATE INDEX events_category_listing ON events (lower(category), status, event_date, start_time, id);
