#!/usr/bin/env bash
# A replica's memory with LINKS links in its in-process cache: one replica on
# an embedded SQLite file holding LINKS active links (written with sqlite3
# after `shortener migrate`), its links followed in random order (wrk; 30 s at
# ~14k redirects/s follows all but about 1 % of 100,000), then its resident
# memory and the cache's own gauges (how many entries it holds, and their
# weight). The default cache settings hold 100,000 entries
# (CACHE_CAPACITY) in at most 32 MiB (CACHE_MAX_BYTES).
#
# Usage: loadtests/wrk/memory.sh
#
# Environment: LINKS (100000), MEMORY_PORT (18089), SHORTENER_BIN, SERVER_CPU
# and CLIENT_CPU (the replica and wrk are pinned as in redirect.sh), DURATION
# (30s), and CACHE_CAPACITY, CACHE_MAX_BYTES,
# LOCAL_CACHE_TTL_SECONDS passed on (the TTL defaults to 600 s here, so that
# no entry expires during the run).
#
# Prints VmRSS and VmHWM before the traffic and after it, and the cache's
# entries and bytes as /metrics reports them.
set -euo pipefail
DURATION=${DURATION:-30s}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LINKS=${LINKS:-100000}
MEMORY_PORT=${MEMORY_PORT:-18089}
sqlite_replica_prerequisites "$MEMORY_PORT" MEMORY_PORT

scratch_dir memory

db="$work/links.db"
env -i PATH="$PATH" DATABASE_URL="sqlite://$db" "$SHORTENER_BIN" migrate >/dev/null
log "writing $LINKS links into $db"
sqlite3 "$db" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $LINKS)
  INSERT INTO urls (short_code, original_url, created_at, updated_at)
  SELECT printf('m%07d', i), 'https://example.com/articles/' || i || '?utm_source=memory-benchmark',
         datetime('now'), datetime('now') FROM n;"
seq 1 "$LINKS" | awk '{ printf "/m%07d\n", $1 }' >"$work/paths"

envs=(PATH="$PATH" DATABASE_URL="sqlite://$db" LISTEN_ADDR="127.0.0.1:$MEMORY_PORT"
  AUTH_MODE=open DATA_DIR="$work" ACCESS_LOG=off
  LOCAL_CACHE_TTL_SECONDS="${LOCAL_CACHE_TTL_SECONDS:-600}")
for name in CACHE_CAPACITY CACHE_MAX_BYTES; do
  [ -n "${!name:-}" ] && envs+=("$name=${!name}")
done
taskset -c "$SERVER_CPU" env -i "${envs[@]}" "$SHORTENER_BIN" serve </dev/null >"$work/serve.log" 2>&1 &
pid=$!
wait_http_ok "http://127.0.0.1:$MEMORY_PORT/health" 60 || { tail -n 20 "$work/serve.log" >&2; die "the replica did not start"; }

memory() { # label
  awk -v label="$1" '/^VmRSS|^VmHWM/ { printf "%s %s %s %s  ", label, $1, $2, $3 } END { print "" }' "/proc/$pid/status"
}
cache() {
  curl -fsS "http://127.0.0.1:$MEMORY_PORT/metrics" |
    awk '/^shortener_cache_local_(entries|bytes) / { printf "%s %s  ", $1, $2 } END { print "" }'
}
memory "started:"

log "following the $LINKS links in random order for $DURATION"
taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"$DURATION" -s "$WRK_HERE/../scale/paths.lua" \
  "http://127.0.0.1:$MEMORY_PORT" -- "$work/paths" 302 | grep -E '^RESULT' || true

# The sampler reports the cache every few seconds.
sleep 6
memory "after:"
echo "cache: $(cache)"
