-- What the booking service knows of each event, from the events service's
-- snapshots: who organizes it, when it starts, whether it still runs.
CREATE TABLE events (
    event_id   BIGINT PRIMARY KEY,
    organizer  TEXT NOT NULL,
    event_date TEXT NOT NULL,
    start_time TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    BIGINT NOT NULL
);
