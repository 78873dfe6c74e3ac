#!/usr/bin/env bash
# What recording a click writer's progress costs a direct click write on
# PostgreSQL: the batch transaction as the writers send it (10 clicks, one
# events INSERT over arrays, one counter upsert, COMMIT), without and with
# the `click_writers` upsert folded into the events INSERT as a CTE.
# Two pgbench clients, one writer (and counter shard) each, as CLICK_WRITERS=2.
# Alternates the two for ROUNDS rounds of SECONDS each; prints every tps and
# the median ratio of the pairs. Uses a scratch database, dropped at the end.
#
# Usage: loadtests/pgbench/click-writer-progress.sh [POSTGRES_URL] [ROUNDS] [SECONDS]
set -euo pipefail
url=${1:-${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
rounds=${2:-6}
seconds=${3:-5}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
db=clicks_progress_bench
bench_url=${url%/*}/$db
work=$(mktemp -d)
trap 'rm -rf "$work"; psql "$url" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true' EXIT

psql "$url" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
for migration in "$root"/app/migrations/postgres/*.sql; do
  psql -q "$bench_url" -f "$migration" >/dev/null
done
psql -q "$bench_url" -c "INSERT INTO urls (short_code, original_url, is_active, created_at, updated_at)
  SELECT 'c' || g, 'https://e.com/' || g, TRUE, now(), now() FROM generate_series(1, 100) g"

ids="ARRAY[1,2,3,4,5,6,7,8,9,10]::BIGINT[]"
events="INSERT INTO events (url_id, user_id, event_type, timestamp, details)
  SELECT url_id, user_id, 'redirect', at, jsonb_build_object('short_code', code)
  FROM UNNEST($ids, array_fill(NULL::BIGINT, ARRAY[10]), array_fill(now()::TIMESTAMP, ARRAY[10]),
              array_fill('c'::TEXT, ARRAY[10])) AS click (url_id, user_id, at, code);"
progress="WITH progress AS (INSERT INTO click_writers (writer, last_batch, updated_at)
  VALUES (:client_id, :seq, now()) ON CONFLICT (writer) DO UPDATE SET
  last_batch = excluded.last_batch, updated_at = excluded.updated_at) "
counters="INSERT INTO redirect_counts (url_id, shard, redirect_count, last_redirect_at)
  SELECT url_id, :client_id, clicks, latest
  FROM UNNEST($ids, array_fill(1::BIGINT, ARRAY[10]), array_fill(now()::TIMESTAMP, ARRAY[10]))
  AS delta (url_id, clicks, latest) ORDER BY url_id
  ON CONFLICT (url_id, shard) DO UPDATE SET
  redirect_count = redirect_counts.redirect_count + excluded.redirect_count,
  last_redirect_at = GREATEST(redirect_counts.last_redirect_at, excluded.last_redirect_at);"
# pgbench wants each statement on one line.
one_line() { tr '\n' ' ' | sed 's/  */ /g'; echo; }
{ echo '\set seq random(1, 1000000000)'; echo 'BEGIN;'; echo "$events" | one_line
  echo "$counters" | one_line; echo 'COMMIT;'; } >"$work/without.sql"
{ echo '\set seq random(1, 1000000000)'; echo 'BEGIN;'; echo "$progress$events" | one_line
  echo "$counters" | one_line; echo 'COMMIT;'; } >"$work/with.sql"

for _ in $(seq "$rounds"); do
  for variant in without with; do
    tps=$(pgbench -n -M prepared -c 2 -j 2 -T "$seconds" -f "$work/$variant.sql" "$bench_url" 2>/dev/null |
      awk '/^tps/ {print $3}')
    echo "$variant $tps"
  done
done | tee "$work/results"
# The tables grow and the machine's load drifts during the run, so compare
# each round's pair: with / without.
awk '$1 == "without" {w = $2} $1 == "with" {print $2 / w}' "$work/results" | sort -n |
  awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
    printf "with progress / without, per round: median %.3f over %d rounds\n", m, NR}'
