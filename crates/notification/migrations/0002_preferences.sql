-- What each user wants to be told through; a user without a row gets the
-- defaults (email on).
CREATE TABLE preferences (
    user_id    TEXT PRIMARY KEY,
    email      INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
