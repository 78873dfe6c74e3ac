#!/usr/bin/env bash
# The redirect against the machine's limit, in one run: nginx answering a
# fixed `return 302` (nginx-baseline.sh), the service's HTTP loop answering a
# fixed 302 with nothing behind it (floor.sh, when its example is built), then
# the service on the embedded
# database, then on PostgreSQL + Redis (the running stack's PgBouncer, Redis),
# each server pinned to core $SERVER_CPU and wrk to core $CLIENT_CPU, in
# alternating rounds so that a drift of the machine hits every row alike.
# Only ratios taken within one run mean anything on a shared VM.
#
# Usage: loadtests/wrk/limit.sh
#
# Environment: ROUNDS (3), CONNECTIONS (64), DURATION (15s), WARMUP (3s),
# BACKENDS ("sqlite stack" when the stack is up, else "sqlite"; start it with
# loadtests/stack/up.sh --no-monitoring), BINARIES (an A/B in the same run:
# "name=path ..." measured in turn in every round; default
# "shortener=$SHORTENER_BIN", target/release/shortener), FLOOR_BIN, and what
# nginx-baseline.sh, floor.sh and redirect.sh take.
#
# Prints each run's requests/s, p99 and the server's RSS after the run, then a
# table of medians with each backend's ratio to nginx's median of the same run;
# the table is also written to $RESULTS_DIR/limit-<time>.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
# Every run creates its codes (CODES, 100) with the stack's one key, whose creation limit is
# shared through Redis: room for all of them. Creation is not on the redirect path.
export CREATE_RATE_LIMIT_PER_MINUTE=${CREATE_RATE_LIMIT_PER_MINUTE:-100000}
export CREATE_RATE_LIMIT_BURST=${CREATE_RATE_LIMIT_BURST:-10000}
export CONNECTIONS=${CONNECTIONS:-64} DURATION WARMUP SERVER_CPU CLIENT_CPU
BINARIES=${BINARIES:-shortener=$SHORTENER_BIN}
for named in $BINARIES; do
  [ -x "${named#*=}" ] || die "no binary at ${named#*=} (cargo build --release -p shortener)"
done
FLOOR_BIN=${FLOOR_BIN:-$TARGET_DIR/release/examples/redirect_floor}
export FLOOR_BIN
floor=yes
if [ ! -x "$FLOOR_BIN" ]; then
  floor=""
  log "no floor at $FLOOR_BIN: its row left out (cargo build --release --example redirect_floor -p shortener)"
fi
if [ -z "${BACKENDS:-}" ]; then
  BACKENDS=sqlite
  if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG &&
      psql "$PGB_URL" -tAc 'select 1' >/dev/null 2>&1; then
    BACKENDS="sqlite stack"
  else
    log "the stack is not up: PostgreSQL + Redis left out (loadtests/stack/up.sh --no-monitoring)"
  fi
fi
work=$(mktemp -d /tmp/shortener-limit.XXXXXX)
trap 'rm -rf "$work"' EXIT
: >"$work/runs.tsv"

# One run: the script's output, then "name rps p99 rss_kib p50" appended to runs.tsv.
measure() { # name command...
  local name=$1 out
  shift
  out="$work/${name//\//-}.out"
  "$@" >"$out" 2>&1 || { tail -n 30 "$out" >&2; die "$name failed"; }
  awk -v n="$name" '
    /^requests\/s:/            { rps = $2 }
    /^latency p50\/p75\/p90\/p99:/ { p50 = $3; p99 = $NF }
    /memory: *VmRSS/           { for (i = 1; i <= NF; i++) if ($i == "VmRSS") rss = $(i + 3) }
    END { gsub(/[()]/, "", rss); printf "%s\t%s\t%s\t%s\t%s\n", n, rps, p99, rss, p50 }
  ' "$out" | tee -a "$work/runs.tsv"
}

load_note
echo "rounds: $ROUNDS; $CONNECTIONS connections, $DURATION each after $WARMUP; server on core $SERVER_CPU, wrk on core $CLIENT_CPU"
for named in $BINARIES; do
  echo "binary ${named%%=*}: ${named#*=} ($(stat -c %y "${named#*=}" | cut -d. -f1))"
done
printf 'name\trequests/s\tp99\tRSS kB\tp50\n'
for round in $(seq 1 "$ROUNDS"); do
  measure nginx "$WRK_HERE/nginx-baseline.sh"
  [ -z "$floor" ] || measure floor "$WRK_HERE/floor.sh"
  for backend in $BACKENDS; do
    for named in $BINARIES; do
      measure "${named%%=*}/$backend" env SHORTENER_BIN="${named#*=}" BACKEND="$backend" "$WRK_HERE/redirect.sh" single
    done
  done
  [ "$round" = "$ROUNDS" ] || sleep 2
done

# Medians per name; p99 normalised to milliseconds.
table=$(awk -F'\t' '
  function ms(v) {
    if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
    if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
    if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
    return v + 0
  }
  function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { if (!($1 in rps)) order[++names] = $1
    rps[$1] = rps[$1] " " $2; p99[$1] = p99[$1] " " ms($3); rss[$1] = rss[$1] " " ($4 == "" ? 0 : $4); p50[$1] = p50[$1] " " ms($5) }
  END {
    base = median(rps["nginx"])
    print "| server (one core) | requests/s (median) | × nginx | p50 ms | p99 ms | RSS MiB after | runs (requests/s) |"
    print "|---|---|---|---|---|---|---|"
    for (i = 1; i <= names; i++) {
      n = order[i]
      label = n
      if (n == "nginx") label = "nginx `return 302`"
      else if (n == "floor") label = "floor: our HTTP loop, a fixed 302"
      else if (n ~ /\/sqlite$/) label = substr(n, 1, length(n) - 7) ", embedded SQLite"
      else if (n ~ /\/stack$/) label = substr(n, 1, length(n) - 6) ", PgBouncer + PostgreSQL, Redis"
      printf "| %s | %.0f | %.2f | %.2f | %.2f | %.0f | %s |\n", label, median(rps[n]), median(rps[n]) / base, median(p50[n]), median(p99[n]), median(rss[n]) / 1024, substr(rps[n], 2)
    }
  }' "$work/runs.tsv")
echo
echo "$table"
mkdir -p "$RESULTS_DIR"
report="$RESULTS_DIR/limit-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "$(date -u +%FT%TZ), $(nproc) cores, $ROUNDS rounds, $CONNECTIONS connections, $DURATION per run"
  echo
  echo "$table"
} >"$report"
echo
echo "written to $report"
