-- A click writes its event into every index of `events`; redirects are nearly all of its
-- rows, and two of those indexes serve them nothing:
-- - `events_url_id_type_idx` (url_id, event_type, id): a link's redirects are listed from
--   `events_url_id_idx` (url_id, id), and its other events (a handful per link) from a
--   partial index of the same columns, which clicks never write; it also serves the stats'
--   counts, in place of 0003's `events_url_id_counted_type_idx`;
-- - `events_event_type_idx` (event_type, id): `event_type=redirect` pages read the primary
--   key in id order, where redirects are nearly every row; the other types keep an index,
--   now partial, which clicks never write. Queries for those types say
--   `event_type <> 'redirect'` too, so that the planner may use it.
-- A click then writes the table and two indexes instead of four (loadtests/wrk/limit.sh).
--
-- Built inside the migration's transaction: while the partial index builds, writes to
-- `events` wait (clicks queue in the replicas, then spill). On a large events table, build
-- it beforehand without blocking writes, then upgrade:
--   CREATE INDEX CONCURRENTLY events_other_type_idx
--       ON events (event_type, id) WHERE event_type <> 'redirect';
--   CREATE INDEX CONCURRENTLY events_url_id_other_type_idx
--       ON events (url_id, event_type, id) WHERE event_type <> 'redirect';
-- (see 0003 for why not CONCURRENTLY here).
CREATE INDEX IF NOT EXISTS events_other_type_idx ON events (event_type, id) WHERE event_type <> 'redirect';
CREATE INDEX IF NOT EXISTS events_url_id_other_type_idx ON events (url_id, event_type, id) WHERE event_type <> 'redirect';
DROP INDEX IF EXISTS events_event_type_idx;
DROP INDEX IF EXISTS events_url_id_type_idx;
DROP INDEX IF EXISTS events_url_id_counted_type_idx;
