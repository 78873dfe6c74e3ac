#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis are reachable for the test suite, installing
# and starting them when they are missing. Idempotent. Prints, as shell
# `export` lines on stdout, the URLs the tests should use:
#   eval "$(scripts/services.sh)"
#
# Order of preference for PostgreSQL:
#   1. TEST_DATABASE_URL, when already set;
#   2. a server on 127.0.0.1:5432 that lets role postgres in without a password;
#   3. a private cluster (trust auth) under ${SHORTENER_SERVICES_DIR:-/tmp/shortener-services}
#      on port 55432, created with the installed PostgreSQL binaries.
# Redis: TEST_REDIS_URL, else 127.0.0.1:6379, else a private server on 56379.
# PgBouncer (transaction pooling, in front of that PostgreSQL, for the suites
# that run through it): TEST_PGBOUNCER_URL, else scripts/pgbouncer.sh's test
# instance on 56435 (built from source once, cached).
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
dir=${SHORTENER_SERVICES_DIR:-/tmp/shortener-services}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

apt_install() {
  log "installing $*"
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >&2
}

pg_ok() { psql "$1" -tAc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
  if [ -n "${TEST_DATABASE_URL:-}" ]; then
    pg_ok "$TEST_DATABASE_URL" || { log "TEST_DATABASE_URL is set but unreachable"; return 1; }
    echo "$TEST_DATABASE_URL"; return
  fi
  command -v psql >/dev/null && command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
  local shared="postgres://postgres@127.0.0.1:5432/postgres"
  if ! pg_ok "$shared" && command -v pg_ctlcluster >/dev/null; then
    # The machine's own cluster may just be stopped.
    for v in $(ls /etc/postgresql 2>/dev/null); do
      as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start >&2 2>/dev/null || true
    done
    for _ in $(seq 1 20); do pg_ok "$shared" && break; sleep 0.5; done
  fi
  if pg_ok "$shared"; then echo "$shared"; return; fi

  # The machine's server wants a password (a stock install): use a private
  # cluster with trust auth instead, owned by the postgres user.
  local private="postgres://postgres@127.0.0.1:55432/postgres"
  if ! pg_ok "$private"; then
    local bin; bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    local data="$dir/pg"
    as_root mkdir -p "$dir"
    if [ ! -f "$data/PG_VERSION" ]; then
      log "creating a private PostgreSQL cluster in $data"
      as_root mkdir -p "$data"; as_root chown postgres: "$data"
      as_root runuser -u postgres -- "$bin/initdb" -D "$data" -A trust -U postgres >&2
    fi
    as_root runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
      -o "-p 55432 -k $data -c listen_addresses=127.0.0.1 -c max_connections=200" start >&2
  fi
  pg_ok "$private" || { log "PostgreSQL did not come up"; return 1; }
  echo "$private"
}

ensure_redis() {
  if [ -n "${TEST_REDIS_URL:-}" ]; then echo "$TEST_REDIS_URL"; return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    echo "redis://127.0.0.1:6379"; return
  fi
  if ! redis-cli -h 127.0.0.1 -p 56379 ping 2>/dev/null | grep -q PONG; then
    log "starting a private Redis on 127.0.0.1:56379"
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port 56379 --save "" --appendonly no \
      --daemonize yes --logfile "$dir/redis.log" >&2
    for _ in $(seq 1 20); do redis-cli -p 56379 ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
  fi
  echo "redis://127.0.0.1:56379"
}

ensure_pgbouncer() {
  if [ -n "${TEST_PGBOUNCER_URL:-}" ]; then echo "$TEST_PGBOUNCER_URL"; return; fi
  command -v psql >/dev/null || apt_install postgresql-client
  as_root "$(dirname "${BASH_SOURCE[0]}")/pgbouncer.sh" test-instance "$1"
}

pg_url=$(ensure_postgres)
redis_url=$(ensure_redis)
pgbouncer_url=$(ensure_pgbouncer "$pg_url")
log "PostgreSQL: $pg_url"
log "Redis:      $redis_url"
log "PgBouncer:  $pgbouncer_url"
printf 'export TEST_DATABASE_URL=%q\nexport TEST_REDIS_URL=%q\nexport TEST_PGBOUNCER_URL=%q\n' \
  "$pg_url" "$redis_url" "$pgbouncer_url"
