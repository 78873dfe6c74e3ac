#!/usr/bin/env bash
# Starts the production-like stack on 127.0.0.1, without Docker:
#
#   nginx :18080 (least_conn, keepalive, retries)
#     -> 3 x `shortener serve` :18081-18083
#          -> PgBouncer :56433 (transaction pooling) -> PostgreSQL :56432
#          -> Redis :56380 (cache only: no persistence, allkeys-lru)
#
# and its monitoring (Debian's packages, own instances, loopback only):
#
#   Prometheus :19090 (monitoring/prometheus.yml, rules monitoring/alerts.yaml)
#     scrapes the replicas, postgres_exporter :19187, PgBouncer exporter :19127
#     (PyPI's; see ensure_pgbouncer_exporter), redis_exporter :19121; alerts go to
#   Alertmanager :19093 (monitoring/alertmanager.yml) -> webhook sink :9099
#     (loadtests/stack/alert-sink.py) -> $STACK_DIR/log/alerts.jsonl
#
# Idempotent: what is already running is left running (nginx and PgBouncer
# reload their generated configs; Prometheus and Alertmanager only when theirs,
# or the rules, changed). Stop with down.sh; inspect with status.sh; inject
# faults with fault.sh.
#
# Usage: loadtests/stack/up.sh [--build] [--restart-apps] [--no-monitoring]
#   --build           rebuild the release binary even if it exists
#   --restart-apps    restart the app replicas one by one (to pick up a new binary)
#   --no-monitoring   do not start Prometheus, Alertmanager, the exporters and the
#                     sink (STACK_MONITORING=0 does the same); running ones are left alone
# State (data, logs, configs, pids, the admin key): $STACK_DIR (/tmp/shortener-stack).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=0 restart_apps=0
for arg in "$@"; do
  case $arg in
    --build) build=1 ;;
    --restart-apps) restart_apps=1 ;;
    --no-monitoring) STACK_MONITORING=0 ;;
    -h|--help) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

need_root
raise_nofile

# ---------------------------------------------------------------- packages
ensure_packages() {
  local pkgs=(redis-server nginx curl iproute2 procps)
  pg_bin_dir >/dev/null || pkgs+=(postgresql postgresql-client)
  command -v psql >/dev/null || pkgs+=(postgresql-client)
  apt_ensure "${pkgs[@]}"
  # Debian starts the packaged services on install; this stack runs its own.
  if [ "$STACK_MONITORING" != 0 ]; then
    apt_ensure python3 python3-yaml jq
    apt_ensure_no_start prometheus prometheus-alertmanager prometheus-postgres-exporter \
      prometheus-redis-exporter
  fi
}

# PgBouncer's exporter. Debian bookworm's prometheus-pgbouncer-exporter (1.7) reads
# SHOW STATS columns that PgBouncer dropped in 1.8 and crashes at start against the
# 1.24 this stack builds; trixie's (prometheus-community's, in Go) needs a newer Go than
# bookworm has. PyPI's prometheus-pgbouncer-exporter 2.1.2 reads today's columns and
# exports pgbouncer_up. It pins 2020 versions of its libraries, so it is installed
# without them into a venv that uses Debian's psycopg2, prometheus_client, yaml and
# pythonjsonlogger; cached like the PgBouncer build.
PGB_EXPORTER_VERSION=2.1.2
ensure_pgbouncer_exporter() {
  local venv=$STACK_CACHE/pgbouncer-exporter
  apt_ensure python3-venv python3-psycopg2 python3-prometheus-client python3-yaml python3-pythonjsonlogger
  local have=""
  if [ -x "$PGB_EXPORTER_BIN" ]; then
    have=$("$venv/bin/pip" show prometheus-pgbouncer-exporter 2>/dev/null | sed -n 's/^Version: //p') || true
  fi
  [ "$have" = "$PGB_EXPORTER_VERSION" ] && return 0
  log "installing prometheus-pgbouncer-exporter $PGB_EXPORTER_VERSION (PyPI) into $venv (once)"
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv" >&2
  "$venv/bin/pip" install -q --no-deps "prometheus-pgbouncer-exporter==$PGB_EXPORTER_VERSION" >&2 ||
    die "pip could not install prometheus-pgbouncer-exporter $PGB_EXPORTER_VERSION"
  "$venv/bin/python" -c 'import prometheus_pgbouncer_exporter.cli, psycopg2, pythonjsonlogger' ||
    die "prometheus-pgbouncer-exporter in $venv does not import"
}

