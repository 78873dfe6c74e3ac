-- Stats count a URL's events by type except `redirect`: a partial index of
-- the other types (see the PostgreSQL migration of the same number).
CREATE INDEX events_url_id_counted_type_idx ON events (url_id, event_type) WHERE event_type <> 'redirect';
