#!/usr/bin/env bash
# PgBouncer for the test suite and the local stack.
#
# sqlx prepares every statement under a name; PgBouncer keeps named prepared
# statements correct across transaction pooling only from 1.21 on
# (max_prepared_statements), and Debian bookworm ships 1.18. So the current
# Debian source package (trixie) is built once into a cache and reused.
#
# Usage:
#   scripts/pgbouncer.sh build
#       Prints the path of a PgBouncer >= 1.21 binary, building it first
#       if the cache has none (~1-2 min; needs root for apt-get).
#   scripts/pgbouncer.sh test-instance POSTGRES_URL [LISTEN_PORT]
#       Makes sure a PgBouncer in transaction pooling, in front of the
#       server of POSTGRES_URL (any database name: `* =` fallback), listens
#       on 127.0.0.1:LISTEN_PORT (default 56435), and prints its URL (the
#       same database path as POSTGRES_URL). Idempotent; state under
#       ${SHORTENER_SERVICES_DIR:-/tmp/shortener-services}/pgbouncer.
#   scripts/pgbouncer.sh stop
#       Stops the test instance.
set -euo pipefail

CACHE=${SHORTENER_STACK_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/shortener-stack}
BIN="$CACHE/pgbouncer/bin/pgbouncer"
STATE=${SHORTENER_SERVICES_DIR:-/tmp/shortener-services}/pgbouncer

log() { printf '[pgbouncer] %s\n' "$*" >&2; }
die() { printf '[pgbouncer] error: %s\n' "$*" >&2; exit 1; }

# apt-get install, only what is missing.
apt_ensure() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

recent_enough() {
  [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | head -n1 |
    awk '{split($2, v, "."); exit !(v[1] > 1 || (v[1] == 1 && v[2] >= 21))}'
}

build() {
  if recent_enough; then echo "$BIN"; return 0; fi
  [ "$(id -u)" -eq 0 ] || die "building PgBouncer needs root (apt-get)"
  log "building PgBouncer from Debian source into $CACHE/pgbouncer (once)"
  apt_ensure libevent-dev libssl-dev libc-ares-dev pkg-config build-essential dpkg-dev
  local have
  have=$( (apt-cache showsrc pgbouncer 2>/dev/null || true) | awk '/^Version:/{print $2}' | sort -V | tail -n1)
  if [ -z "$have" ] || dpkg --compare-versions "$have" lt 1.21; then
    log "adding a deb-src entry for Debian trixie (source packages only)"
    cat >/etc/apt/sources.list.d/shortener-trixie-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq >&2
  fi
  local work
  work=$(mktemp -d /tmp/pgbouncer-build.XXXXXX)
  (
    cd "$work"
    apt-get -o APT::Sandbox::User=root source -qq pgbouncer >build.log 2>&1 ||
      { cat build.log >&2; exit 1; }
    cd pgbouncer-*/
    { ./configure --prefix="$CACHE/pgbouncer" && make -j"$(nproc)" && make install; } \
      >>../build.log 2>&1 || { tail -n 40 ../build.log >&2; exit 1; }
  ) || die "PgBouncer build failed (log in $work/build.log)"
  rm -rf "$work"
  recent_enough || die "the built PgBouncer is older than 1.21"
  log "built $("$BIN" --version | head -n1)"
  echo "$BIN"
}

pg_ready() { psql "$1" -tAc 'select 1' >/dev/null 2>&1; }

test_instance() {
  local upstream=${1:?usage: test-instance POSTGRES_URL [LISTEN_PORT]} port=${2:-56435}
  local hostport=${upstream#*://}
  hostport=${hostport#*@}
  hostport=${hostport%%/*}
  local host=${hostport%%:*} pg_port=5432
  [ "$hostport" != "$host" ] && pg_port=${hostport##*:}
  local user=${upstream#*://}
  user=${user%%@*}
  user=${user%%:*}
  local url=${upstream/$hostport/127.0.0.1:$port}

  if pg_ready "$url" && [ -f "$STATE/pgbouncer.ini" ] &&
     grep -Fxq "* = host=$host port=$pg_port" "$STATE/pgbouncer.ini"; then
    echo "$url"; return 0
  fi
  local bin
  bin=$(build)
  mkdir -p "$STATE/bin" "$STATE/log"
  # PgBouncer refuses to run as root; the postgres user runs it from here.
  install -m 755 "$bin" "$STATE/bin/pgbouncer"
  echo "\"$user\" \"\"" >"$STATE/userlist.txt"
  cat >"$STATE/pgbouncer.ini" <<EOF
; Written by scripts/pgbouncer.sh for the test suite: every database of the
; test server, through transaction pooling (production's mode).
[databases]
* = host=$host port=$pg_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $STATE/userlist.txt
pool_mode = transaction
default_pool_size = 10
max_client_conn = 1000
max_prepared_statements = 200
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits,options
; Test databases come and go: forget their pools soon.
autodb_idle_timeout = 30
log_connections = 0
log_disconnections = 0
logfile = $STATE/log/pgbouncer.log
pidfile = $STATE/pgbouncer.pid
EOF
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$STATE"; fi
  stop
  log "starting PgBouncer on 127.0.0.1:$port in front of $host:$pg_port"
  local run=("$STATE/bin/pgbouncer" -d "$STATE/pgbouncer.ini")
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- sh -c 'ulimit -Sn 4096 2>/dev/null; exec "$0" "$@"' "${run[@]}"
  else
    "${run[@]}"
  fi || { tail -n 20 "$STATE/log/pgbouncer.log" >&2 || true; die "PgBouncer did not start"; }
  for _ in $(seq 1 50); do pg_ready "$url" && break; sleep 0.1; done
  pg_ready "$url" || { tail -n 20 "$STATE/log/pgbouncer.log" >&2 || true; die "PgBouncer does not answer on $port"; }
  echo "$url"
}

stop() {
  local pid
  pid=$(cat "$STATE/pgbouncer.pid" 2>/dev/null) || return 0
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q pgbouncer "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$STATE/pgbouncer.pid"
}

case ${1:-} in
  build) build ;;
  test-instance) shift; test_instance "$@" ;;
  stop) stop ;;
  *) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 2 ;;
esac