# PgBouncer 1.21+ (named prepared statements across transaction pooling):
# scripts/pgbouncer.sh builds Debian's current source once into the cache
# the test suite shares.
ensure_pgbouncer() {
  local built
  built=$(SHORTENER_STACK_CACHE="$STACK_CACHE" "$STACK_REPO/scripts/pgbouncer.sh" build) ||
    die "no PgBouncer >= 1.21"
  [ "$built" = "$PGBOUNCER_BIN" ] || die "PgBouncer built at $built, expected $PGBOUNCER_BIN"
}

ensure_binary() {
  if [ "$build" = 1 ] || [ ! -x "$SHORTENER_BIN" ]; then
    log "building the release binary (CARGO_TARGET_DIR=$TARGET_DIR)"
    command -v cargo >/dev/null || die "cargo not found; install Rust or set SHORTENER_BIN"
    (cd "$STACK_REPO" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p shortener) >&2
  fi
  [ -x "$SHORTENER_BIN" ] || die "no binary at $SHORTENER_BIN"
}

# ---------------------------------------------------------------- state dir
prepare_dirs() {
  mkdir -p "$STACK_DIR"/{log,run,bin,nginx,redis,pgbouncer}
  chmod 755 "$STACK_DIR"
  # PostgreSQL and PgBouncer run as postgres and write their logs and pids here.
  chown postgres: "$STACK_DIR/run" "$STACK_DIR/pgbouncer"
  for f in postgres.log pgbouncer.log; do
    touch "$STACK_DIR/log/$f"; chown postgres: "$STACK_DIR/log/$f"
  done
  # /root is not readable by postgres: run a copy of the cached binary.
  install -m 755 "$PGBOUNCER_BIN" "$STACK_DIR/bin/pgbouncer"
  if [ ! -s "$KEY_FILE" ]; then
    (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40 >"$KEY_FILE")
    log "generated an admin API key in $KEY_FILE"
  fi
}

# ---------------------------------------------------------------- PostgreSQL
pg_as() { runuser -u postgres -- "$@"; }

start_postgres() {
  local bin data=$STACK_DIR/pg
  bin=$(pg_bin_dir) || die "no PostgreSQL binaries under /usr/lib/postgresql"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "creating a private PostgreSQL cluster in $data"
    mkdir -p "$data"; chown postgres: "$data"; chmod 700 "$data"
    pg_as "$bin/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$STACK_DIR/log/initdb.log" 2>&1 ||
      { cat "$STACK_DIR/log/initdb.log" >&2; die "initdb failed"; }
    echo "include_if_exists = 'stack.conf'" >>"$data/postgresql.conf"
    rm -f "$STACK_DIR/seeded"
  fi
  # Sized like the operator's PostgreSQL (512 MiB limit on a 1 GiB node):
  # the stock 128MB shared_buffers and 100 connections, which leaves room for
  # PgBouncer's pool (max_db_connections = default_pool_size + 5) and admin.
  cat >"$data/stack.conf" <<EOF
# Written by loadtests/stack/up.sh on every start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$data'
max_connections = $PG_MAX_CONNECTIONS
shared_buffers = $PG_SHARED_BUFFERS
effective_cache_size = 512MB
# Clicks insert at random places in the events indexes; once those outgrow
# shared_buffers, most inserts write a full-page image to the WAL (measured
# at 1M URLs / 10M events: 45 KB of WAL per click, checkpoints every 15 s).
# Compressing the images and spacing checkpoints cuts that volume.
wal_compression = lz4
max_wal_size = 2GB
log_min_duration_statement = 250ms
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  chown postgres: "$data/stack.conf"
  if pg_as "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "PostgreSQL already running (:$PG_PORT); reloading its config"
    pg_as "$bin/pg_ctl" -D "$data" reload >/dev/null
  else
    need_port "$PG_PORT"
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    pg_as "$bin/pg_ctl" -D "$data" -l "$STACK_DIR/log/postgres.log" -w -t 60 start >/dev/null ||
      { tail -n 20 "$STACK_DIR/log/postgres.log" >&2; die "PostgreSQL did not start"; }
  fi
  if ! psql "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -tAc \
      "select 1 from pg_database where datname = '$DB_NAME'" | grep -q 1; then
    psql "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -qc "create database $DB_NAME" >/dev/null
  fi
}

