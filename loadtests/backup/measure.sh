#!/usr/bin/env bash
# Backup and restore of the embedded database at a stated size, with the very scripts the
# operator puts in its backup CronJob and its role-setup Job (taken from `shortener-operator
# render`, the backups' directory moved to a temporary one), against the PostgreSQL of
# scripts/services.sh:
#   1. a database made as the operator makes one (roles.sql, then `shortener migrate` as the
#      owner), filled (as the owner: the runtime role's statement timeout would stop a bulk
#      insert) with USERS users, LINKS links and EVENTS click events;
#   2. the CronJob's script: `pg_dump -Fc`, read back with `pg_restore --list`, renamed;
#   3. the role-setup Job's restore script into a new, empty database;
#   4. every row of users, urls and events compared (digests), sizes and times printed, and
#      written to $RESULTS_DIR/backup-<time>.md.
#
# Usage: loadtests/backup/measure.sh
# Environment: USERS (1000), LINKS (100000), EVENTS (1000000), SHORTENER_BIN and
# OPERATOR_BIN (target/release/...; built when missing), RESULTS_DIR
# (/tmp/shortener-stack/results).
set -euo pipefail
cd "$(dirname "$0")/../.."

USERS=${USERS:-1000}
LINKS=${LINKS:-100000}
EVENTS=${EVENTS:-1000000}
SHORTENER_BIN=${SHORTENER_BIN:-target/release/shortener}
OPERATOR_BIN=${OPERATOR_BIN:-target/release/shortener-operator}
RESULTS_DIR=${RESULTS_DIR:-/tmp/shortener-stack/results}

python3 -c 'import yaml' 2>/dev/null || {
  echo "measure: needs python3 with PyYAML (apt-get install python3-yaml)" >&2
  exit 1
}
command -v bc >/dev/null || { echo "measure: needs bc (apt-get install bc)" >&2; exit 1; }
if [ ! -x "$SHORTENER_BIN" ] || [ ! -x "$OPERATOR_BIN" ]; then
  cargo build --release --locked -p shortener -p shortener-operator
