#!/usr/bin/env bash
# The chaos suite: steady redirect load through nginx on the running local
# stack while faults are injected one at a time, with recovery in between;
# then every answered 302 is matched against the click rows in PostgreSQL.
#
# Usage: loadtests/chaos/run.sh [PHASE...]
#   Phases (all, in this order, by default):
#     replica-kill     SIGKILL one replica, restart it (same DATA_DIR)
#     replica-term     SIGTERM one replica (rolling restart), start it again
#     redis-kill       SIGKILL Redis, start it again (empty)
#     pgbouncer        restart PgBouncer
#     postgres         restart PostgreSQL
#     postgres-30s     PostgreSQL stopped (unreachable) for 30 s
#     outage-kill      PostgreSQL stopped; a replica SIGKILLed 5 s into the
#                      outage; 10 s later both restarted (same DATA_DIR)
#     row-lock         BEGIN; SELECT ... FOR UPDATE on the phase's
#                      redirect_counts rows, held 5 s
#   Each phase uses links of its own (created with SQL, so the management
#   API's rate limit does not apply), so what was lost or doubled is exact per
#   phase. About 6 minutes in all.
#
# Needs the stack up (loadtests/stack/up.sh --no-monitoring) and root.
# Environment: CHAOS_RATE (requests/s in all, default 300), CHAOS_THREADS (6),
# CHAOS_LINKS (links per phase, 20), CHAOS_UP_FLAGS (flags for up.sh when
# restoring, default --no-monitoring), CHAOS_DIR (work files, default
# $STACK_DIR/chaos). The report is CHAOS_DIR/report.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=loadtests/stack/lib.sh
. "$here/../stack/lib.sh"

need_root
fault=$here/../stack/fault.sh
work=${CHAOS_DIR:-$STACK_DIR/chaos}
links=${CHAOS_LINKS:-20}
read -r -a up_flags <<<"${CHAOS_UP_FLAGS:---no-monitoring}"
all_phases=(replica-kill replica-term redis-kill pgbouncer postgres postgres-30s outage-kill row-lock)
if [ $# -gt 0 ]; then phases=("$@"); else phases=("${all_phases[@]}"); fi
read -r -a ports <<<"$APP_PORTS"

wait_http_ok "$NGINX_URL/health" 5 || die "the stack is not up: loadtests/stack/up.sh --no-monitoring"
rm -rf "$work"
mkdir -p "$work"
run_id=$(date +%s | tail -c 7)

now() { date +%s.%N | cut -c1-14; }
note() { printf '[chaos] %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
mark() { echo "$*" >>"$work/marks"; } # phase key unix-time

psql_q() { psql "$PG_URL" -v ON_ERROR_STOP=1 -qtAX -c "$1"; }

# Links per phase, straight into the database: never looked up before, so no
# cache holds them yet (not even as missing).
create_links() { # phase index
  local phase=$1 p=$2 values=() i code
  for i in $(seq -w 1 "$links"); do
    code="c${run_id}p${p}n$i"
    values+=("('$code', 'https://chaos.example/$phase/$i', now(), now())")
    echo "$code" >>"$work/codes-$phase"
  done
  psql_q "INSERT INTO urls (short_code, original_url, created_at, updated_at) VALUES $(IFS=,; echo "${values[*]}")" >/dev/null
}

# up.sh until every part is healthy. Right after PostgreSQL is back,
# PgBouncer refuses logins for up to server_login_retry (15 s), and up.sh
# gives up on that: it is tried again, for a minute at most.
restore() {
  local t0 attempt
  t0=$(now)
  for attempt in $(seq 1 12); do
    "$fault" restore "${up_flags[@]}" >>"$work/restore.log" 2>&1 && break
    [ "$attempt" -lt 12 ] || die "restore failed (see $work/restore.log)"
    sleep 5
  done
  mark "$phase restored $(now) $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
}

inject() { # phase
  case $1 in
    replica-kill) "$fault" kill-replica "${ports[0]}" >&2; sleep 2; restore ;;
    replica-term) "$fault" stop-replica "${ports[1]}" >&2; sleep 2; restore ;;
    redis-kill)
      local pid
      pid=$(live_pid "$STACK_DIR/run/redis.pid" redis-server) || die "Redis is not running"
      kill -KILL "$pid"
      echo "SIGKILL to Redis (pid $pid)" >&2
      sleep 3; restore ;;
    pgbouncer) "$fault" stop-pgbouncer >&2; restore ;;
    postgres) "$fault" stop-postgres >&2; restore ;;
    postgres-30s) "$fault" stop-postgres >&2; sleep 30; restore ;;
    outage-kill)
      "$fault" stop-postgres >&2; sleep 5
      "$fault" kill-replica "${ports[2]}" >&2; sleep 10
      restore ;;
    row-lock)
      local ids
      ids=$(psql_q "SELECT string_agg(id::text, ',') FROM urls WHERE short_code LIKE 'c${run_id}p${p}n%'")
      psql_q "BEGIN; SELECT count(*) FROM (SELECT url_id FROM redirect_counts WHERE url_id IN ($ids) ORDER BY url_id FOR UPDATE) l; SELECT pg_sleep(5); COMMIT;" >/dev/null
      ;;
    *) die "unknown phase: $1" ;;
  esac
}

