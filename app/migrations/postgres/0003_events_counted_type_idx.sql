-- no-transaction
-- Stats count a URL's events by type, except `redirect` (those are counted
-- in redirect_counts). The (url_id, event_type, id) index cannot skip a hot
-- link's millions of redirect entries; this partial index holds only the
-- other types, so the count reads a handful of entries, and clicks never
-- write to it. Built CONCURRENTLY (outside a transaction, hence the line
-- above): click inserts keep flowing while a large events table is indexed.
CREATE INDEX CONCURRENTLY events_url_id_counted_type_idx ON events (url_id, event_type) WHERE event_type <> 'redirect';
