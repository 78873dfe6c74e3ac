-- Fills an empty shortener schema (created by the service's own migrations)
-- with a synthetic data set, set-based (generate_series), in one session.
-- Run by loadtests/scale/load.sh:
--
--   psql -v ON_ERROR_STOP=1 -v users=N -v urls=N -v events=N -f fill.sql
--
-- Shapes (deterministic for given sizes: setseed):
--   users    ids 1..users, created over 360 days; about 10 % of the
--            usernames repeat; 2 % soft-deleted (deleted_at set).
--   urls     ids 1..urls in creation order over 410 days; 5 % without a
--            user; owners skewed (user_id = 1 + users * r^3: user 1 owns
--            about users^(-1/3) of all URLs); 30 % edited once; 8 %
--            deactivated, plus every URL of a deleted user; 7-character
--            codes of [A-Za-z0-9] from a bijection of the id (unique, not
--            sequential).
--   events   one `created` per URL, one `updated` per edited URL, one
--            `deleted` per inactive URL, 1 % custom `share` events, and the
--            rest `redirect`s: the URL of a click has a Zipf-like rank
--            (rank = exp(r * ln(urls + 1)), so rank k gets a share of about
--            1/(k ln urls)), ranks spread over the ids by a bijection; each
--            event falls inside its URL's life. Ids follow the timestamps,
--            as in a running service.
--   redirect_counts  exactly COUNT and MAX(timestamp) of each URL's
--            `redirect` events.
--
-- Secondary indexes of urls and events (those not backing a constraint)
-- are dropped before the load and re-created from their saved definitions
-- afterwards, so the result has exactly the migrations' indexes. Foreign
-- keys are not checked row by row during the load
-- (session_replication_role = replica); the checks at the end verify them
-- set-based instead.

\set ON_ERROR_STOP 1
\timing on

SET work_mem = '1GB';
SET maintenance_work_mem = '1GB';
SET synchronous_commit = off;
SET session_replication_role = replica;
SELECT setseed(0.42);

\echo '== checking the schema is empty'
SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM urls)
     + (SELECT count(*) FROM events) + (SELECT count(*) FROM redirect_counts) AS rows_present \gset
SELECT :rows_present > 0 AS not_empty \gset
\if :not_empty
  \echo 'the schema already holds rows: load into a fresh database'
  SELECT 1/0 AS refuse_non_empty;
\endif

-- The end of the simulated history; everything happens before it.
\set t_end '''2026-11-01 00:00:00'''::timestamp

\echo '== saving and dropping the secondary indexes of urls and events'
CREATE TEMP TABLE saved_indexes AS
SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid IN ('urls'::regclass, 'events'::regclass)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid);
SELECT name, definition FROM saved_indexes ORDER BY name;
SELECT format('DROP INDEX %I', name) FROM saved_indexes \gexec

\echo '== users'
INSERT INTO users (id, username, email, created_at, deleted_at)
SELECT i,
       'user' || (1 + (i * 7919) % greatest(:users * 9 / 10, 1)),
       'user' || i || '@example.' || (ARRAY['com', 'org', 'net', 'io'])[1 + i % 4],
       created,
       CASE WHEN i % 50 = 7
            THEN date_trunc('second', greatest(:t_end - random() * interval '60 days', created + interval '1 day'))
       END
FROM (SELECT i, date_trunc('second', :t_end - interval '420 days' + (i::float8 / :users) * interval '360 days') AS created
      FROM generate_series(1, :users) AS i) AS g;

