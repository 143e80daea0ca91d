-- Full-text search over name and description (FTS5, Porter stemming like
-- PostgreSQL's english configuration): a search costs an index look-up
-- however long the descriptions, where LIKE scanned every one.
CREATE VIRTUAL TABLE events_search USING fts5(
    event_name, description,
    content = 'events', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO events_search (events_search) VALUES ('rebuild');
CREATE TRIGGER events_search_insert AFTER INSERT ON events BEGIN
    INSERT INTO events_search (rowid, event_name, description) VALUES (new.id, new.event_name, new.description);
END;
CREATE TRIGGER events_search_delete AFTER DELETE ON events BEGIN
    INSERT INTO events_search (events_search, rowid, event_name, description)
        VALUES ('delete', old.id, old.event_name, old.description);
END;
CREATE TRIGGER events_search_update AFTER UPDATE OF event_name, description ON events BEGIN
    INSERT INTO events_search (events_search, rowid, event_name, description)
        VALUES ('delete', old.id, old.event_name, old.description);
    INSERT INTO events_search (rowid, event_name, description) VALUES (new.id, new.event_name, new.description);
END;
