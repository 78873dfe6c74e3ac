#!/usr/bin/env bash
# The scale benchmark: do redirects, lists and stats stay flat from 10,000
# URLs / 100,000 events to 1,000,000 URLs / 10,000,000 events? Runs the same
# suite against the databases loadtests/scale/load.sh filled, and compares.
#
# Usage: loadtests/scale/run.sh [both|small|big|compare]
#
#   both     (default) small, then big, then the comparison table
#   small    the suite against shortener_scale_small only
#   big      the suite against shortener_scale only
#   compare  only print the comparison of the last saved small and big runs
#
# Per database: one `shortener serve` ($SHORTENER_BIN, default
# /work/bin/shortener) on 127.0.0.1:$SCALE_PORT (18090), AUTH_MODE=api-key
# with a generated key, DATABASE_URL straight to the system PostgreSQL
# (127.0.0.1:5432), default pool (10), WITHOUT Redis: the question is how
# the database side scales; the in-process cache is the only cache.
#   phase 1, default settings: the list and stats scenarios, then
#            redirect_hot (the 100 most clicked codes: cache hits)
#   phase 2, CACHE_CAPACITY=0 (no cache at all): redirect_random, codes
#            drawn at random from every active URL: each request is a
#            look-up in PostgreSQL plus the click write
# Each scenario: wrk -t$THREADS -c$CONNECTIONS (1, 16), a $WARMUP (3s)
# warm-up, then $DURATION (15s) measured, paths picked at random from a
# file (paths.lua). The load average, and the share of the machine used by
# other work during the run, and the WAL the system server wrote per request
# (pg_stat_wal: bytes and full-page images; server-wide, so other databases'
# writes count too), are recorded with each result; a run where
# other work took more than $REPEAT_OTHER % (20) of the machine is repeated
# once and the quieter attempt kept. Then EXPLAIN (ANALYZE, BUFFERS) of the
# statements behind each scenario (explain.sql).
#
# Redirects write click events (each 302 waits for its click's commit).
# So that every run, and the EXPLAINs after it, see the data set load.sh
# made, run.sh saves the largest event id and the redirect counters first
# and afterwards deletes the events added and restores the counters, then
# VACUUM ANALYZE (also when interrupted; a run that died without it is
# cleaned up at the start of the next one).
#
# Results in $SCALE_DIR/results (/tmp/shortener-scale/results):
# DB.tsv (one line per scenario), explain-DB.txt (full plans),
# explain-summary-DB.txt, serve-DB-*.log, comparison.md.
#
# Environment: DURATION, WARMUP, CONNECTIONS, THREADS, REPEAT_OTHER, ONLY
# (scenario names to run, space separated), SHORTENER_BIN, SCALE_PORT,
# SCALE_DIR, and load.sh's SCALE_* size/database overrides (small|big only).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=${1:-both}
case $mode in
  both|small|big|compare) ;;
  *) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 2 ;;
esac

CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-1}
REPEAT_OTHER=${REPEAT_OTHER:-20}
ONLY=${ONLY:-}
RESULTS=$SCALE_DIR/results
# In the order they run: the reads, then redirect_hot (phase 1, default
# settings), then redirect_random (phase 2, no cache).
SCENARIOS=(urls_page1 urls_keyset_deep urls_offset_cap urls_heavy_user
  urls_inactive events_hot_url url_events_hot events_redirect_deep events_offset_cap
  stats_hot stats_random users_page1 redirect_hot redirect_random)
mkdir -p "$RESULTS"
work=$(mktemp -d /tmp/shortener-scale.XXXXXX)
RESTORE_DB=""
cleanup() {
  stop_service
  if [ -n "$RESTORE_DB" ]; then restore "$RESTORE_DB" || log "could not restore $RESTORE_DB: reload it (RELOAD=1 load.sh)"; fi
  rm -rf "$work"
}
trap cleanup EXIT

# ------------------------------------------------------------ CPU accounting