seed_once() {
  [ -f "$STACK_DIR/seeded" ] && return 0
  log "migrating and loading seed_data/ (once)"
  env -i PATH="$PATH" DATABASE_URL="$PG_URL" RUST_LOG=warn \
    "$SHORTENER_BIN" seed load "$STACK_REPO/seed_data" >&2 || die "seed load failed"
  date -u +%FT%TZ >"$STACK_DIR/seeded"
}

# ---------------------------------------------------------------- PgBouncer
start_pgbouncer() {
  local dir=$STACK_DIR/pgbouncer pidf=$STACK_DIR/run/pgbouncer.pid pid
  echo '"postgres" ""' >"$dir/userlist.txt"
  # The operator's pgbouncer.ini, with trust auth on loopback instead of SCRAM.
  cat >"$dir/pgbouncer.ini" <<EOF
; Written by loadtests/stack/up.sh on every start.
[databases]
$DB_NAME = host=127.0.0.1 port=$PG_PORT dbname=$DB_NAME

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $PGB_POOL_SIZE
max_client_conn = $PGB_MAX_CLIENTS
max_db_connections = $((PGB_POOL_SIZE + 5))
; sqlx prepares statements; PgBouncer tracks them so transaction pooling stays correct.
max_prepared_statements = 200
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits,options
admin_users = postgres
stats_users = postgres
log_connections = 0
log_disconnections = 0
logfile = $STACK_DIR/log/pgbouncer.log
pidfile = $pidf
EOF
  chown -R postgres: "$dir"
  if pid=$(live_pid "$pidf" pgbouncer); then
    log "PgBouncer already running (pid $pid); reloading its config"
    kill -HUP "$pid"
    return 0
  fi
  rm -f "$pidf"
  need_port "$PGB_PORT"
  log "starting PgBouncer on 127.0.0.1:$PGB_PORT (transaction pooling)"
  # runuser resets the open-files limit (PAM); PgBouncer needs two per client.
  runuser -u postgres -- sh -c 'ulimit -Sn 8192 2>/dev/null; exec "$0" "$@"' \
    "$STACK_DIR/bin/pgbouncer" -d "$dir/pgbouncer.ini" ||
    { tail -n 20 "$STACK_DIR/log/pgbouncer.log" >&2; die "PgBouncer did not start"; }
}

# ---------------------------------------------------------------- Redis
start_redis() {
  local pidf=$STACK_DIR/run/redis.pid pid
  if pid=$(live_pid "$pidf" redis-server); then
    log "Redis already running (pid $pid)"
    return 0
  fi
  need_port "$REDIS_PORT"
  log "starting Redis on 127.0.0.1:$REDIS_PORT (maxmemory $REDIS_MAXMEMORY, allkeys-lru, no persistence)"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy allkeys-lru \
    --dir "$STACK_DIR/redis" --daemonize yes --pidfile "$pidf" \
    --logfile "$STACK_DIR/log/redis.log" >/dev/null
}

# ---------------------------------------------------------------- app replicas

start_app() {
  local port=$1 pid
  local pidf=$STACK_DIR/run/app-$port.pid logf=$STACK_DIR/log/app-$port.log
  if pid=$(live_pid "$pidf" serve); then
    if [ "$restart_apps" = 1 ]; then
      log "restarting app :$port (pid $pid)"
      stop_pid "$pid" TERM 30 "app :$port" || true
    else
      log "app :$port already running (pid $pid)"
      return 0
    fi
  fi
  need_port "$port"
  local envs=(
    PATH="$PATH"
    LISTEN_ADDR="127.0.0.1:$port"
    DATABASE_URL="$PGB_URL"
    MIGRATION_DATABASE_URL="$PG_URL"
    DATABASE_POOL_SIZE="$APP_POOL_SIZE"
    REDIS_URL="$REDIS_URL_STACK"
    AUTH_MODE=api-key
    ADMIN_API_KEY="$(cat "$KEY_FILE")"
    PUBLIC_BASE_URL="$NGINX_URL"
    LOG_FORMAT=json
    RUST_LOG="${APP_RUST_LOG:-info}"
    SHUTDOWN_GRACE_SECS="${APP_SHUTDOWN_GRACE_SECS:-10}"
    REQUEST_TIMEOUT_SECS="${APP_REQUEST_TIMEOUT_SECS:-10}"
    # One per replica: it holds the replica's click spill file.
    DATA_DIR="$STACK_DIR/app-data/$port"
    # One runtime worker per replica, as in a pod limited to one CPU or
    # less (the runtime sizes itself from the cgroup quota there); three
    # replicas of two workers each on two cores would mostly switch.
    TOKIO_WORKER_THREADS="${APP_WORKER_THREADS:-1}"
    # nginx in front sets X-Forwarded-For and X-Real-IP, as ingress-nginx does.
    TRUSTED_PROXIES=127.0.0.1/32
    # The load generator is one client: the rate limits (on by default) would
    # measure themselves. Set in the caller's environment to test them.
    RATE_LIMIT_PER_MINUTE=0
    CREATE_RATE_LIMIT_PER_MINUTE=0
    REDIRECT_MISS_LIMIT_PER_MINUTE=0
  )
  add_passthrough_env envs
  log "starting app replica on 127.0.0.1:$port"
  # setsid: the replica outlives this script and its terminal.
  setsid env -i "${envs[@]}" "$SHORTENER_BIN" serve </dev/null >>"$logf" 2>&1 &
  echo $! >"$pidf"
}