\echo '== planning urls'
-- One row per URL with everything its events need.
CREATE TEMP TABLE plan_urls AS
WITH base AS (
    SELECT i AS id,
           CASE WHEN random() < 0.05 THEN NULL
                ELSE 1 + least(floor(:users * power(random(), 3))::bigint, :users - 1)
           END AS user_id,
           date_trunc('second', :t_end - interval '420 days' + (i::float8 / :urls) * interval '410 days') AS created_at,
           -- a bijection of 0..62^7-1 (the multiplier is odd and not a multiple of 31)
           ((i::numeric * 2176477521739) % 3521614606208)::bigint AS x,
           random() AS r_upd, random() AS r_upd_at, random() AS r_del, random() AS r_del_at,
           random() AS r_title
    FROM generate_series(1, :urls) AS i
), timed AS (
    SELECT b.*,
           CASE WHEN r_upd < 0.3
                THEN date_trunc('second', b.created_at + r_upd_at * 0.5 * (:t_end - b.created_at)) END AS upd_at,
           u.deleted_at AS owner_deleted_at
    FROM base b LEFT JOIN users u ON u.id = b.user_id
)
SELECT id, user_id, created_at, upd_at,
       substr(a, (x % 62)::int + 1, 1) || substr(a, (x / 62 % 62)::int + 1, 1)
         || substr(a, (x / 3844 % 62)::int + 1, 1) || substr(a, (x / 238328 % 62)::int + 1, 1)
         || substr(a, (x / 14776336 % 62)::int + 1, 1) || substr(a, (x / 916132832 % 62)::int + 1, 1)
         || substr(a, (x / 56800235584 % 62)::int + 1, 1) AS short_code,
       'https://www.site' || (id % 9973) || '.example/' || (ARRAY['articles', 'docs', 'p', 'shop/item', 'watch'])[1 + id % 5]
         || '/' || substr(md5(id::text), 1, 12 + (id % 17)::int) AS original_url,
       CASE WHEN r_title < 0.3 THEN NULL
            ELSE (ARRAY['News', 'Docs', 'Blog post', 'Product', 'Video'])[1 + id % 5] || ' ' || id END AS title,
       CASE WHEN owner_deleted_at IS NOT NULL
              THEN greatest(owner_deleted_at, coalesce(upd_at, created_at) + interval '1 second')
            WHEN r_del < 0.08
              THEN greatest(date_trunc('second', created_at + (0.5 + 0.5 * r_del_at) * (:t_end - created_at)),
                            coalesce(upd_at, created_at) + interval '1 second')
       END AS del_at,
       CASE WHEN owner_deleted_at IS NOT NULL THEN 'owner_deleted' ELSE 'user_requested' END AS del_reason
