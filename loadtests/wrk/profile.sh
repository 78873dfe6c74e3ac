#!/usr/bin/env bash
# A flame graph of the redirect path: `redirect.sh single` on BACKEND (sqlite
# or stack), with perf sampling the pinned replica (cpu-clock, kernel stacks
# included) for PROFILE_SECS of the measured run, folded and drawn with
# inferno into docs/flamegraphs/redirect-BACKEND.svg (or OUT).
#
# Usage: loadtests/wrk/profile.sh sqlite|stack
#
# Environment: PROFILE_SECS (10), PROFILE_HZ (999), OUT, and what redirect.sh
# takes (DURATION is raised to cover the sampling). The binary needs its
# symbols (the release profile keeps them); stacks are unwound from DWARF.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

backend=${1:-}
case $backend in
  sqlite|stack) ;;
  *) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 2 ;;
esac
PROFILE_SECS=${PROFILE_SECS:-10}
PROFILE_HZ=${PROFILE_HZ:-999}
INFERNO_VERSION=0.12.8
out=${OUT:-$STACK_REPO/docs/flamegraphs/redirect-$backend.svg}
SINGLE_PORT=${SINGLE_PORT:-18088}

command -v perf >/dev/null || apt_ensure linux-perf
tools="${XDG_CACHE_HOME:-$HOME/.cache}/shortener-tools/inferno-$INFERNO_VERSION"
if [ ! -x "$tools/bin/inferno-flamegraph" ]; then
  log "installing inferno $INFERNO_VERSION (flame graphs) into $tools"
  cargo install --quiet --locked --root "$tools" inferno --version "$INFERNO_VERSION" >&2
fi

work=$(mktemp -d /tmp/shortener-profile.XXXXXX)
bench_pid=""
cleanup() {
  [ -n "$bench_pid" ] && kill "$bench_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Long enough for the warm-up, the sampling and a margin.
secs=$((PROFILE_SECS + 10))
DURATION=${secs}s BACKEND=$backend SINGLE_PORT=$SINGLE_PORT "$WRK_HERE/redirect.sh" single >"$work/bench.out" 2>&1 &
bench_pid=$!
for _ in $(seq 1 600); do
  grep -q '^wrk: core' "$work/bench.out" && break
  kill -0 "$bench_pid" 2>/dev/null || { cat "$work/bench.out" >&2; die "redirect.sh single stopped"; }
  sleep 0.2
done
grep -q '^wrk: core' "$work/bench.out" || die "the benchmark did not start"
pid=$(port_owner "$SINGLE_PORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p')
[ -n "$pid" ] || die "no process listens on $SINGLE_PORT"
# Past the warm-up and the first seconds of the measured run.
sleep "$(( ${WARMUP%s} + 2 ))"
perf record -e cpu-clock -F "$PROFILE_HZ" --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" \
  -- sleep "$PROFILE_SECS" >"$work/perf.log" 2>&1 || { cat "$work/perf.log" >&2; die "perf record failed"; }
wait "$bench_pid" || true
bench_pid=""
cat "$work/bench.out"
perf script -i "$work/perf.data" 2>/dev/null | "$tools/bin/inferno-collapse-perf" >"$work/folded"
mkdir -p "$(dirname "$out")" "$RESULTS_DIR"
cp "$work/folded" "$RESULTS_DIR/profile-$backend.folded"
"$tools/bin/inferno-flamegraph" --title "GET /{code} on one core, $backend backend ($(date -u +%F))" \
  --width 1600 --minwidth 2 <"$work/folded" >"$out"
# The heaviest frames by self time, for a note without opening the graph.
echo
echo "top self time (share of samples):"
awk '{ n = $NF; $NF = ""; split($0, f, ";"); leaf = f[length(f)]; self[leaf] += n; total += n }
  END { for (l in self) printf "%6.2f%%  %s\n", 100 * self[l] / total, l }' "$work/folded" |
  sort -rn | awk 'NR <= 15'
echo
echo "flame graph: $out (folded stacks: $RESULTS_DIR/profile-$backend.folded)"
