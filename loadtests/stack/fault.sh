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
  -h|--help) usage ;;
  *) usage >&2; die "unknown action: $action" ;;
esac
