-- `events` is an append-only log: every row names a link, user and key the same request has
-- just read, and nothing ever deletes a link, user or key (links and users are deactivated,
-- keys revoked). Its foreign keys therefore guarded nothing, and cost the click path most of
-- all: each inserted event ran a check that takes a FOR KEY SHARE lock on its link's row in
-- `urls` (a WAL record, and a MultiXact when writers click the same hot link at once), about a
-- fifth of a click batch's statement (loadtests/wrk/limit.sh, docs/benchmarks.md).
-- `redirect_counts` keeps its key to `urls`: its check runs only when a link's counter row is
-- first created, not per click.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_url_id_fkey;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_user_id_fkey;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_key_id_fkey;