# Until no replica holds spilled clicks and the click rows stop changing.
wait_drained() {
  local stable=0 last="" cur spilled p
  for _ in $(seq 1 120); do
    spilled=0
    for p in $APP_PORTS; do
      cur=$(curl -fsS -m 2 "http://127.0.0.1:$p/metrics" 2>/dev/null | awk '$1 == "shortener_clicks_spilled" { print $2 }')
      [ "${cur:-1}" = 0 ] || spilled=1
    done
    cur=$(psql_q "SELECT count(*) FROM events e JOIN urls u ON u.id = e.url_id WHERE u.short_code LIKE 'c${run_id}%'")
    if [ "$spilled" = 0 ] && [ "$cur" = "$last" ]; then
      stable=$((stable + 1)); [ "$stable" -ge 3 ] && return 0
    else
      stable=0
    fi
    last=$cur
    sleep 1
  done
  note "warning: clicks still moving after 120 s"
}

for i in "${!phases[@]}"; do
  create_links "${phases[$i]}" "$i"
done
note "links created (run $run_id); load: ${CHAOS_RATE:-300} req/s through $NGINX_URL"
{ load_note; } >"$work/machine"
nginx_host=127.0.0.1
python3 "$here/client.py" "$nginx_host" "$NGINX_PORT" "$work" "$work/responses" &
client=$!
trap 'touch "$work/stop"; wait "$client" 2>/dev/null || true' EXIT

started=$(now)
for i in "${!phases[@]}"; do
  phase=${phases[$i]} p=$i
  echo "$phase" >"$work/phase"
  mark "$phase start $(now)"
  note "$phase: steady load 5 s"
  sleep 5
  note "$phase: injecting"
  mark "$phase fault $(now)"
  inject "$phase"
  note "$phase: recovered; 8 s of load after"
  sleep 8
  mark "$phase end $(now)"
done
touch "$work/stop"
wait "$client" || true
trap - EXIT
finished=$(now)
note "load stopped; waiting for every click to be written"
wait_drained
psql_q "SELECT u.short_code, u.original_url,
          (SELECT count(*) FROM events e WHERE e.url_id = u.id AND e.event_type = 'redirect'),
          coalesce((SELECT sum(redirect_count) FROM redirect_counts r WHERE r.url_id = u.id), 0)
        FROM urls u WHERE u.short_code LIKE 'c${run_id}%' ORDER BY 1" | tr '|' ' ' >"$work/database"
python3 "$here/report.py" "$work" "$(awk -v a="$started" -v b="$finished" 'BEGIN { printf "%.0f", b - a }')" "${phases[@]}" >"$work/report.md"
cat "$work/report.md"
