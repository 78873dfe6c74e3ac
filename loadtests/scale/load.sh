#!/usr/bin/env bash
# Creates and fills a PostgreSQL database for the scale benchmark
# (loadtests/scale/run.sh) on the system server (127.0.0.1:5432, user
# postgres, trust).
#
# Usage: loadtests/scale/load.sh [big|small]
#
#   big    (default) database shortener_scale: 100,000 users, 1,000,000
#          URLs, 10,000,000 events
#   small  database shortener_scale_small: 1,000 users, 10,000 URLs,
#          100,000 events (the same shapes at 1 %, for the comparison)
#
# The service creates the schema itself: `shortener serve` ($SHORTENER_BIN,
# default /work/bin/shortener) is started once against the new database on
# 127.0.0.1:$SCALE_PORT (18090) and stopped when healthy. fill.sql then
# loads the rows set-based (generate_series; see its header for the shapes)
# and checks their consistency, VACUUM ANALYZE follows, and the script
# prints the timings and the on-disk size of every table and index.
#
# Idempotent: a database already filled with the same sizes is left as it
# is (its sizes are printed); RELOAD=1 drops and loads it again. A partly
# loaded database (an interrupted run) is always dropped and reloaded.
#
# Environment: SCALE_USERS, SCALE_URLS, SCALE_EVENTS, SCALE_DB (override the
# preset), RELOAD, SHORTENER_BIN, SCALE_PORT, SCALE_PGHOST, SCALE_PGPORT,
# SCALE_PGUSER, SCALE_DIR (/tmp/shortener-scale: logs).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

size=${1:-big}
case $size in
  big|small) ;;
  *) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 2 ;;
esac
scale_preset "$size"
scale_ensure_tools
mkdir -p "$SCALE_DIR"
trap stop_service EXIT

print_sizes() {
  echo "== on-disk sizes of $SCALE_DB (pg_total_relation_size: heap + TOAST + indexes)"
  spsql "$SCALE_DB" -P footer=off <<'SQL'
SELECT c.relname AS "table",
       c.reltuples::bigint AS "rows (estimate)",
       pg_size_pretty(pg_table_size(c.oid)) AS "heap+toast",
       pg_size_pretty(pg_indexes_size(c.oid)) AS "indexes",
       pg_size_pretty(pg_total_relation_size(c.oid)) AS "total",
       pg_total_relation_size(c.oid) AS "total bytes",
       CASE WHEN c.reltuples > 0 THEN round(pg_total_relation_size(c.oid) / c.reltuples) END AS "bytes/row"
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations' AND c.relname NOT LIKE 'scale\_%'
ORDER BY pg_total_relation_size(c.oid) DESC;
SELECT t.relname AS "table", i.relname AS "index",
       pg_size_pretty(pg_relation_size(i.oid)) AS "size",
       pg_relation_size(i.oid) AS "bytes",
       CASE WHEN t.reltuples > 0 THEN round((pg_relation_size(i.oid) / t.reltuples)::numeric, 1) END AS "bytes/row"
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = 'public' AND t.relname <> '_sqlx_migrations'
ORDER BY t.relname, i.relname;
SELECT pg_size_pretty(pg_database_size(current_database())) AS "database size";
SQL
  df -h "$(spsql postgres -tAc 'SHOW data_directory')" | sed 's/^/  /'
}

if scale_loaded && [ "${RELOAD:-0}" != 1 ]; then
  log "$SCALE_DB already holds the data set ($(scale_marker)); RELOAD=1 loads it again"
  print_sizes
  exit 0
fi

echo "== $SCALE_DB: $SCALE_USERS users, $SCALE_URLS URLs, $SCALE_EVENTS events"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); disk before:"
df -h "$(spsql postgres -tAc 'SHOW data_directory')" | sed 's/^/  /'
t_start=$(date +%s)

spsql postgres -c "DROP DATABASE IF EXISTS $SCALE_DB WITH (FORCE)" -c "CREATE DATABASE $SCALE_DB"

echo "== schema: the service's migrations (shortener serve, once)"
logf="$SCALE_DIR/load-$SCALE_DB-serve.log"
: >"$logf"
start_service "$logf" "$(random_key)" CACHE_WARM_ENTRIES=0
stop_service
spsql "$SCALE_DB" -tAc "SELECT 'migrations applied: ' || string_agg(version || ' ' || description, ', ' ORDER BY version) FROM _sqlx_migrations"

echo "== fill (fill.sql)"
t_fill=$(date +%s)
spsql "$SCALE_DB" -v users="$SCALE_USERS" -v urls="$SCALE_URLS" -v events="$SCALE_EVENTS" \
  -f "$SCALE_HERE/fill.sql"
loaded=$(spsql "$SCALE_DB" -tAc "SELECT (SELECT count(*) FROM urls) || ' ' || (SELECT count(*) FROM events)")
read -r n_urls n_events <<<"$loaded"
if [ "$n_urls" != "$SCALE_URLS" ] || [ "$n_events" -lt $((SCALE_EVENTS * 99 / 100)) ]; then
  die "fill.sql did not complete: $n_urls URLs, $n_events events in $SCALE_DB"
fi
t_vacuum=$(date +%s)
echo "== VACUUM ANALYZE"
spsql "$SCALE_DB" -c 'VACUUM ANALYZE'
t_end=$(date +%s)
spsql postgres -c "COMMENT ON DATABASE $SCALE_DB IS '$(scale_marker), loaded $(date -u +%FT%TZ)'"

echo "== row counts"
spsql "$SCALE_DB" -P footer=off -c "
SELECT (SELECT count(*) FROM users) AS users,
       (SELECT count(*) FROM users WHERE deleted_at IS NOT NULL) AS deleted_users,
       (SELECT count(*) FROM urls) AS urls,
       (SELECT count(*) FROM urls WHERE NOT is_active) AS inactive_urls,
       (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM redirect_counts) AS urls_with_redirects,
       (SELECT max(redirect_count) FROM redirect_counts) AS most_redirects_one_url" \
  -c "SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"
echo "== timings"
printf '  schema (service start):  %4d s\n' $((t_fill - t_start))
printf '  fill.sql:                %4d s\n' $((t_vacuum - t_fill))
printf '  VACUUM ANALYZE:          %4d s\n' $((t_end - t_vacuum))
printf '  total:                   %4d s\n' $((t_end - t_start))
print_sizes
