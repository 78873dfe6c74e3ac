-- EXPLAIN (ANALYZE, BUFFERS) of the statements behind the benchmarked
-- endpoints, as the service sends them (app/src/store/sql.rs: the list
-- query, its capped COUNT and, past the cap, a plan-only EXPLAIN; the
-- redirect look-up; the stats queries; the click insert). Run by
-- loadtests/scale/run.sh with:
--   -v hot_url=… -v heavy_user=… -v deep_url=… -v deep_event=… -v code=…
--   -v cap=10001 (COUNT_CAP + 1)
-- Each block starts with a line "### name"; run.sh summarises the top
-- node, execution time and buffers of each.
--
-- The service uses prepared statements; after five executions PostgreSQL
-- may switch to a generic plan, which does not see the parameter values.
-- The "generic:" blocks force that plan for the statements whose best plan
-- depends on the value (a hot URL's events, a heavy user's URLs).

\set ON_ERROR_STOP 1
\pset pager off

\echo '### redirect: resolve a code'
EXPLAIN (ANALYZE, BUFFERS) SELECT short_code, id AS url_id, user_id, original_url, is_active, version FROM urls WHERE short_code = :'code';

\echo '### click: insert one redirect event (rolled back)'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS) INSERT INTO events (url_id, user_id, event_type, timestamp, details)
VALUES (:hot_url, NULL, 'redirect', now()::timestamp(0), '{"short_code": "x"}');
ROLLBACK;

\echo '### GET /urls: page 1'
EXPLAIN (ANALYZE, BUFFERS) SELECT id, user_id, short_code, original_url, title, is_active, created_at, updated_at, version FROM urls WHERE TRUE ORDER BY id LIMIT 25 OFFSET 0;
\echo '### GET /urls: count'
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM (SELECT 1 FROM urls WHERE TRUE LIMIT :cap) AS matching;
\echo '### GET /urls: estimate past the cap (plan only)'
EXPLAIN (FORMAT JSON) SELECT 1 FROM urls WHERE TRUE;

\echo '### GET /urls?after_id=deep: page'
EXPLAIN (ANALYZE, BUFFERS) SELECT id, user_id, short_code, original_url, title, is_active, created_at, updated_at, version FROM urls WHERE TRUE AND id > :deep_url ORDER BY id LIMIT 25;

\echo '### GET /urls?page=101&per_page=100: offset at the cap'
EXPLAIN (ANALYZE, BUFFERS) SELECT id, user_id, short_code, original_url, title, is_active, created_at, updated_at, version FROM urls WHERE TRUE ORDER BY id LIMIT 100 OFFSET 10000;

\echo '### GET /urls?user_id=heavy: page'
EXPLAIN (ANALYZE, BUFFERS) SELECT id, user_id, short_code, original_url, title, is_active, created_at, updated_at, version FROM urls WHERE TRUE AND user_id = :heavy_user ORDER BY id LIMIT 25 OFFSET 0;
\echo '### GET /urls?user_id=heavy: count'
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM (SELECT 1 FROM urls WHERE TRUE AND user_id = :heavy_user LIMIT :cap) AS matching;

\echo '### GET /urls?is_active=false: count'
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM (SELECT 1 FROM urls WHERE TRUE AND is_active = false LIMIT :cap) AS matching;

\echo '### GET /events?url_id=hot: page'
EXPLAIN (ANALYZE, BUFFERS) SELECT id, url_id, user_id, event_type, timestamp, details FROM events WHERE TRUE AND url_id = :hot_url ORDER BY id LIMIT 25 OFFSET 0;
\echo '### GET /events?url_id=hot: count'
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE TRUE AND url_id = :hot_url LIMIT :cap) AS matching;

\echo '### GET /events?event_type=redirect&after_id=deep: page'
EXPLAIN (ANALYZE, BUFFERS) SELECT id, url_id, user_id, event_type, timestamp, details FROM events WHERE TRUE AND event_type = 'redirect' AND id > :deep_event ORDER BY id LIMIT 25;
\echo '### GET /events?event_type=redirect: count'
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE TRUE AND event_type = 'redirect' LIMIT :cap) AS matching;

\echo '### GET /events?page=101&per_page=100: offset at the cap'
EXPLAIN (ANALYZE, BUFFERS) SELECT id, url_id, user_id, event_type, timestamp, details FROM events WHERE TRUE ORDER BY id LIMIT 100 OFFSET 10000;

\echo '### GET /urls/hot/stats: counts by type except redirect'
EXPLAIN (ANALYZE, BUFFERS) SELECT event_type, COUNT(*) FROM events WHERE url_id = :hot_url AND event_type <> 'redirect' GROUP BY event_type;
\echo '### GET /urls/hot/stats: redirect counters'
EXPLAIN (ANALYZE, BUFFERS) SELECT redirect_count, last_redirect_at FROM redirect_counts WHERE url_id = :hot_url;

\echo '### GET /users: page 1'
EXPLAIN (ANALYZE, BUFFERS) SELECT id, username, email, created_at FROM users WHERE deleted_at IS NULL ORDER BY id LIMIT 25 OFFSET 0;
\echo '### GET /users: count'
EXPLAIN (ANALYZE, BUFFERS) SELECT COUNT(*) FROM (SELECT 1 FROM users WHERE deleted_at IS NULL LIMIT :cap) AS matching;

-- Generic plans (what a prepared statement may run after five executions).
SET plan_cache_mode = force_generic_plan;
PREPARE events_by_url(bigint, bigint, bigint) AS
  SELECT id, url_id, user_id, event_type, timestamp, details FROM events WHERE TRUE AND url_id = $1 ORDER BY id LIMIT $2 OFFSET $3;
PREPARE events_by_url_count(bigint, bigint) AS
  SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE TRUE AND url_id = $1 LIMIT $2) AS matching;
PREPARE urls_by_user(bigint, bigint, bigint) AS
  SELECT id, user_id, short_code, original_url, title, is_active, created_at, updated_at, version FROM urls WHERE TRUE AND user_id = $1 ORDER BY id LIMIT $2 OFFSET $3;
PREPARE stats_counts(bigint) AS
  SELECT event_type, COUNT(*) FROM events WHERE url_id = $1 AND event_type <> 'redirect' GROUP BY event_type;
PREPARE events_by_type_after(text, bigint, bigint) AS
  SELECT id, url_id, user_id, event_type, timestamp, details FROM events WHERE TRUE AND event_type = $1 AND id > $2 ORDER BY id LIMIT $3;

\echo '### generic: GET /events?url_id=hot: page'
EXPLAIN (ANALYZE, BUFFERS) EXECUTE events_by_url(:hot_url, 25, 0);
\echo '### generic: GET /events?url_id=hot: count'
EXPLAIN (ANALYZE, BUFFERS) EXECUTE events_by_url_count(:hot_url, :cap);
\echo '### generic: GET /urls?user_id=heavy: page'
EXPLAIN (ANALYZE, BUFFERS) EXECUTE urls_by_user(:heavy_user, 25, 0);
\echo '### generic: GET /urls/hot/stats: counts by type'
EXPLAIN (ANALYZE, BUFFERS) EXECUTE stats_counts(:hot_url);
\echo '### generic: GET /events?event_type=redirect&after_id=deep: page'
EXPLAIN (ANALYZE, BUFFERS) EXECUTE events_by_type_after('redirect', :deep_event, 25);
