-- Templates an administrator put in place of the shipped ones, by type
-- and channel; checked to render before they are stored.
CREATE TABLE templates (
    notification_type TEXT NOT NULL,
    channel           TEXT NOT NULL,
    subject           TEXT NOT NULL,
    body_text         TEXT NOT NULL,
    body_html         TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (notification_type, channel)
);
