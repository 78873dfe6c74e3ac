# shellcheck shell=bash disable=SC2034
# Settings and functions shared by loadtests/scale/load.sh and run.sh;
# sourced, not run.
SCALE_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHORTENER_BIN=${SHORTENER_BIN:-/work/bin/shortener}
# The wrk helpers (and through them stack/lib.sh: apt_ensure, wait_http_ok,
# stop_pid, load_note, ...). Nothing of the stack itself is used or started.
. "$SCALE_HERE/../wrk/lib.sh"

log() { printf '[scale] %s\n' "$*" >&2; }
die() { printf '[scale] error: %s\n' "$*" >&2; exit 1; }

# The system PostgreSQL (not the stack's private cluster).
SCALE_PGHOST=${SCALE_PGHOST:-127.0.0.1}
SCALE_PGPORT=${SCALE_PGPORT:-5432}
SCALE_PGUSER=${SCALE_PGUSER:-postgres}
SCALE_PORT=${SCALE_PORT:-18090}
SCALE_DIR=${SCALE_DIR:-/tmp/shortener-scale}

# Size presets: "big" is the requirement's data set, "small" the 1 % one it
# is compared with. SCALE_USERS / SCALE_URLS / SCALE_EVENTS / SCALE_DB
# override a preset.
scale_preset() { # big|small
  case $1 in
    big)
      SCALE_USERS=${SCALE_USERS:-100000}
      SCALE_URLS=${SCALE_URLS:-1000000}
      SCALE_EVENTS=${SCALE_EVENTS:-10000000}
      SCALE_DB=${SCALE_DB:-shortener_scale}
      ;;
    small)
      SCALE_USERS=${SCALE_USERS:-1000}
      SCALE_URLS=${SCALE_URLS:-10000}
      SCALE_EVENTS=${SCALE_EVENTS:-100000}
      SCALE_DB=${SCALE_DB:-shortener_scale_small}
      ;;
    *) die "size must be big or small, not '$1'" ;;
  esac
  case $SCALE_DB in
    *[!a-z0-9_]*|'') die "SCALE_DB may contain only a-z, 0-9 and _" ;;
  esac
  SCALE_DB_URL="postgres://$SCALE_PGUSER@$SCALE_PGHOST:$SCALE_PGPORT/$SCALE_DB"
}

# psql on the system server; -X: no ~/.psqlrc.
spsql() { # database psql-args...
  local db=$1
  shift
  psql -X -q -v ON_ERROR_STOP=1 -h "$SCALE_PGHOST" -p "$SCALE_PGPORT" -U "$SCALE_PGUSER" -d "$db" "$@"
}

scale_ensure_tools() {
  command -v psql >/dev/null || apt_ensure postgresql-client
  command -v curl >/dev/null || apt_ensure curl
  [ -x "$SHORTENER_BIN" ] || die "no service binary at $SHORTENER_BIN (set SHORTENER_BIN)"
  spsql postgres -tAc 'SELECT 1' >/dev/null ||
    die "cannot reach PostgreSQL at $SCALE_PGHOST:$SCALE_PGPORT as $SCALE_PGUSER"
}

# What load.sh writes on a database it has filled completely.
scale_marker() { echo "shortener scale data set: users=$SCALE_USERS urls=$SCALE_URLS events=$SCALE_EVENTS"; }

scale_loaded() { # true if $SCALE_DB exists and carries the marker of these sizes
  local comment
  comment=$(spsql postgres -tAc "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$SCALE_DB'")
  [[ $comment == "$(scale_marker)"* ]]
}

# A random key for AUTH_MODE=api-key.
random_key() { head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40; }

SCALE_APP_PID=""
# Starts `shortener serve` on $SCALE_PORT against $SCALE_DB_URL, no Redis,
# with ADMIN_API_KEY=$2 and any extra NAME=value words; waits for /health.
start_service() { # log-file key [NAME=value...]
  local logf=$1 key=$2
  shift 2
  port_free "$SCALE_PORT" || die "port $SCALE_PORT is taken: $(port_owner "$SCALE_PORT") (set SCALE_PORT)"
  env -i PATH="$PATH" LISTEN_ADDR="127.0.0.1:$SCALE_PORT" DATABASE_URL="$SCALE_DB_URL" \
    AUTH_MODE=api-key ADMIN_API_KEY="$key" LOG_FORMAT=json RUST_LOG=info \
    SHUTDOWN_GRACE_SECS=10 "$@" "$SHORTENER_BIN" serve </dev/null >>"$logf" 2>&1 &
  SCALE_APP_PID=$!
  if ! wait_http_ok "http://127.0.0.1:$SCALE_PORT/health" 120; then
    tail -n 20 "$logf" >&2
    stop_service
    die "the service did not become healthy (log: $logf)"
  fi
}

stop_service() {
  if [ -n "$SCALE_APP_PID" ] && alive "$SCALE_APP_PID"; then
    stop_pid "$SCALE_APP_PID" TERM 30 "shortener serve" || true
  fi
  SCALE_APP_PID=""
}
