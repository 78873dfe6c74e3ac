#!/usr/bin/env bash
# Checks the running service against its own OpenAPI document.
#
# Builds and starts the real `shortener` binary (embedded SQLite in a
# temporary directory, AUTH_MODE=api-key with a fresh admin key) on a free
# loopback port, validates /openapi.json with openapi-spec-validator, seeds a
# few users, URLs and events, then runs schemathesis with every check over
# every operation: examples, coverage, fuzzing and stateful phases, a bounded
# number of cases and a fixed seed, so a run is repeatable and takes about a
# minute. Fails on any failure, and when an operation was not tested.
#
# The tools live in a virtualenv cached under ~/.cache/shortener, made once.
#
#   scripts/schemathesis.sh                       the CI run
#   EXAMPLES=200 SEED=7 scripts/schemathesis.sh   a longer or different run
#   SHORTENER_BIN=path scripts/schemathesis.sh    that binary instead of a
#                                                 fresh debug build (A/B runs)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.9.0
EXAMPLES=${EXAMPLES:-25}
SEED=${SEED:-20261122}

venv="${XDG_CACHE_HOME:-$HOME/.cache}/shortener/api-check-${SCHEMATHESIS_VERSION}-${VALIDATOR_VERSION}"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "== creating $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION"
fi

if [ -n "${SHORTENER_BIN:-}" ]; then
  bin=$(realpath "$SHORTENER_BIN")
  echo "== using $bin"
else
  echo "== building the service"
  cargo build --quiet --locked -p shortener --bin shortener
  bin="$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/shortener"
fi

rm -rf target/schemathesis
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(24))')
base="http://127.0.0.1:$port"
(
  cd "$work"
  exec env -u DATABASE_URL -u REDIS_URL -u RUST_LOG -u OTEL_EXPORTER_OTLP_ENDPOINT \
    -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT \
    LISTEN_ADDR="127.0.0.1:$port" DATA_DIR="$work/data" AUTH_MODE=api-key \
    ADMIN_API_KEY="$key" RATE_LIMIT_PER_MINUTE=0 CREATE_RATE_LIMIT_PER_MINUTE=0 \
    REDIRECT_MISS_LIMIT_PER_MINUTE=0 LOG_FORMAT=text ACCESS_LOG=errors \
    "$bin" serve
) >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/livez" >/dev/null 2>&1 && break
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/server.log"; exit 1; fi
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null

echo "== validating the document (openapi-spec-validator $VALIDATOR_VERSION)"
curl -fsS "$base/openapi.json" -o "$work/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

echo "== seeding users, URLs and events"
api() {
  curl -fsS -X "$1" "$base$2" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' ${3:+-d "$3"} -o /dev/null
}
for i in 1 2 3; do
  api POST /users "{\"username\":\"seed $i\",\"email\":\"seed$i@example.com\"}"
  api POST /urls "{\"original_url\":\"https://example.com/$i\",\"title\":\"seed $i\",\"user_id\":$i}"
  api POST /events "{\"url_id\":$i,\"user_id\":$i,\"event_type\":\"seeded\",\"details\":{\"n\":$i}}"
done
api POST /shorten '{"url":"https://example.org/quick","short_code":"seeded"}'
curl -fsS "$base/seeded" -o /dev/null -w '%{http_code}\n' | grep -qx 302

echo "== schemathesis $SCHEMATHESIS_VERSION: every check, $EXAMPLES cases per operation, seed $SEED"
status=0
(
  cd "$work"
  PYTHONPATH="$OLDPWD/scripts" SCHEMATHESIS_HOOKS=schemathesis_hooks \
    "$venv/bin/schemathesis" --config-file "$OLDPWD/scripts/schemathesis.toml" run "$base/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks all --exclude-checks use_after_free \
    --max-examples "$EXAMPLES" --seed "$SEED" \
    --generation-database none --workers 1 --no-color \
    --report junit --report-dir "$work/report"
) 2>&1 | tee "$work/schemathesis.out" || status=$?

# Every operation must have been tested: none left out for a parameter it
# could not fill, or a schema it could not read.
selected=$(sed -n 's/^ *Selected: \([0-9]*\)\/\([0-9]*\).*/\1 \2/p' "$work/schemathesis.out")
tested=$(sed -n 's/^ *Tested: \([0-9]*\).*/\1/p' "$work/schemathesis.out")
read -r chosen total <<<"${selected:-0 -1}"
if [ "$chosen" != "$total" ] || [ "${tested:-0}" != "$total" ]; then
  echo "schemathesis tested ${tested:-0} of $total operations (selected $chosen)" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "== server log (last 50 lines)"
  tail -n 50 "$work/server.log"
  mkdir -p target/schemathesis
  cp -r "$work/report" "$work/schemathesis.out" "$work/openapi.json" target/schemathesis/ 2>/dev/null || true
  echo "schemathesis: failed (report in target/schemathesis/)" >&2
  exit "$status"
fi
echo "schemathesis: all $total operations tested, no failures"
