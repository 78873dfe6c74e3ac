#!/usr/bin/env bash
# One line per part of the stack: running or not, pid, memory, health; then
# the monitoring parts (Prometheus: targets up and alerts; Alertmanager: alerts
# held; the sink: notifications received), unless they were never started.
# Exit status 0 only when every part that should run is up and healthy.
#
# Usage: loadtests/stack/status.sh
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

run=$STACK_DIR/run
bad=0

line() { printf '%-12s %-8s %-7s %-58s %s\n' "$@"; }
line part state pid memory detail

show() { # name pidfile match detail-command...
  local name=$1 pidf=$2 match=$3 pid
  shift 3
  if pid=$(live_pid "$pidf" "$match"); then
    local detail
    detail=$("$@" 2>/dev/null) || { bad=1; }
    line "$name" up "$pid" "$(mem_of "$pid")" "$detail"
  else
    line "$name" down - - ""
    bad=1
  fi
}

pg_detail() {
  psql "$PG_URL" -tAc "select 'connections ' || count(*) from pg_stat_activity where datname = '$DB_NAME'"
}
pgb_detail() {
  psql "postgres://postgres@127.0.0.1:$PGB_PORT/pgbouncer" -A -F'|' -P footer=off -c 'show pools' |
    awk -F'|' -v db="$DB_NAME" 'NR == 1 {for (i = 1; i <= NF; i++) c[$i] = i; next}
      $c["database"] == db {printf "clients active %s waiting %s, servers active %s idle %s", $c["cl_active"], $c["cl_waiting"], $c["sv_active"], $c["sv_idle"]}'
}
redis_detail() {
  redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory_human/{gsub(/\r/,""); printf "used %s", $2}'
  printf ', keys %s' "$(redis-cli -p "$REDIS_PORT" dbsize)"
}
health_of() {
  local code
  code=$(http_status "$1/health")
  echo "GET /health -> $code"
  [ "$code" = 200 ]
}

pg_pid_file=$STACK_DIR/pg/postmaster.pid
show postgres "$pg_pid_file" postgres pg_detail
show pgbouncer "$run/pgbouncer.pid" pgbouncer pgb_detail
show redis "$run/redis.pid" redis-server redis_detail
for p in $APP_PORTS; do
  show "app:$p" "$run/app-$p.pid" serve health_of "http://127.0.0.1:$p"
done
show nginx "$run/nginx.pid" nginx health_of "$NGINX_URL"

# ---------------------------------------------------------------- monitoring
prom_detail() {
  local t a
  t=$(curl -fsS -m 3 "$PROM_URL/api/v1/targets?state=active") || return 1
  a=$(curl -fsS -m 3 "$PROM_URL/api/v1/alerts") || return 1
  jq -rn --argjson t "$t" --argjson a "$a" '
    ($t.data.activeTargets) as $ts | ($a.data.alerts) as $al |
    "targets up \([$ts[] | select(.health == "up")] | length)/\($ts | length)" +
    ([$ts[] | select(.health != "up") | .labels.job + "/" + .labels.instance] as $down |
      if ($down | length) > 0 then " (down: \($down | join(", ")))" else "" end) +
    ", alerts firing \([$al[] | select(.state == "firing")] | length)" +
    ([$al[] | select(.state == "firing") | .labels.alertname] | unique as $f |
      if ($f | length) > 0 then " (\($f | join(", ")))" else "" end) +
    ", pending \([$al[] | select(.state == "pending")] | length)"'
}
am_detail() {
  curl -fsS -m 3 "$ALERTMANAGER_URL/api/v2/alerts" | jq -r '
    "alerts active \([.[] | select(.status.state == "active")] | length), suppressed \([.[] | select(.status.state == "suppressed")] | length)"'
}
sink_detail() {
  [ "$(http_status "http://127.0.0.1:$ALERT_SINK_PORT/health")" = 200 ] || { echo "GET /health failed"; return 1; }
  printf 'notifications %s in %s' "$(wc -l <"$ALERTS_LOG" 2>/dev/null || echo 0)" "$ALERTS_LOG"
}
exporter_detail() { # url metric
  local body
  body=$(curl -fsS -m 5 "$1/metrics") || { echo "GET /metrics failed"; return 1; }
  if [ -n "${2:-}" ]; then
    awk -v m="$2" '$1 == m {print m, $2; found = 1} END {if (!found) print m, "missing"}' <<<"$body"
  else
    echo "GET /metrics -> 200"
  fi
}

# A monitoring part counts only if it was started (its pid file exists):
# `up.sh --no-monitoring` stacks are healthy without it.
show_mon() { # name pidfile match detail-command...
  if [ -e "$2" ]; then
    show "$@"
  else
    line "$1" off - - "not started (up.sh --no-monitoring?)"
  fi
}
show_mon prometheus "$run/prometheus.pid" "prometheus --config.file" prom_detail
show_mon alertmanager "$run/alertmanager.pid" alertmanager am_detail
show_mon alert-sink "$run/alert-sink.pid" alert-sink.py sink_detail
show_mon pg-exporter "$run/postgres-exporter.pid" postgres-exporter exporter_detail "http://127.0.0.1:$PG_EXPORTER_PORT" pg_up
show_mon pgb-exporter "$run/pgbouncer-exporter.pid" pgbouncer-exporter exporter_detail "http://127.0.0.1:$PGB_EXPORTER_PORT" pgbouncer_up
show_mon redis-exp "$run/redis-exporter.pid" redis-exporter exporter_detail "http://127.0.0.1:$REDIS_EXPORTER_PORT" redis_up
if [ -e "$run/prometheus.pid" ]; then
  echo "Prometheus: $PROM_URL   Alertmanager: $ALERTMANAGER_URL   notifications: $ALERTS_LOG"
fi
[ -s "$KEY_FILE" ] && echo "admin key: $KEY_FILE"
exit $bad