fi
eval "$(scripts/services.sh 2>/dev/null)"
# postgres://USER@HOST:PORT/DB of the test server: libpq's variables for the superuser.
url=${TEST_DATABASE_URL#postgres://}
export PGUSER=${url%%@*}
hostport=${url#*@}
hostport=${hostport%%/*}
export PGHOST=${hostport%%:*} PGPORT=${hostport##*:}
for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/pg_dump" ] && PATH=$dir:$PATH; done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/backups" "$RESULTS_DIR"

# The two scripts and the role settings, as the operator renders them.
cat >"$work/shortener.yaml" <<'EOF'
apiVersion: shortener.dev/v1alpha1
kind: Shortener
metadata: { name: links, namespace: default }
spec:
  database:
    postgres:
      backup: { schedule: "@daily" }
      restore: { backup: latest }
EOF
"$OPERATOR_BIN" render --file "$work/shortener.yaml" >"$work/rendered.yaml"
python3 - "$work" <<'EOF'
import sys, yaml
work = sys.argv[1]
for doc in yaml.safe_load_all(open(f"{work}/rendered.yaml")):
    if not doc:
        continue
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind == "CronJob":
        pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        out = "backup.sh"
    elif kind == "Job" and name.startswith("links-postgres-roles-"):
        pod = doc["spec"]["template"]["spec"]
        out = "restore.sh"
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        open(f"{work}/roles.sql", "w").write(env["ROLES_SQL"])
        open(f"{work}/pgoptions", "w").write(env["PGOPTIONS"])
    else:
        continue
    script = pod["containers"][0]["command"][2].replace("/backups", f"{work}/backups")
    open(f"{work}/{out}", "w").write(script)
EOF
for f in backup.sh restore.sh roles.sql pgoptions; do
  [ -s "$work/$f" ] || { echo "measure: nothing rendered for $f" >&2; exit 1; }
done
owner_password=owner-$RANDOM$RANDOM app_password=app-$RANDOM$RANDOM
pgoptions=$(sed -e "s/\$(OWNER_PASSWORD)/$owner_password/" -e "s/\$(APP_PASSWORD)/$app_password/" "$work/pgoptions")

src=backup_measure_src dst=backup_measure_dst
for db in $src $dst; do
  psql -Xq -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
done
PGOPTIONS=$pgoptions psql -Xq -1 -v ON_ERROR_STOP=1 -d $src -f "$work/roles.sql"
DATABASE_URL="postgres://shortener_owner:$owner_password@$PGHOST:$PGPORT/$src" "$SHORTENER_BIN" migrate >/dev/null

echo "== filling: $USERS users, $LINKS links, $EVENTS events"
started=$SECONDS
PGUSER=shortener_owner PGPASSWORD=$owner_password psql -Xq -v ON_ERROR_STOP=1 -d $src <<EOF
INSERT INTO users (username, email, created_at)
  SELECT 'user' || g, 'user' || g || '@example.com', now() FROM generate_series(1, $USERS) g;
INSERT INTO urls (user_id, short_code, original_url, title, created_at, updated_at)
  SELECT (g % $USERS) + 1, 'code' || g, 'https://example.com/articles/' || g || '?utm_source=newsletter',
         'Article ' || g, now(), now()
  FROM generate_series(1, $LINKS) g;
INSERT INTO events (url_id, user_id, event_type, timestamp, details)
  SELECT (g % $LINKS) + 1, NULL, 'redirect', now() - (g || ' seconds')::interval,
         jsonb_build_object('short_code', 'code' || ((g % $LINKS) + 1))
  FROM generate_series(1, $EVENTS) g;
EOF
fill=$((SECONDS - started))
size=$(psql -XAtq -d postgres -c "SELECT pg_database_size('$src')")

echo "== the CronJob's backup script"
started=$(date +%s.%N)
PGDATABASE=$src KEEP=7 sh "$work/backup.sh"
backup_s=$(echo "$(date +%s.%N) - $started" | bc)
dump=$(ls "$work/backups"/*.dump)
dump_bytes=$(wc -c <"$dump")

echo "== the role-setup Job's restore script, into an empty database"
started=$(date +%s.%N)
PGDATABASE=$dst RESTORE_BACKUP=latest ROLES_SQL="$(cat "$work/roles.sql")" PGOPTIONS=$pgoptions \
  sh "$work/restore.sh"
restore_s=$(echo "$(date +%s.%N) - $started" | bc)

digest() { # database table
  psql -XAtq -d "$1" -c "SELECT count(*) || ' ' || md5(string_agg(t::text, E'\n' ORDER BY t::text)) FROM public.$2 t"
}
for table in users urls events; do
  a=$(digest $src $table) b=$(digest $dst $table)
  [ "$a" = "$b" ] || { echo "measure: $table differs after the restore: $a vs $b" >&2; exit 1; }
  echo "   $table: $a (equal)"
done
PGUSER=shortener_app PGPASSWORD=$app_password psql -XAtq -v ON_ERROR_STOP=1 -d $dst \
  -c "INSERT INTO events (url_id, event_type, timestamp) VALUES (1, 'redirect', now())" >/dev/null
DATABASE_URL="postgres://shortener_owner:$owner_password@$PGHOST:$PGPORT/$dst" "$SHORTENER_BIN" migrate

report=$RESULTS_DIR/backup-$(date -u +%Y%m%dT%H%M%SZ).md
{
  echo "| database | dump (\`pg_dump -Fc\`) | backup script | restore script (one transaction) |"
  echo "|---|---|---|---|"
  printf '| %s users, %s links, %s events: %.0f MB | %.1f MB | %.1f s | %.1f s |\n' \
    "$USERS" "$LINKS" "$EVENTS" "$(echo "$size / 1000000" | bc -l)" \
    "$(echo "$dump_bytes / 1000000" | bc -l)" "$backup_s" "$restore_s"
  echo
  echo "PostgreSQL $(psql -XAtq -d postgres -c 'SHOW server_version'), $(nproc) CPUs; filled in ${fill}s."
} | tee "$report"
for db in $src $dst; do psql -Xq -d postgres -c "DROP DATABASE $db"; done
