-- A search by place looks for the text anywhere in the location. Without an
-- index that reads every event the other filters matched (a common word:
-- half the table); trigrams let the planner combine both indexes. pg_trgm
-- ships with PostgreSQL's contrib and every major managed service, but not
-- with every build: without it searches by place still work, only slower.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX events_location_trgm ON events USING GIN (lower(location) gin_trgm_ops);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm unavailable (%): searches by place read every match', SQLERRM;
END
$$;
