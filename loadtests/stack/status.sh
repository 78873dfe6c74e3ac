#!/usr/bin/env bash
# One line per part of the stack: running or not, pid, memory, health.
# Exit status 0 only when every part is up and healthy.
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
[ -s "$KEY_FILE" ] && echo "admin key: $KEY_FILE"
exit $bad
