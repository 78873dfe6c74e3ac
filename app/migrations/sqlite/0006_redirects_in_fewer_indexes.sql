-- Clicks write two indexes of `events` instead of four (see the PostgreSQL migration of the
-- same name): redirects are listed from `events_url_id_idx` and the primary key; the other
-- types from partial indexes that clicks never write.
CREATE INDEX IF NOT EXISTS events_other_type_idx ON events (event_type, id) WHERE event_type <> 'redirect';
CREATE INDEX IF NOT EXISTS events_url_id_other_type_idx ON events (url_id, event_type, id) WHERE event_type <> 'redirect';
DROP INDEX IF EXISTS events_event_type_idx;
DROP INDEX IF EXISTS events_url_id_type_idx;
DROP INDEX IF EXISTS events_url_id_counted_type_idx;
