#!/usr/bin/env bash
# A replica's memory while it streams the CSV exports: one replica on an embedded SQLite file
# holding ROWS links and ROWS events (written with sqlite3 after `shortener migrate`), then
# `GET /urls/export` and `GET /events/export` read to the end by curl, the replica's VmRSS
# sampled every 50 ms meanwhile. Run it at two sizes: constant memory means the same peak.
#
# Usage: loadtests/export/memory.sh            (ROWS=1000000)
#        ROWS=100000 loadtests/export/memory.sh
#
# Environment: ROWS (1000000), EXPORT_PORT (18091), SHORTENER_BIN (target/release/shortener).
# Prints, for each export: rows received, seconds, bytes, the RSS before it and its peak.
set -euo pipefail
DURATION=${DURATION:-1s} # lib.sh wants one; no wrk run here
. "$(dirname "${BASH_SOURCE[0]}")/../wrk/lib.sh"

ROWS=${ROWS:-1000000}
EXPORT_PORT=${EXPORT_PORT:-18091}
sqlite_tool_prerequisites "$EXPORT_PORT" EXPORT_PORT

scratch_dir export

db="$work/links.db"
env -i PATH="$PATH" DATABASE_URL="sqlite://$db" "$SHORTENER_BIN" migrate >/dev/null
log "writing $ROWS links and $ROWS events into $db"
sqlite3 "$db" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS)
  INSERT INTO urls (short_code, original_url, title, created_at, updated_at)
  SELECT printf('x%08d', i), 'https://example.com/articles/' || i || '?utm_source=export-benchmark',
         'Article ' || i, datetime('now'), datetime('now') FROM n;
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS)
  INSERT INTO events (url_id, event_type, timestamp, details)
  SELECT i, 'created', datetime('now'), json_object('short_code', printf('x%08d', i)) FROM n;"

taskset -c "$SERVER_CPU" env -i PATH="$PATH" DATABASE_URL="sqlite://$db" \
  LISTEN_ADDR="127.0.0.1:$EXPORT_PORT" AUTH_MODE=open DATA_DIR="$work" ACCESS_LOG=off \
  "$SHORTENER_BIN" serve </dev/null >"$work/serve.log" 2>&1 &
pid=$!
wait_http_ok "http://127.0.0.1:$EXPORT_PORT/health" 60 || { tail -n 20 "$work/serve.log" >&2; die "the replica did not start"; }

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$pid/status"; }

for path in /urls/export /events/export; do
  before=$(rss_kib)
  peak=$before
  started=$(date +%s.%N)
  taskset -c "$CLIENT_CPU" curl -fsS "http://127.0.0.1:$EXPORT_PORT$path" -o "$work/out.csv" &
  reader=$!
  while kill -0 "$reader" 2>/dev/null; do
    now=$(rss_kib)
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.05
  done
  wait "$reader" || die "GET $path failed"
  ended=$(date +%s.%N)
  lines=$(($(wc -l <"$work/out.csv") - 1))
  bytes=$(stat -c %s "$work/out.csv")
  [ "$lines" -eq "$ROWS" ] || die "GET $path gave $lines rows, not $ROWS"
  printf '%-15s rows %d  seconds %.1f  bytes %d  RSS before %d KiB  peak %d KiB\n' \
    "$path" "$lines" "$(echo "$ended - $started" | bc -l)" "$bytes" "$before" "$peak"
done