# ---------------------------------------------------------------- nginx
write_nginx_conf() {
  local servers="" p
  for p in $APP_PORTS; do
    # Passive health: 3 failures within 5 s take a replica out for 5 s.
    servers+="        server 127.0.0.1:$p max_fails=3 fail_timeout=5s;"$'\n'
  done
  mkdir -p "$STACK_DIR/nginx/tmp"
  cat >"$STACK_DIR/nginx/nginx.conf" <<EOF
# Written by loadtests/stack/up.sh on every start. Stands in for ingress-nginx.
user www-data;
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile $(ulimit -n);
pid $STACK_DIR/run/nginx.pid;
error_log $STACK_DIR/log/nginx-error.log warn;

events {
    # 2 workers x 4096: each proxied request holds a client and an upstream
    # connection, so this carries well over 500 concurrent clients.
    worker_connections $NGINX_WORKER_CONNECTIONS;
    multi_accept on;
}

http {
    access_log off;
    server_tokens off;
    keepalive_timeout 65s;
    keepalive_requests 100000;
    client_body_temp_path $STACK_DIR/nginx/tmp/client_body;
    proxy_temp_path $STACK_DIR/nginx/tmp/proxy;
    fastcgi_temp_path $STACK_DIR/nginx/tmp/fastcgi;
    uwsgi_temp_path $STACK_DIR/nginx/tmp/uwsgi;
    scgi_temp_path $STACK_DIR/nginx/tmp/scgi;

    upstream shortener {
        least_conn;
$servers
        # Idle keepalive connections kept per worker to the replicas.
        keepalive 128;
        keepalive_requests 100000;
        keepalive_timeout 60s;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        client_max_body_size 16m;

        location / {
            proxy_pass http://shortener;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            # As ingress-nginx does: the service limits rates per X-Real-IP.
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_connect_timeout 1s;
            proxy_read_timeout 15s;
            proxy_send_timeout 15s;
            # Another replica gets the request when one is down or answers
            # 502/503 (draining, database unreachable). POSTs are not retried
            # (no non_idempotent): a create is never done twice.
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 5s;
        }
    }
}
EOF
}

nginx_cmd() {
  nginx -c "$STACK_DIR/nginx/nginx.conf" -p "$STACK_DIR/nginx" -e "$STACK_DIR/log/nginx-error.log" "$@"
}

start_nginx() {
  local pid
  write_nginx_conf
  nginx_cmd -t -q || die "nginx rejected $STACK_DIR/nginx/nginx.conf"
  if pid=$(live_pid "$STACK_DIR/run/nginx.pid" nginx); then
    log "nginx already running (pid $pid); reloading its config"
    nginx_cmd -s reload
    return 0
  fi
  need_port "$NGINX_PORT"
  log "starting nginx on 127.0.0.1:$NGINX_PORT"
  nginx_cmd
}

# ---------------------------------------------------------------- monitoring
MON_DIR=$STACK_DIR/monitoring

# Starts "$@" detached (setsid: it outlives this script), logging to LOG, and
# records its pid, unless the process in PIDFILE (command line containing
# MATCH) is already running. Returns 1 when it was already running.
start_daemon() { # name pidfile match port log command...
  local name=$1 pidf=$2 match=$3 port=$4 logf=$5 pid
  shift 5
  if pid=$(live_pid "$pidf" "$match"); then
    log "$name already running (pid $pid)"
    return 1
  fi
  rm -f "$pidf"
  need_port "$port"
  log "starting $name on 127.0.0.1:$port"
  setsid "$@" </dev/null >>"$logf" 2>&1 &
  echo $! >"$pidf"
  return 0
}

