-- SMS and push, each off until the user turns it on and says where:
-- a phone number (E.164) or a device's push token, never guessed.
ALTER TABLE preferences ADD COLUMN sms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE preferences ADD COLUMN phone_number TEXT;
ALTER TABLE preferences ADD COLUMN push INTEGER NOT NULL DEFAULT 0;
ALTER TABLE preferences ADD COLUMN push_token TEXT;
-- Each channel's worker looks for its own due notifications; the index
-- they used to share would only cost every insert a second update.
CREATE INDEX notifications_due_by_channel ON notifications (channel, status, next_attempt_at);
DROP INDEX notifications_due;