SYS_PG_PID=""
# CPU seconds so far: machine busy, interrupts+steal, the service, the
# system PostgreSQL (postmaster and backends, whichever database they serve).
# wrk is timed separately.
snapshot() {
  local tck
  tck=$(getconf CLK_TCK)
  awk -v tck="$tck" '/^cpu / { printf "busy %.2f\nirq %.2f\n", ($2+$3+$4+$7+$8+$9)/tck, ($7+$8+$9)/tck; exit }' /proc/stat
  # A process may exit between the glob and the read: cat then fails.
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v tck="$tck" -v app="${SCALE_APP_PID:-x}" -v pg="${SYS_PG_PID:-x}" '
    {
      open = index($0, "("); close_ = index($0, ")")
      pid = substr($0, 1, open - 2)
      split(substr($0, close_ + 2), f, " ")
      t = (f[12] + f[13]) / tck
      if (pid == app) a += t
      # The postmaster reaps its backends: its cutime/cstime hold the CPU
      # of those that exited, so the sum does not drop when one does.
      else if (pid == pg) p += t + (f[14] + f[15]) / tck
      else if (f[2] == pg) p += t
    }
    END { printf "app %.2f\npg %.2f\n", a, p }'
}

# "busy% app% pg% wrk% other%" between two snapshots, as shares of the machine.
shares() { # before after wall wrk-seconds
  awk -v wall="$3" -v w="$4" -v cores="$(nproc)" '
    NR == FNR { b[$1] = $2; next }
    { d[$1] = $2 - b[$1] }
    END {
      cap = wall * cores / 100
      other = d["busy"] - d["app"] - d["pg"] - w - d["irq"]; if (other < 0) other = 0
      printf "%.0f %.0f %.0f %.0f %.0f\n", d["busy"] / cap, d["app"] / cap, d["pg"] / cap, w / cap, other / cap
    }' "$1" "$2"
}

# ------------------------------------------------------ the data set as loaded

# Remembers the largest event id and the redirect counters of database $1.
save_point() {
  spsql "$1" -c "CREATE TABLE scale_restore_point AS SELECT max(id) AS max_event_id FROM events" \
    -c "CREATE TABLE scale_saved_redirect_counts AS
        SELECT url_id, sum(redirect_count) AS redirect_count, max(last_redirect_at) AS last_redirect_at
        FROM redirect_counts GROUP BY url_id"
  RESTORE_DB=$1
}

# Deletes the events added since save_point and puts the counters back.
restore() {
  local db=$1 exists
  exists=$(spsql "$db" -tAc "SELECT to_regclass('scale_restore_point') IS NOT NULL")
  if [ "$exists" != t ]; then RESTORE_DB=""; return 0; fi
  echo "-- restoring $db: deleting the click events the run added, restoring redirect_counts, VACUUM ANALYZE"
  spsql "$db" <<'SQL'
BEGIN;
SELECT count(*) AS "click events added by the run" FROM events WHERE id > (SELECT max_event_id FROM scale_restore_point);
DELETE FROM events WHERE id > (SELECT max_event_id FROM scale_restore_point);
TRUNCATE redirect_counts;
INSERT INTO redirect_counts (url_id, redirect_count, last_redirect_at)
SELECT url_id, redirect_count, last_redirect_at FROM scale_saved_redirect_counts ORDER BY url_id;
DROP TABLE scale_restore_point, scale_saved_redirect_counts;
COMMIT;
VACUUM ANALYZE events;
VACUUM ANALYZE redirect_counts;
SQL
  RESTORE_DB=""
}

# WAL written by the whole system server so far: "bytes full-page-images".
wal_now() { spsql postgres -tAc "SELECT wal_bytes::bigint || ' ' || wal_fpi FROM pg_stat_wal"; }

# "wal_bytes_per_req=… wal_fpi_per_req=…" between two wal_now readings.
wal_per_request() { # before after requests
  awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    if (n > 0) printf "wal_bytes_per_req=%.0f wal_fpi_per_req=%.3f\n", (y[1] - x[1]) / n, (y[2] - x[2]) / n
    else print "wal_bytes_per_req=- wal_fpi_per_req=-" }'
}

# ------------------------------------------------------------------ running