# Waits for URL to answer 200, else shows the end of LOG and stops.
wait_monitoring_part() { # name url log
  wait_http_ok "$2" 30 && return 0
  tail -n 20 "$3" >&2 || true
  die "$1 is not healthy ($2; log: $3)"
}

# $MON_DIR/prometheus.yml: monitoring/prometheus.yml with this stack's ports and the
# rule file's absolute path; nothing else changes (see the header of that file).
write_prometheus_config() {
  APP_PORTS=$APP_PORTS PG_EXPORTER_PORT=$PG_EXPORTER_PORT PGB_EXPORTER_PORT=$PGB_EXPORTER_PORT \
  REDIS_EXPORTER_PORT=$REDIS_EXPORTER_PORT PROM_PORT=$PROM_PORT ALERTMANAGER_PORT=$ALERTMANAGER_PORT \
  python3 - "$STACK_REPO/monitoring/prometheus.yml" "$MON_DIR/prometheus.yml" <<'PY' ||
import os, sys, yaml
src, dst = sys.argv[1:3]
env = os.environ
loop = lambda port: f"127.0.0.1:{port}"
targets = {
    "shortener": [loop(p) for p in env["APP_PORTS"].split()],
    "postgres": [loop(env["PG_EXPORTER_PORT"])],
    "pgbouncer": [loop(env["PGB_EXPORTER_PORT"])],
    "redis": [loop(env["REDIS_EXPORTER_PORT"])],
    "prometheus": [loop(env["PROM_PORT"])],
    "alertmanager": [loop(env["ALERTMANAGER_PORT"])],
}
cfg = yaml.safe_load(open(src))
jobs = [job["job_name"] for job in cfg["scrape_configs"]]
if sorted(jobs) != sorted(targets):
    sys.exit(f"{src} has the jobs {sorted(jobs)}; up.sh knows the targets of {sorted(targets)}")
for job in cfg["scrape_configs"]:
    job["static_configs"] = [{"targets": targets[job["job_name"]]}]
here = os.path.dirname(os.path.abspath(src))
cfg["rule_files"] = [os.path.join(here, f) for f in cfg["rule_files"]]
cfg["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [loop(env["ALERTMANAGER_PORT"])]}]}]
with open(dst, "w") as f:
    f.write(f"# Written by loadtests/stack/up.sh from {src} on every start.\n")
    yaml.safe_dump(cfg, f, sort_keys=False)
PY
    die "could not write $MON_DIR/prometheus.yml"
  promtool check config "$MON_DIR/prometheus.yml" >"$MON_DIR/promtool.log" 2>&1 ||
    { cat "$MON_DIR/promtool.log" >&2; die "promtool rejected $MON_DIR/prometheus.yml"; }
}

# $MON_DIR/alertmanager.yml: monitoring/alertmanager.yml with the sink's port; only the
# webhook URLs differ (and not at all on the default port 9099).
write_alertmanager_config() {
  sed "s#http://127.0.0.1:9099/#http://127.0.0.1:$ALERT_SINK_PORT/#" \
    "$STACK_REPO/monitoring/alertmanager.yml" >"$MON_DIR/alertmanager.yml"
  amtool check-config "$MON_DIR/alertmanager.yml" >"$MON_DIR/amtool.log" 2>&1 ||
    { cat "$MON_DIR/amtool.log" >&2; die "amtool rejected $MON_DIR/alertmanager.yml"; }
}

# True when FILES differ from what NAME last ran with (the digest is kept in
# $MON_DIR/NAME.sha256, which this updates). A reload that changes nothing is
# not free: Alertmanager rebuilds its aggregation groups, which restarts their
# group_wait and group_interval timers, so a resolved notification can come up
# to a group_interval later than it would have.
config_changed() { # name file...
  local name=$1 sum
  shift
  sum=$(cat "$@" | sha256sum | cut -d' ' -f1)
  [ "$(cat "$MON_DIR/$name.sha256" 2>/dev/null)" != "$sum" ] || return 1
  echo "$sum" >"$MON_DIR/$name.sha256"
}

start_monitoring() {
  local run=$STACK_DIR/run logd=$STACK_DIR/log pid
  mkdir -p "$MON_DIR"/{prometheus-data,alertmanager-data}
  touch "$ALERTS_LOG"

  start_daemon "alert sink" "$run/alert-sink.pid" alert-sink.py "$ALERT_SINK_PORT" "$logd/alert-sink.log" \
    env -i PATH="$PATH" python3 "$STACK_REPO/loadtests/stack/alert-sink.py" \
      --port "$ALERT_SINK_PORT" --out "$ALERTS_LOG" || true

  write_alertmanager_config
  if start_daemon Alertmanager "$run/alertmanager.pid" alertmanager "$ALERTMANAGER_PORT" "$logd/alertmanager.log" \
      prometheus-alertmanager --config.file="$MON_DIR/alertmanager.yml" \
        --storage.path="$MON_DIR/alertmanager-data" \
        --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
        --web.external-url="$ALERTMANAGER_URL/" --cluster.listen-address=; then
    config_changed alertmanager "$MON_DIR/alertmanager.yml" || true
  elif config_changed alertmanager "$MON_DIR/alertmanager.yml"; then
    pid=$(live_pid "$run/alertmanager.pid" alertmanager) && kill -HUP "$pid" && log "Alertmanager: config changed, reloaded"
  else
    log "Alertmanager: config unchanged, not reloaded"
  fi

  # The exporters: each connects as the trusted postgres user on loopback.
  start_daemon postgres_exporter "$run/postgres-exporter.pid" postgres-exporter "$PG_EXPORTER_PORT" "$logd/postgres-exporter.log" \
    env -i PATH="$PATH" DATA_SOURCE_NAME="postgresql://postgres@127.0.0.1:$PG_PORT/$DB_NAME?sslmode=disable" \
      prometheus-postgres-exporter --web.listen-address="127.0.0.1:$PG_EXPORTER_PORT" || true
  cat >"$MON_DIR/pgbouncer-exporter.yml" <<EOF
# Written by loadtests/stack/up.sh on every start (read when the exporter starts).
exporter_host: 127.0.0.1
exporter_port: $PGB_EXPORTER_PORT
pgbouncers:
  - dsn: postgresql://postgres@127.0.0.1:$PGB_PORT/pgbouncer
    connect_timeout: 2
    exclude_databases: [pgbouncer]
EOF
  start_daemon "PgBouncer exporter" "$run/pgbouncer-exporter.pid" pgbouncer-exporter "$PGB_EXPORTER_PORT" "$logd/pgbouncer-exporter.log" \
    env -i PATH="$PATH" "$PGB_EXPORTER_BIN" --config "$MON_DIR/pgbouncer-exporter.yml" --log-file /dev/stdout || true
  start_daemon redis_exporter "$run/redis-exporter.pid" redis-exporter "$REDIS_EXPORTER_PORT" "$logd/redis-exporter.log" \
    env -i PATH="$PATH" prometheus-redis-exporter --redis.addr="redis://127.0.0.1:$REDIS_PORT" \
      --web.listen-address="127.0.0.1:$REDIS_EXPORTER_PORT" || true

  write_prometheus_config
  if start_daemon Prometheus "$run/prometheus.pid" "prometheus --config.file" "$PROM_PORT" "$logd/prometheus.log" \
      prometheus --config.file="$MON_DIR/prometheus.yml" \
        --storage.tsdb.path="$MON_DIR/prometheus-data" --storage.tsdb.retention.time=7d \
        --web.listen-address="127.0.0.1:$PROM_PORT" --web.external-url="$PROM_URL/" \
        --web.enable-lifecycle; then
    config_changed prometheus "$MON_DIR/prometheus.yml" "$STACK_REPO/monitoring/alerts.yaml" || true
  elif config_changed prometheus "$MON_DIR/prometheus.yml" "$STACK_REPO/monitoring/alerts.yaml"; then
    pid=$(live_pid "$run/prometheus.pid" "prometheus --config.file") && kill -HUP "$pid" && log "Prometheus: config or rules changed, reloaded"
  else
    log "Prometheus: config and rules unchanged, not reloaded"
  fi

  wait_monitoring_part "alert sink" "http://127.0.0.1:$ALERT_SINK_PORT/health" "$logd/alert-sink.log"
  wait_monitoring_part Alertmanager "$ALERTMANAGER_URL/-/ready" "$logd/alertmanager.log"
  wait_monitoring_part postgres_exporter "http://127.0.0.1:$PG_EXPORTER_PORT/metrics" "$logd/postgres-exporter.log"
  wait_monitoring_part "PgBouncer exporter" "http://127.0.0.1:$PGB_EXPORTER_PORT/metrics" "$logd/pgbouncer-exporter.log"
  wait_monitoring_part redis_exporter "http://127.0.0.1:$REDIS_EXPORTER_PORT/metrics" "$logd/redis-exporter.log"
  wait_monitoring_part Prometheus "$PROM_URL/-/ready" "$logd/prometheus.log"

  # Ready is not yet scraped (and a restarted Prometheus still answers queries from
  # its old samples): wait until the targets page shows every target scraped and up.
  local want n=""
  want=$(( $(wc -w <<<"$APP_PORTS") + 5 ))
  for _ in $(seq 1 30); do
    n=$(curl -fsS -m 3 "$PROM_URL/api/v1/targets?state=active" |
      jq -r '[.data.activeTargets[] | select(.health == "up")] | length' 2>/dev/null) || n=0
    [ "$n" = "$want" ] && break
    sleep 1
  done
  [ "$n" = "$want" ] || die "Prometheus has $n of $want targets up after 30 s (see $PROM_URL/targets)"
}

# ---------------------------------------------------------------- health
wait_healthy() {
  local p
  for _ in $(seq 1 50); do
    pg_as "$(pg_bin_dir)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.2
  done || true
  psql "$PGB_URL" -tAc 'select 1' 2>/dev/null | grep -q 1 || die "PgBouncer does not answer on :$PGB_PORT"
  redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG || die "Redis does not answer on :$REDIS_PORT"
  for p in $APP_PORTS; do
    if ! wait_http_ok "http://127.0.0.1:$p/health" 90; then
      tail -n 20 "$STACK_DIR/log/app-$p.log" >&2 || true
      die "app :$p is not healthy (log: $STACK_DIR/log/app-$p.log)"
    fi
  done
  wait_http_ok "$NGINX_URL/health" 20 || die "nginx :$NGINX_PORT does not pass /health through"
}

ensure_packages
reserve_stack_ports "$PG_PORT" "$PGB_PORT" "$REDIS_PORT" "$NGINX_PORT" $APP_PORTS \
  "$PROM_PORT" "$ALERTMANAGER_PORT" "$PG_EXPORTER_PORT" "$PGB_EXPORTER_PORT" "$REDIS_EXPORTER_PORT" "$ALERT_SINK_PORT"
ensure_pgbouncer
[ "$STACK_MONITORING" = 0 ] || ensure_pgbouncer_exporter
ensure_binary
prepare_dirs
start_postgres
seed_once
start_pgbouncer
start_redis
for p in $APP_PORTS; do
  start_app "$p"
  # A restart is rolling: the next replica goes only when this one serves.
  if [ "$restart_apps" = 1 ] && ! wait_http_ok "http://127.0.0.1:$p/health" 90; then
    tail -n 20 "$STACK_DIR/log/app-$p.log" >&2 || true
    die "app :$p is not healthy after its restart"
  fi
done
start_nginx
wait_healthy
# After the stack is healthy, so that its start does not look like an outage.
[ "$STACK_MONITORING" = 0 ] || start_monitoring

cat <<EOF

Stack is up (state in $STACK_DIR):
  entry point  $NGINX_URL            (nginx, least_conn over ${APP_PORTS// /, })
  replicas     $(for p in $APP_PORTS; do printf 'http://127.0.0.1:%s ' "$p"; done)
  PostgreSQL   $PG_URL
  PgBouncer    $PGB_URL   (transaction pooling)
  Redis        $REDIS_URL_STACK
  admin key    $KEY_FILE   (Authorization: Bearer \$(cat $KEY_FILE))
  logs         $STACK_DIR/log/
  binary       $SHORTENER_BIN ($(date -r "$SHORTENER_BIN" '+%F %T'))
$(if [ "$STACK_MONITORING" != 0 ]; then cat <<MON
  Prometheus   $PROM_URL   (rules: monitoring/alerts.yaml; config $MON_DIR/prometheus.yml)
  Alertmanager $ALERTMANAGER_URL   (notifications: $ALERTS_LOG)
MON
fi)

Try:  curl -s $NGINX_URL/health
Stop: loadtests/stack/down.sh
EOF
