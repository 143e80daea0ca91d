-- A search by place looks for the text anywhere in the location. Without an
-- index that reads every event the other filters matched (a common word:
-- half the table); FTS5's trigram tokenizer finds the rows holding the text
-- (case folded), and the LIKE beside it keeps the exact rule.
CREATE VIRTUAL TABLE events_places USING fts5(
    location,
    content = 'events', content_rowid = 'id',
    tokenize = 'trigram'
);
INSERT INTO events_places (events_places) VALUES ('rebuild');
CREATE TRIGGER events_places_insert AFTER INSERT ON events BEGIN
    INSERT INTO events_places (rowid, location) VALUES (new.id, new.location);
END;
CREATE TRIGGER events_places_delete AFTER DELETE ON events BEGIN
    INSERT INTO events_places (events_places, rowid, location) VALUES ('delete', old.id, old.location);
END;
CREATE TRIGGER events_places_update AFTER UPDATE OF location ON events BEGIN
    INSERT INTO events_places (events_places, rowid, location) VALUES ('delete', old.id, old.location);
    INSERT INTO events_places (rowid, location) VALUES (new.id, new.location);
END;