# Runs one scenario: name, paths file, expected status. Appends a line to
# $tsv and prints a summary.
scenario() {
  local name=$1 file=$2 want=$3
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  local base="http://127.0.0.1:$SCALE_PORT" first headers status total estimated
  first=$(head -n1 "$file")
  headers=$(curl -s -m 30 -o /dev/null -D - -H "Authorization: Bearer $KEY" "$base$first" | tr -d '\r')
  status=$(awk 'NR == 1 { print $2 }' <<<"$headers")
  [ "$status" = "$want" ] || die "$name: GET $first answered $status, expected $want"
  total=$(awk -F': ' 'tolower($1) == "x-total-count" { print $2 }' <<<"$headers")
  estimated=$(awk -F': ' 'tolower($1) == "x-total-count-estimated" { print $2 }' <<<"$headers")
  [ -n "$estimated" ] && total="~$total"
  local attempt best_other=999 best="" line
  for attempt in 1 2; do
    if [ "$WARMUP" != 0 ]; then
      SCALE_API_KEY=$KEY wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$SCALE_HERE/paths.lua" "$base" -- "$file" "$want" >/dev/null
    fi
    local load1 t0 t1 wall wrk_s sh busy app pg wrkp other wal0 wal1 wal
    load1=$(cut -d' ' -f1 /proc/loadavg)
    snapshot >"$work/before"
    wal0=$(wal_now)
    t0=$(date +%s.%N)
    local TIMEFORMAT='%U %S'
    { time SCALE_API_KEY=$KEY wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s \
        -s "$SCALE_HERE/paths.lua" "$base" -- "$file" "$want" >"$work/wrk.out" 2>&1; } 2>"$work/wrk.time" ||
      { cat "$work/wrk.out" >&2; die "$name: wrk failed"; }
    t1=$(date +%s.%N)
    snapshot >"$work/after"
    wal1=$(wal_now)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    wrk_s=$(awk '{ printf "%.2f", $1 + $2 }' "$work/wrk.time")
    sh=$(shares "$work/before" "$work/after" "$wall" "$wrk_s")
    local r
    r=$(sed -n 's/^RESULT //p' "$work/wrk.out")
    [ -n "$r" ] || { cat "$work/wrk.out" >&2; die "$name: no RESULT line from wrk"; }
    read -r busy app pg wrkp other <<<"$sh"
    wal=$(wal_per_request "$wal0" "$wal1" "$(kv "RESULT $r" requests)")
    line="$name	$r	$wal	total=${total:--}	load1=$load1	busy=$busy	app=$app	pg=$pg	wrk=$wrkp	other=$other	attempt=$attempt"
    printf '  %-22s %s\n' "$name" "$(kv "$line" rps) req/s  p50 $(kv "$line" p50_ms) ms  p99 $(kv "$line" p99_ms) ms  unexpected $(kv "$line" unexpected)  hit/miss $(kv "$line" cache_hit)/$(kv "$line" cache_miss)  WAL/req $(kv "$line" wal_bytes_per_req) B ($(kv "$line" wal_fpi_per_req) FPI)  total ${total:--}  load1 $load1  busy $busy% (app $app, pg $pg, wrk $wrkp, other $other)  attempt $attempt"
    if [ "$other" -lt "$best_other" ]; then best_other=$other; best=$line; fi
    [ "$other" -gt "$REPEAT_OTHER" ] || break
    echo "  $name: other work took $other % of the machine; measuring again"
  done
  printf '%s\n' "$best" >>"$tsv"
}

# The value of key=value in a result line.
kv() { tr '[:blank:]' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -n1; }

