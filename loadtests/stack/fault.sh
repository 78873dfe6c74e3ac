#!/usr/bin/env bash
# Injects a fault into the running local stack, for alert and runbook drills.
# Each action prints and appends to $STACK_DIR/log/faults.log one line with the
# UTC time (milliseconds), what was done and to which pid, so that a timeline
# can be written from it afterwards.
#
# Usage: loadtests/stack/fault.sh ACTION [ARG]
#   kill-replica [PORT]   SIGKILL one app replica (default: the first of APP_PORTS):
#                         no drain, no click flush, like an OOM kill
#   stop-replica [PORT]   SIGTERM one replica (graceful: drains, flushes clicks)
#   stop-redis            stop Redis (SIGTERM; it has no persistence: the cache is lost)
#   stop-pgbouncer        stop PgBouncer (SIGINT, its safe shutdown)
#   stop-postgres         stop PostgreSQL (pg_ctl stop -m fast)
#   restore               run up.sh, which starts whatever is not running
#                         (SHORTENER_BIN and the other settings are passed on)
#   log                   show $STACK_DIR/log/faults.log
#
# Watching a drill (each line starts with the UTC time; both run until Ctrl-C or
# for SECONDS):
#   watch [SECONDS]       every second, print each change of the alerts in Prometheus
#                         (pending, firing, gone) and in Alertmanager (active,
#                         suppressed, gone), and each new line of the sink's alerts.jsonl
#   probe [SECONDS]       GET $NGINX_URL/health every 0.2 s, print every answer that is
#                         not 200, and at the end the count of requests and failures
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"

usage() { sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; }

action=${1:-}
[ -n "$action" ] || { usage; exit 2; }
shift
run=$STACK_DIR/run
faults=$STACK_DIR/log/faults.log

record() {
  mkdir -p "$STACK_DIR/log"
  printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$*" | tee -a "$faults"
}

# The pid of a running part, or a clear error.
pid_of() { # pidfile match label
  live_pid "$1" "$2" || die "$3 is not running (pid file $1); nothing to do"
}

# Waits (10 s at most) for PID to be gone.
wait_gone() {
  for _ in $(seq 1 100); do alive "$1" || return 0; sleep 0.1; done
  die "pid $1 is still running after 10 s"
}

replica_port() {
  local port=${1:-${APP_PORTS%% *}}
  case " $APP_PORTS " in
    *" $port "*) echo "$port" ;;
    *) die "$port is not a replica port of this stack ($APP_PORTS)" ;;
  esac
}

case $action in
  kill-replica|stop-replica)
    need_root
    port=$(replica_port "${1:-}")
    pid=$(pid_of "$run/app-$port.pid" serve "app :$port")
    if [ "$action" = kill-replica ]; then sig=KILL; else sig=TERM; fi
    kill "-$sig" "$pid"
    record "$action: SIG$sig to app :$port (pid $pid)"
    wait_gone "$pid"
    record "$action: app :$port (pid $pid) is gone"
    ;;
  stop-redis)
    need_root
    pid=$(pid_of "$run/redis.pid" redis-server Redis)
    kill -TERM "$pid"
    record "stop-redis: SIGTERM to Redis :$REDIS_PORT (pid $pid)"
    wait_gone "$pid"
    record "stop-redis: Redis (pid $pid) is gone"
    ;;
  stop-pgbouncer)
    need_root
    pid=$(pid_of "$run/pgbouncer.pid" pgbouncer PgBouncer)
    kill -INT "$pid"
    record "stop-pgbouncer: SIGINT to PgBouncer :$PGB_PORT (pid $pid)"
    wait_gone "$pid"
    record "stop-pgbouncer: PgBouncer (pid $pid) is gone"
    ;;
  stop-postgres)
    need_root
    bin=$(pg_bin_dir) || die "no PostgreSQL binaries"
    runuser -u postgres -- "$bin/pg_ctl" -D "$STACK_DIR/pg" status >/dev/null 2>&1 ||
      die "PostgreSQL of the stack is not running"
    record "stop-postgres: pg_ctl stop -m fast on :$PG_PORT"
    runuser -u postgres -- "$bin/pg_ctl" -D "$STACK_DIR/pg" -m fast -w -t 60 stop >/dev/null
    record "stop-postgres: PostgreSQL is stopped"
    ;;
  restore)
    need_root
    record "restore: running up.sh"
    "$here/up.sh" "$@"
    record "restore: up.sh finished, every part healthy"
    ;;
  log)
    cat "$faults" 2>/dev/null || echo "no faults recorded in $faults"
    ;;
  watch)
    secs=${1:-0}
    exec python3 - "$PROM_URL" "$ALERTMANAGER_URL" "$ALERTS_LOG" "$secs" <<'PY'
import datetime, json, os, sys, time, urllib.request
prom, am, sink, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
def get(url):
    with urllib.request.urlopen(url, timeout=3) as r:
        return json.load(r)
def key(labels):
    skip = {"alertname", "severity"}
    rest = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip)
    return f"{labels.get('alertname')}{{{rest}}}"
seen_p, seen_a = {}, {}
pos = os.path.getsize(sink) if os.path.exists(sink) else 0
end = time.time() + secs if secs > 0 else None
print(f"{now()} watching {prom} and {am}, and {sink}", flush=True)
while end is None or time.time() < end:
    try:
        cur = {key(a["labels"]): a["state"] for a in get(f"{prom}/api/v1/alerts")["data"]["alerts"]}
        for k in sorted(set(cur) | set(seen_p)):
            if cur.get(k) != seen_p.get(k):
                print(f"{now()} prometheus   {k}: {seen_p.get(k, '-')} -> {cur.get(k, 'gone')}", flush=True)
        seen_p = cur
    except Exception as e:
        print(f"{now()} prometheus   not answering: {e}", flush=True)
    try:
        cur = {key(a["labels"]): a["status"]["state"] for a in get(f"{am}/api/v2/alerts")}
        for k in sorted(set(cur) | set(seen_a)):
            if cur.get(k) != seen_a.get(k):
                print(f"{now()} alertmanager {k}: {seen_a.get(k, '-')} -> {cur.get(k, 'gone')}", flush=True)
        seen_a = cur
    except Exception as e:
        print(f"{now()} alertmanager not answering: {e}", flush=True)
    if os.path.exists(sink) and os.path.getsize(sink) > pos:
        with open(sink) as f:
            f.seek(pos)
            for line in f:
                n = json.loads(line)
                names = ", ".join(f"{key(a['labels'])} {a['status']}" for a in n.get("alerts", []))
                print(f"{now()} sink         received {n.get('received_at')}: receiver {n.get('receiver')}, {n.get('status')}: {names}", flush=True)
            pos = f.tell()
    time.sleep(1)
PY
    ;;
  probe)
    secs=${1:-60}
    total=0 failed=0
    t_end=$(( $(date +%s) + secs ))
    record "probe: GET $NGINX_URL/health every 0.2 s for ${secs}s"
    while [ "$(date +%s)" -lt "$t_end" ]; do
      code=$(http_status "$NGINX_URL/health" 2)
      total=$((total + 1))
      if [ "$code" != 200 ]; then
        failed=$((failed + 1))
        printf '%s probe: GET /health -> %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "${code:-no answer}"
      fi
      sleep 0.2
    done
    record "probe: $total requests, $failed not 200"
    ;;
  -h|--help) usage ;;
  *) usage >&2; die "unknown action: $action" ;;
esac
