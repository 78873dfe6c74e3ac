#!/usr/bin/env bash
# The floor under our redirect: the service's own HTTP loop (tokio, hyper,
# axum's router, mimalloc) answering every request with a fixed 302 and
# nothing behind it (app/examples/redirect_floor.rs), pinned to core
# $SERVER_CPU with wrk on core $CLIENT_CPU, as nginx-baseline.sh runs nginx.
# The gap between this and nginx is the stack's; the gap between this and
# `redirect.sh single` is the redirect's own work (middleware, cache, click).
#
# Usage: loadtests/wrk/floor.sh
# Environment: FLOOR_BIN (target/release/examples/redirect_floor; built with
# `cargo build --release --example redirect_floor -p shortener`), DURATION
# (15s), WARMUP (3s), CONNECTIONS (100), THREADS (1), BASELINE_PORT (18089),
# SERVER_CPU, CLIENT_CPU.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FLOOR_BIN=${FLOOR_BIN:-$TARGET_DIR/release/examples/redirect_floor}
[ -x "$FLOOR_BIN" ] || die "no binary at $FLOOR_BIN (cargo build --release --example redirect_floor -p shortener)"
fixed_302_prerequisites

scratch_dir floor

taskset -c "$SERVER_CPU" env -i PATH="$PATH" LISTEN_ADDR="127.0.0.1:$BASELINE_PORT" "$FLOOR_BIN" </dev/null >"$work/floor.log" 2>&1 &
pid=$!
fixed_302_answering || { cat "$work/floor.log" >&2; die "the floor does not answer 302"; }

fixed_302_run floor "the service's HTTP loop, fixed 302, on core $SERVER_CPU" "$pid"
