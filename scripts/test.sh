#!/usr/bin/env bash
# The whole test suite: starts (installing if needed) PostgreSQL, Redis and
# PgBouncer, then runs every test of the workspace against them. Extra arguments go to
# `cargo test` (e.g. `scripts/test.sh -p shortener api`). Ends with one line
# adding up every test binary's result.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/services.sh)"
export TEST_DATABASE_URL TEST_REDIS_URL TEST_PGBOUNCER_URL
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
