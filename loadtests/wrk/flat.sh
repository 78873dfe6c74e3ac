#!/usr/bin/env bash
# Is the embedded redirect flat with size? One replica on an SQLite file of
# SMALL_LINKS links and SMALL_EVENTS events, then on one of BIG_LINKS and
# BIG_EVENTS (filled set-based with sqlite3 after `shortener migrate` made
# the schema, so the file has the page size a new database gets), each
# pinned to core $SERVER_CPU, wrk (64 connections) on core $CLIENT_CPU
# following HOT_CODES of the links (cache hits; every redirect still writes
# its click into the big `events` table and its indexes), ROUNDS rounds
# alternating small and big.
#
# Usage: loadtests/wrk/flat.sh
#
# Environment: SMALL_LINKS (10000), SMALL_EVENTS (100000), BIG_LINKS
# (1000000), BIG_EVENTS (10000000), HOT_CODES (100), ROUNDS (2), DURATION
# (15s), FLAT_PORT (18091), SHORTENER_BIN, SERVER_CPU, CLIENT_CPU. The big
# file takes about 1.2 GB of disk while the script runs.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in
  "") ;;
  *) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 2 ;;
esac
SMALL_LINKS=${SMALL_LINKS:-10000}
SMALL_EVENTS=${SMALL_EVENTS:-100000}
BIG_LINKS=${BIG_LINKS:-1000000}
BIG_EVENTS=${BIG_EVENTS:-10000000}
HOT_CODES=${HOT_CODES:-100}
ROUNDS=${ROUNDS:-2}
FLAT_PORT=${FLAT_PORT:-18091}
sqlite_replica_prerequisites "$FLAT_PORT" FLAT_PORT

scratch_dir flat

fill() { # name links events
  local db="$work/$1/shortener.db"
  mkdir -p "$work/$1"
  env -i PATH="$PATH" DATABASE_URL="sqlite://$db" "$SHORTENER_BIN" migrate >/dev/null
  log "$1: writing $2 links and $3 events into $db"
  # No journal and a large page cache while filling: one write of each page.
  sqlite3 "$db" "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000;
    BEGIN;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
    INSERT INTO urls (short_code, original_url, created_at, updated_at)
    SELECT printf('f%07d', i), 'https://example.com/articles/' || i || '?utm_source=flat-benchmark',
           datetime('now', '-1 day'), datetime('now', '-1 day') FROM n;
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $3)
    INSERT INTO events (url_id, user_id, event_type, timestamp, details)
    SELECT i % $2 + 1, NULL, CASE WHEN i % 50 = 0 THEN 'updated' ELSE 'redirect' END,
           datetime('now', '-1 day'), json_object('short_code', printf('f%07d', i % $2 + 1)) FROM n;
    COMMIT;
    PRAGMA journal_mode = WAL;" >/dev/null
  log "$1: $(du -h "$db" | cut -f1), page size $(sqlite3 "$db" 'PRAGMA page_size')"
}

run() { # name
  local db="$work/$1/shortener.db"
  taskset -c "$SERVER_CPU" env -i PATH="$PATH" DATABASE_URL="sqlite://$db" \
    LISTEN_ADDR="127.0.0.1:$FLAT_PORT" AUTH_MODE=open DATA_DIR="$work/$1" ACCESS_LOG=off \
    "$SHORTENER_BIN" serve </dev/null >"$work/$1/serve.log" 2>&1 &
  pid=$!
  wait_http_ok "http://127.0.0.1:$FLAT_PORT/health" 120 ||
    { tail -n 20 "$work/$1/serve.log" >&2; die "the replica did not start"; }
  local result
  result=$(taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"$DURATION" -s "$WRK_HERE/../scale/paths.lua" \
    "http://127.0.0.1:$FLAT_PORT" -- "$work/paths" 302 | grep -E '^RESULT' || true)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  [ -n "$result" ] || die "$1: wrk gave no result"
  printf '%s\t%s\n' "$1" "$result" | tee -a "$work/results"
}

fill small "$SMALL_LINKS" "$SMALL_EVENTS"
fill big "$BIG_LINKS" "$BIG_EVENTS"
seq 1 "$HOT_CODES" | awk '{ printf "/f%07d\n", $1 }' >"$work/paths"
for round in $(seq 1 "$ROUNDS"); do
  log "round $round of $ROUNDS"
  run small
  run big
done

echo
echo "| data set | requests/s | p50 ms | p99 ms |"
echo "|---|---|---|---|"
awk -F'\t' '{
  split($2, kv, " "); rps = p50 = p99 = ""
  for (i in kv) { split(kv[i], p, "="); if (p[1] == "rps") rps = p[2]; if (p[1] == "p50_ms") p50 = p[2]; if (p[1] == "p99_ms") p99 = p[2] }
  printf "| %s | %s | %s | %s |\n", $1, rps, p50, p99 }' "$work/results"