suite() { # big|small
  local size=$1
  # "both" runs the two presets as they are; small|big honour SCALE_* overrides.
  if [ "$mode" = both ]; then unset SCALE_USERS SCALE_URLS SCALE_EVENTS SCALE_DB; fi
  scale_preset "$size"
  scale_loaded || die "$SCALE_DB is not loaded: run loadtests/scale/load.sh $size first"
  restore "$SCALE_DB"
  SYS_PG_PID=$(head -n1 "$(spsql postgres -tAc 'SHOW data_directory')/postmaster.pid" 2>/dev/null || true)
  tsv="$RESULTS/$size.tsv"
  if [ -n "$ONLY" ] && [ -f "$tsv" ]; then
    # Re-running some scenarios: keep the saved results of the others.
    awk -F'\t' -v only=" $ONLY " 'index(only, " " $1 " ") == 0' "$tsv" >"$work/kept"
    cp "$work/kept" "$tsv"
  else
    : >"$tsv"
  fi
  echo
  echo "=================== $size: $SCALE_DB ($(scale_marker | sed 's/.*: //'))"
  echo "commit $(git -C "$SCALE_HERE" rev-parse --short HEAD 2>/dev/null || echo '?'), binary $SHORTENER_BIN ($(stat -c %y "$SHORTENER_BIN" | cut -d. -f1))"
  load_note

  # What the scenarios ask for, from the data as it is now.
  local hot_url heavy_user max_url max_event
  read -r hot_url heavy_user max_url max_event < <(spsql "$SCALE_DB" -tA -F' ' -c "
    SELECT (SELECT url_id FROM redirect_counts ORDER BY redirect_count DESC, url_id LIMIT 1),
           (SELECT user_id FROM urls WHERE user_id IS NOT NULL GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1),
           (SELECT max(id) FROM urls), (SELECT max(id) FROM events)")
  local deep_url=$((max_url - 30)) deep_event=$((max_event - 2000))
  spsql "$SCALE_DB" -tA -c "
    SELECT 'hottest URL ' || $hot_url || ': ' || (SELECT redirect_count FROM redirect_counts WHERE url_id = $hot_url)
           || ' redirects; heaviest user ' || $heavy_user || ': ' || (SELECT count(*) FROM urls WHERE user_id = $heavy_user)
           || ' URLs; rows: ' || (SELECT count(*) FROM urls) || ' urls, ' || (SELECT count(*) FROM events) || ' events'" |
    tee "$RESULTS/$size.params"
  spsql "$SCALE_DB" -c "\\copy (SELECT '/' || short_code FROM urls WHERE is_active) TO '$work/redirect_random'"
  spsql "$SCALE_DB" -c "\\copy (SELECT '/' || u.short_code FROM redirect_counts c JOIN urls u ON u.id = c.url_id WHERE u.is_active ORDER BY c.redirect_count DESC LIMIT 100) TO '$work/redirect_hot'"
  spsql "$SCALE_DB" -c "\\copy (SELECT '/urls/' || (1 + floor(random() * $max_url))::bigint || '/stats' FROM generate_series(1, 10000)) TO '$work/stats_random'"
  one() { printf '%s\n' "$2" >"$work/$1"; }
  one urls_page1 "/urls"
  one urls_keyset_deep "/urls?after_id=$deep_url"
  one urls_offset_cap "/urls?page=101&per_page=100"
  one urls_heavy_user "/urls?user_id=$heavy_user"
  one urls_inactive "/urls?is_active=false"
  one events_hot_url "/events?url_id=$hot_url"
  one url_events_hot "/urls/$hot_url/events"
  one events_redirect_deep "/events?event_type=redirect&after_id=$deep_event"
  one events_offset_cap "/events?page=101&per_page=100"
  one stats_hot "/urls/$hot_url/stats"
  one users_page1 "/users"
  echo "active codes: $(wc -l <"$work/redirect_random"); wrk -t$THREADS -c$CONNECTIONS, $WARMUP warm-up + $DURATION per scenario"

  KEY=$(random_key)
  save_point "$SCALE_DB"
  echo "-- phase 1: default settings (in-process cache, warmed with the 10,000 newest URLs)"
  local logf="$RESULTS/serve-$SCALE_DB-default.log"
  : >"$logf"
  start_service "$logf" "$KEY"
  local s
  for s in "${SCENARIOS[@]:0:${#SCENARIOS[@]}-2}"; do
    scenario "$s" "$work/$s" 200
  done
  scenario redirect_hot "$work/redirect_hot" 302
  stop_service

  echo "-- phase 2: no cache (CACHE_CAPACITY=0): every redirect looks its code up in PostgreSQL"
  logf="$RESULTS/serve-$SCALE_DB-nocache.log"
  : >"$logf"
  start_service "$logf" "$KEY" CACHE_CAPACITY=0 CACHE_WARM_ENTRIES=0
  scenario redirect_random "$work/redirect_random" 302
  stop_service
  local errors
  errors=$(grep -c '"level":"ERROR"' "$RESULTS"/serve-"$SCALE_DB"-*.log || true)
  echo "ERROR lines in the service logs: $(echo "$errors" | awk -F: '{ s += $NF } END { print s + 0 }')"
  restore "$SCALE_DB"

  echo "-- EXPLAIN (ANALYZE, BUFFERS) on $SCALE_DB (full plans: $RESULTS/explain-$size.txt)"
  local code
  code=$(head -n1 "$work/redirect_random" | cut -c2-)
  spsql "$SCALE_DB" -v hot_url="$hot_url" -v heavy_user="$heavy_user" -v deep_url="$deep_url" \
    -v deep_event="$deep_event" -v code="$code" -v cap=10001 -f "$SCALE_HERE/explain.sql" \
    >"$RESULTS/explain-$size.txt" 2>&1 || { tail -n 20 "$RESULTS/explain-$size.txt" >&2; die "explain.sql failed"; }
  explain_summary "$RESULTS/explain-$size.txt" | tee "$RESULTS/explain-summary-$size.txt"
}

# One line per "### name" block: the top plan node, execution time, the top
# node's buffers, and the rows the deepest scan touched.
explain_summary() {
  awk '
    function flush() {
      if (name != "" && exec != "") printf "  %-62s %9s ms  %-28s %s\n", name, exec, buf, top
      name = ""; exec = ""; buf = ""; top = ""
    }
    /^### / { flush(); name = substr($0, 5); next }
    name != "" && top == "" && /\(cost=.*actual time=/ {
      top = $0; sub(/^ *(->)? */, "", top); sub(/  \(cost=.*/, "", top)
    }
    name != "" && buf == "" && /^ +Buffers: shared/ { buf = $0; sub(/^ +Buffers: /, "", buf) }
    /^ Execution Time:/ { exec = $3 }
    END { flush() }' "$1"
}

compare() {
  local small="$RESULTS/small.tsv" big="$RESULTS/big.tsv"
  if [ ! -s "$small" ] || [ ! -s "$big" ]; then die "need both $small and $big (run.sh both)"; fi
  {
    echo "| scenario | small req/s | small p50 ms | small p99 ms | big req/s | big p50 ms | big p99 ms | p50 big/small | X-Total-Count small → big | WAL B/req small → big | load1 / other % small, big |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' '
      function v(line, key,   n, i, kv) {
        n = split(line, kv, /[\t ]/)
        for (i = 1; i <= n; i++) if (index(kv[i], key "=") == 1) return substr(kv[i], length(key) + 2)
        return "-"
      }
      NR == FNR { s[$1] = $0; next }
      { b[$1] = $0 }
      END {
        k = split(scenarios, order, " ")
        for (i = 1; i <= k; i++) {
          n = order[i]; x = s[n]; y = b[n]
          if (x == "" || y == "") continue
          ratio = (v(x, "p50_ms") > 0) ? sprintf("%.2f", v(y, "p50_ms") / v(x, "p50_ms")) : "-"
          printf "| %s | %s | %s | %s | %s | %s | %s | %s× | %s → %s | %s → %s | %s / %s, %s / %s |\n", n,
            v(x, "rps"), v(x, "p50_ms"), v(x, "p99_ms"), v(y, "rps"), v(y, "p50_ms"), v(y, "p99_ms"),
            ratio, v(x, "total"), v(y, "total"), v(x, "wal_bytes_per_req"), v(y, "wal_bytes_per_req"),
            v(x, "load1"), v(x, "other"), v(y, "load1"), v(y, "other")
        }
      }' scenarios="${SCENARIOS[*]}" "$small" "$big"
  } | tee "$RESULTS/comparison.md"
  local u
  for u in small big; do
    [ -s "$RESULTS/explain-summary-$u.txt" ] && { echo; echo "EXPLAIN summary, $u:"; cat "$RESULTS/explain-summary-$u.txt"; }
  done
  return 0
}

case $mode in
  compare) compare; exit 0 ;;
esac
scale_ensure_tools
ensure_wrk
raise_nofile
case $mode in
  small|big) suite "$mode" ;;
  both) suite small; suite big; echo; compare ;;
esac
