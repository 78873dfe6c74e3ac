#!/usr/bin/env bash
# The whole test suite: starts (installing if needed) PostgreSQL, Redis and
# PgBouncer, then runs every test of the workspace against them. Extra arguments go to
# `cargo test` (e.g. `scripts/test.sh -p shortener api`).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/services.sh)"
export TEST_DATABASE_URL TEST_REDIS_URL TEST_PGBOUNCER_URL
cargo test --workspace --locked "$@"
