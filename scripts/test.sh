#!/usr/bin/env bash
# The whole test suite: starts (installing if needed) PostgreSQL, Redis and
# PgBouncer, runs every test of the workspace against them, then the
# operator's end-to-end suite on a local Kubernetes control plane
# (scripts/e2e.sh: built once from the Go module proxy, ~14 min cold; started
# and stopped around the suite), then, as root, its real tier on a real node
# (scripts/e2e.sh --real-node: our release images in real pods, ~14 min warm).
# Ends with one line adding up every result.
#
#   scripts/test.sh                 everything
#   SKIP_E2E=1 scripts/test.sh      without either end-to-end tier
#   SKIP_REAL=1 scripts/test.sh     without the real tier
#   scripts/test.sh ARGS...         only `cargo test --workspace ARGS...`
#                                   (e.g. `-p shortener api`), no end-to-end suite
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/services.sh)"
export TEST_DATABASE_URL TEST_REDIS_URL TEST_PGBOUNCER_URL
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?
if [ "$#" -eq 0 ] && [ -z "${SKIP_E2E:-}" ]; then
  echo "== operator end-to-end suite (scripts/e2e.sh)"
  # Always the control plane scripts/e2e.sh starts and stops itself, never a
  # cluster a stray KUBECONFIG points at.
  env -u KUBECONFIG scripts/e2e.sh 2>&1 | tee -a "$log" || status=$?
  if [ -n "${SKIP_REAL:-}" ]; then
    echo "== real tier skipped (SKIP_REAL)"
  elif [ "$(id -u)" -ne 0 ]; then
    echo "== real tier skipped: it needs root (containers, network, cgroups); run scripts/e2e.sh --real-node as root"
  else
    echo "== operator end-to-end suite, real tier (scripts/e2e.sh --real-node)"
    env -u KUBECONFIG scripts/e2e.sh --real-node 2>&1 | tee -a "$log" || status=$?
  fi
fi
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
