#!/usr/bin/env bash
# Stops the stack started by up.sh, each part gracefully: first the
# monitoring (Prometheus, so that the shutdown raises no alert, then
# Alertmanager, the exporters and the webhook sink; SIGTERM), then front to
# back: nginx (SIGQUIT: finish open requests), the app replicas (SIGTERM: drain,
# flush click events), Redis, PgBouncer (SIGINT: safe shutdown), PostgreSQL
# (pg_ctl stop -m fast). Idempotent: a part that is not running is skipped.
#
# Usage: loadtests/stack/down.sh [--purge]
#   --purge   also delete $STACK_DIR (database, logs, admin key); the PgBouncer
#             build cache under ~/.cache/shortener-stack is kept
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
for arg in "$@"; do
  case $arg in
    --purge) purge=1 ;;
    -h|--help) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

need_root
[ -d "$STACK_DIR" ] || { log "nothing to stop ($STACK_DIR does not exist)"; exit 0; }
run=$STACK_DIR/run
forced=0

stop() { # pidfile match signal seconds label
  local pid t0
  if pid=$(live_pid "$1" "$2"); then
    t0=$(date +%s.%N)
    stop_pid "$pid" "$3" "$4" "$5" || forced=1
    log "stopped $5 (pid $pid, SIG$3) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')s"
  fi
  rm -f "$1"
}

stop "$run/prometheus.pid" "prometheus --config.file" TERM 30 Prometheus
stop "$run/alertmanager.pid" alertmanager TERM 15 Alertmanager
stop "$run/postgres-exporter.pid" postgres-exporter TERM 10 postgres_exporter
stop "$run/pgbouncer-exporter.pid" pgbouncer-exporter TERM 10 "PgBouncer exporter"
stop "$run/redis-exporter.pid" redis-exporter TERM 10 redis_exporter
stop "$run/alert-sink.pid" alert-sink.py TERM 10 "alert sink"

stop "$run/nginx.pid" nginx QUIT 15 nginx
for f in "$run"/app-*.pid; do
  [ -e "$f" ] || continue
  # SHUTDOWN_GRACE_SECS is 10 in the stack; leave room for the click flush.
  port=${f##*/app-}; port=${port%.pid}
  stop "$f" serve TERM 20 "app :$port"
done
stop "$run/redis.pid" redis-server TERM 10 Redis
stop "$run/pgbouncer.pid" pgbouncer INT 15 PgBouncer

if [ -f "$STACK_DIR/pg/postmaster.pid" ] && bin=$(pg_bin_dir) &&
    runuser -u postgres -- "$bin/pg_ctl" -D "$STACK_DIR/pg" status >/dev/null 2>&1; then
  log "stopping PostgreSQL"
  runuser -u postgres -- "$bin/pg_ctl" -D "$STACK_DIR/pg" -m fast -w -t 60 stop >/dev/null || forced=1
fi

if [ "$purge" = 1 ]; then
  log "removing $STACK_DIR"
  rm -rf "$STACK_DIR"
fi
[ "$forced" = 0 ] || { log "some parts had to be killed; see $STACK_DIR/log/"; exit 1; }
log "stack stopped"
