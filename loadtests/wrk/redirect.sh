#!/usr/bin/env bash
# Raw redirect throughput with wrk: GET /{code} -> 302, over a set of short
# codes created just before the run (one code with CODES=1).
#
# Usage: loadtests/wrk/redirect.sh single|stack
#
#   single  starts ONE replica of its own on 127.0.0.1:$SINGLE_PORT (18088),
#           pinned to core $SERVER_CPU (0), and runs wrk pinned to core
#           $CLIENT_CPU (1): what one core of the service does.
#           Backend: the running stack's PgBouncer + Redis when the stack is up,
#           else an embedded SQLite file in a fresh temporary directory
#           (force with BACKEND=stack|sqlite). PostgreSQL, PgBouncer and Redis
#           are not pinned: they share the machine with both.
#   stack   wrk against the stack's nginx (loadtests/stack/up.sh first), 500
#           connections, unpinned: nginx, 3 replicas, PgBouncer, PostgreSQL,
#           Redis and wrk all share the two cores.
#
# Environment: DURATION (15s), WARMUP (3s, not measured), CONNECTIONS (single
# 100, stack 500), THREADS (single 1, stack 2), CODES (100), SERVER_CPU,
# CLIENT_CPU, SINGLE_PORT, BACKEND, SINGLE_RUST_LOG (RUST_LOG, default info),
# VISITOR (a browser's User-Agent and Referer on every request; `none`: neither),
# MAX_VISITS (the links' visit cap: each redirect then takes a visit in the database before
# it is answered; unset: no cap),
# and the service settings listed in APP_PASSTHROUGH (stack/lib.sh).
#
# Prints requests/s, latency percentiles, non-2xx/3xx counts, the replicas'
# memory (VmRSS, VmHWM) after the run, and the service's own redirect and
# dropped-click counters. Appends a line to $STACK_DIR/results/wrk.tsv.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=${1:-}
case $mode in
  single|stack) ;;
  *) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 2 ;;
esac

CODES=${CODES:-100}
SINGLE_PORT=${SINGLE_PORT:-18088}
ensure_wrk
raise_nofile
work=$(mktemp -d /tmp/shortener-wrk.XXXXXX)
app_pid=""
service_pids=""
wall=0