FROM timed, (SELECT 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'::text AS a) AS alphabet;
ALTER TABLE plan_urls ADD PRIMARY KEY (id);
ANALYZE plan_urls;

\echo '== urls'
INSERT INTO urls (id, user_id, short_code, original_url, title, is_active, created_at, updated_at, version)
SELECT id, user_id, short_code, original_url, title, del_at IS NULL, created_at,
       coalesce(del_at, upd_at, created_at),
       1 + (upd_at IS NOT NULL)::int + (del_at IS NOT NULL)::int
FROM plan_urls ORDER BY id;

\echo '== planning events'
SELECT count(*) FILTER (WHERE upd_at IS NOT NULL) AS n_upd,
       count(*) FILTER (WHERE del_at IS NOT NULL) AS n_del
FROM plan_urls \gset
SELECT (:events / 100)::bigint AS n_custom \gset
SELECT greatest(:events - :urls - :n_upd - :n_del - :n_custom, 0) AS n_redirect \gset
\echo created :urls updated :n_upd deleted :n_del share :n_custom redirect :n_redirect

-- kind: 1 created, 2 updated, 3 deleted, 4 share, 5 redirect
CREATE TEMP TABLE plan_events (url_id bigint NOT NULL, kind smallint NOT NULL, ts timestamp NOT NULL);
INSERT INTO plan_events
SELECT id, 1, created_at FROM plan_urls
UNION ALL SELECT id, 2, upd_at FROM plan_urls WHERE upd_at IS NOT NULL
UNION ALL SELECT id, 3, del_at FROM plan_urls WHERE del_at IS NOT NULL;
INSERT INTO plan_events
SELECT p.id, 4, date_trunc('second', p.created_at + random() * (coalesce(p.del_at, :t_end) - p.created_at))
FROM (SELECT 1 + (random() * (:urls - 1))::bigint AS url_id FROM generate_series(1, :n_custom)) AS c
JOIN plan_urls p ON p.id = c.url_id;
INSERT INTO plan_events
SELECT p.id, 5, date_trunc('second', p.created_at + random() * (coalesce(p.del_at, :t_end) - p.created_at))
FROM (SELECT least(floor(exp(random() * ln(:urls + 1)))::bigint, :urls) AS rank
      FROM generate_series(1, :n_redirect)) AS r
JOIN plan_urls p ON p.id = ((r.rank - 1) * 2147483647::bigint) % :urls + 1;

\echo '== events (ids in timestamp order)'
INSERT INTO events (id, url_id, user_id, event_type, timestamp, details)
SELECT row_number() OVER (ORDER BY e.ts, e.url_id, e.kind),
       e.url_id, p.user_id,
       (ARRAY['created', 'updated', 'deleted', 'share', 'redirect'])[e.kind],
       e.ts,
       CASE e.kind
         WHEN 1 THEN jsonb_build_object('short_code', p.short_code, 'original_url', p.original_url)
         WHEN 2 THEN jsonb_build_object('field', 'title', 'new_value', p.title)
         WHEN 3 THEN jsonb_build_object('reason', p.del_reason)
         WHEN 4 THEN jsonb_build_object('channel', (ARRAY['email', 'chat', 'social'])[1 + (e.url_id % 3)::int])
         ELSE jsonb_build_object('short_code', p.short_code)
       END
FROM plan_events e JOIN plan_urls p ON p.id = e.url_id;

\echo '== redirect_counts (from the redirect events)'
INSERT INTO redirect_counts (url_id, redirect_count, last_redirect_at)
SELECT url_id, count(*), max(timestamp) FROM events WHERE event_type = 'redirect'
GROUP BY url_id ORDER BY url_id;

\echo '== re-creating the secondary indexes'
SELECT definition FROM saved_indexes ORDER BY name \gexec

\echo '== moving the id sequences past the loaded ids'
SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM users), false);
SELECT setval(pg_get_serial_sequence('urls', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM urls), false);
SELECT setval(pg_get_serial_sequence('events', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM events), false);

RESET session_replication_role;

\echo '== checks (each must be 0)'
SELECT
  (SELECT count(*) FROM urls u WHERE u.user_id IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM users s WHERE s.id = u.user_id)) AS urls_without_user,
  (SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM urls u WHERE u.id = e.url_id)) AS events_without_url,
  (SELECT count(*) FROM events e WHERE e.user_id IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM users s WHERE s.id = e.user_id)) AS events_without_user,
  (SELECT count(*) FROM urls u JOIN users s ON s.id = u.user_id
     WHERE s.deleted_at IS NOT NULL AND u.is_active) AS active_urls_of_deleted_users,
  (SELECT count(*) FROM (SELECT url_id, count(*) AS n, max(timestamp) AS last FROM events
      WHERE event_type = 'redirect' GROUP BY url_id) AS e
     FULL JOIN redirect_counts c USING (url_id)
     WHERE c.redirect_count IS DISTINCT FROM e.n OR c.last_redirect_at IS DISTINCT FROM e.last) AS counter_mismatches,
  (SELECT count(*) FROM events e JOIN urls u ON u.id = e.url_id WHERE e.timestamp < u.created_at) AS events_before_their_url
\gset check_
\echo urls_without_user :check_urls_without_user, events_without_url :check_events_without_url, events_without_user :check_events_without_user
\echo active_urls_of_deleted_users :check_active_urls_of_deleted_users, counter_mismatches :check_counter_mismatches, events_before_their_url :check_events_before_their_url
SELECT (:check_urls_without_user + :check_events_without_url + :check_events_without_user
        + :check_active_urls_of_deleted_users + :check_counter_mismatches
        + :check_events_before_their_url) > 0 AS failed \gset
\if :failed
  \echo 'a consistency check failed'
  SELECT 1/0 AS consistency_check_failed;
\endif
