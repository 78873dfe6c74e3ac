#!/bin/sh
# Entrypoint of the PostgreSQL image scripts/images.sh builds from Debian's packages: the
# part of the official postgres image's interface the operator relies on.
#   POSTGRES_PASSWORD (required), POSTGRES_USER (default postgres), POSTGRES_DB (default
#   POSTGRES_USER), PGDATA, POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD (default
#   scram-sha-256): on an empty PGDATA, initdb as the running user, the password set, the
#   database created; then `postgres` listens on every address.
# Any other command (`sh -c ...` of the role-setup Job) runs as it is.
set -eu

if [ "${1:-postgres}" != postgres ] && [ "${1#-}" = "${1:-}" ]; then
  exec "$@"
fi
[ "${1:-}" = postgres ] && shift

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
  echo "postgres-entrypoint: refusing to run as root; run as the postgres user (uid 999)" >&2
  exit 1
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    echo "postgres-entrypoint: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  echo "postgres-entrypoint: initializing $PGDATA" >&2
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of arguments
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host="$POSTGRES_HOST_AUTH_METHOD" ${POSTGRES_INITDB_ARGS:-} >&2
  rm -f "$pwfile"
  # Network logins with a password from anywhere (the pod network); local socket trusted,
  # as in the official image.
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

  # A private server on the Unix socket only, to create the database.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >&2
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -X -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname=postgres \
      --set db="$POSTGRES_DB" <<'EOF' >&2
CREATE DATABASE :"db";
EOF
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >&2
  echo "postgres-entrypoint: initialized; starting" >&2
fi

exec postgres "$@"