cleanup() {
  if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then
    stop_pid "$app_pid" TERM 20 "single replica" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

stack_up() {
  redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG &&
    psql "$PGB_URL" -tAc 'select 1' 2>/dev/null | grep -q 1 && [ -s "$KEY_FILE" ]
}

# Creates $CODES short links through $1 and writes their codes to $work/codes.
make_codes() {
  local base=$1 key=$2 i body code
  : >"$work/codes"
  for i in $(seq 1 "$CODES"); do
    body=$(curl -s -m 5 -X POST "$base/urls" -H "Authorization: Bearer $key" \
      -H 'content-type: application/json' \
      -d "{\"original_url\":\"https://example.com/wrk/$i\",\"title\":\"wrk $i\"${MAX_VISITS:+,\"max_visits\":$MAX_VISITS}}") || true
    code=$(printf '%s' "$body" | sed -n 's/.*"short_code":"\([^"]*\)".*/\1/p')
    [ -n "$code" ] || die "could not create a short link at $base/urls: $body"
    echo "$code" >>"$work/codes"
  done
  local first status
  first=$(head -n1 "$work/codes")
  status=$(http_status "$base/$first")
  [ "$status" = 302 ] || die "GET $base/$first answered $status, not 302"
}

run_wrk() { # cpu-or-empty threads connections url
  local pin=() cpu=$1
  [ -n "$cpu" ] && pin=(taskset -c "$cpu")
  if [ "$WARMUP" != 0 ]; then
    "${pin[@]}" wrk -t"$2" -c"$3" -d"$WARMUP" -s "$WRK_HERE/redirect.lua" "$4" -- "$work/codes" >/dev/null
  fi
  cpu_snapshot $service_pids >"$work/cpu.before"
  local t0 t1
  t0=$(date +%s.%N)
  local TIMEFORMAT='%U %S'
  { time "${pin[@]}" wrk -t"$2" -c"$3" -d"$DURATION" --timeout 5s --latency \
      -s "$WRK_HERE/redirect.lua" "$4" -- "$work/codes" >"$work/wrk.out" 2>&1; } 2>"$work/wrk.time" || true
  t1=$(date +%s.%N)
  cat "$work/wrk.out"
  cpu_snapshot $service_pids >"$work/cpu.after"
  # wrk has exited by now: its CPU time comes from the shell's `time`.
  awk '{ printf "wrk %.2f\n", $1 + $2 }' "$work/wrk.time" >>"$work/cpu.after"
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}

cpu_used() {
  echo "CPU during the measured run:"
  cpu_report "$work/cpu.before" "$work/cpu.after" "$wall" | tee "$work/cpu.report"
}

other_share() { awk '/\(other\)/ { print $4 }' "$work/cpu.report"; }

counters() { # base-url
  printf 'redirects found:     %s\n' "$(metric_sum "$1" shortener_redirects_total 'outcome="found"')"
  printf 'redirects not found: %s\n' "$(metric_sum "$1" shortener_redirects_total 'outcome="not_found"')"
  printf 'clicks dropped:      %s\n' "$(metric_sum "$1" shortener_clicks_dropped_total)"
}

single() {
  [ -x "$SHORTENER_BIN" ] || die "no binary at $SHORTENER_BIN (build it, or run loadtests/stack/up.sh)"
  port_free "$SINGLE_PORT" || die "port $SINGLE_PORT is taken: $(port_owner "$SINGLE_PORT") (set SINGLE_PORT)"
  local backend=${BACKEND:-auto} key envs
  if [ "$backend" = auto ]; then
    if stack_up; then backend=stack; else backend=sqlite; fi
  fi
  envs=(PATH="$PATH" LISTEN_ADDR="127.0.0.1:$SINGLE_PORT" AUTH_MODE=api-key LOG_FORMAT=json
    RUST_LOG="${SINGLE_RUST_LOG:-info}" SHUTDOWN_GRACE_SECS=10)
  case $backend in
    stack)
      stack_up || die "BACKEND=stack but the stack is not up (loadtests/stack/up.sh)"
      key=$(cat "$KEY_FILE")
      envs+=(DATABASE_URL="$PGB_URL" MIGRATION_DATABASE_URL="$PG_URL" REDIS_URL="$REDIS_URL_STACK"
        DATABASE_POOL_SIZE="$APP_POOL_SIZE")
      ;;
    sqlite)
      key=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
      envs+=(DATA_DIR="$work/data")
      ;;
    *) die "BACKEND must be auto, stack or sqlite" ;;
  esac
  envs+=(ADMIN_API_KEY="$key")
  add_passthrough_env envs
  mkdir -p "$RESULTS_DIR"
  local logf="$RESULTS_DIR/single-replica.log"
  : >"$logf"
  echo "single replica: core $SERVER_CPU, backend $backend, port $SINGLE_PORT, log $logf"
  taskset -c "$SERVER_CPU" env -i "${envs[@]}" "$SHORTENER_BIN" serve </dev/null >>"$logf" 2>&1 &
  app_pid=$!
  service_pids=$app_pid
  wait_http_ok "http://127.0.0.1:$SINGLE_PORT/health" 60 ||
    { tail -n 20 "$logf" >&2; die "the single replica did not become healthy"; }
  make_codes "http://127.0.0.1:$SINGLE_PORT" "$key"
  local conns=${CONNECTIONS:-100} threads=${THREADS:-1}
  load_note
  echo "wrk: core $CLIENT_CPU, $threads thread(s), $conns connections, $DURATION after a $WARMUP warm-up, $CODES code(s)"
  run_wrk "$CLIENT_CPU" "$threads" "$conns" "http://127.0.0.1:$SINGLE_PORT"
  echo
  echo "== redirect, single replica on core $SERVER_CPU ($backend) =="
  wrk_summary "$work/wrk.out"
  counters "http://127.0.0.1:$SINGLE_PORT"
  printf 'replica memory:      %s\n' "$(mem_of "$app_pid")"
  cpu_used
  record_result "redirect-single-$backend" "$work/wrk.out" "c=$conns t=$threads codes=$CODES other=$(other_share)"
  local errors
  errors=$(grep -c '"level":"ERROR"' "$logf" || true)
  printf 'ERROR lines in log:  %s\n' "$errors"
  [ "$errors" = 0 ] || grep '"level":"ERROR"' "$logf" | sort | uniq -c | sort -rn | head -n 5
}

stack() {
  stack_up || die "the stack is not up: run loadtests/stack/up.sh first"
  [ "$(http_status "$NGINX_URL/health")" = 200 ] || die "$NGINX_URL/health is not 200"
  local key conns=${CONNECTIONS:-500} threads=${THREADS:-2} p pid before
  key=$(cat "$KEY_FILE")
  make_codes "$NGINX_URL" "$key"
  before=$(for p in $APP_PORTS; do wc -l <"$STACK_DIR/log/app-$p.log"; done)
  for p in $APP_PORTS; do
    service_pids+=" $(live_pid "$STACK_DIR/run/app-$p.pid" serve || true)"
  done
  load_note
  echo "wrk: unpinned, $threads thread(s), $conns connections, $DURATION after a $WARMUP warm-up, $CODES code(s)"
  run_wrk "" "$threads" "$conns" "$NGINX_URL"
  echo
  echo "== redirect through nginx -> 3 replicas =="
  wrk_summary "$work/wrk.out"
  local i=0
  for p in $APP_PORTS; do
    i=$((i + 1))
    echo "replica :$p"
    counters "http://127.0.0.1:$p" | sed 's/^/  /'
    if pid=$(live_pid "$STACK_DIR/run/app-$p.pid" serve); then
      printf '  memory:              %s\n' "$(mem_of "$pid")"
    fi
    local from errors
    from=$(echo "$before" | sed -n "${i}p")
    errors=$(tail -n +"$((from + 1))" "$STACK_DIR/log/app-$p.log" | grep -c '"level":"ERROR"' || true)
    printf '  ERROR lines in log:  %s\n' "$errors"
  done
  for pid in $(pgrep -f 'nginx: worker process' || true); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q worker &&
        [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = "$(live_pid "$STACK_DIR/run/nginx.pid" nginx || echo x)" ]; then
      printf 'nginx worker %s:  %s\n' "$pid" "$(mem_of "$pid")"
    fi
  done
  cpu_used
  record_result "redirect-stack" "$work/wrk.out" "c=$conns t=$threads codes=$CODES other=$(other_share)"
}

"$mode"
