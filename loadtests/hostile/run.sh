#!/usr/bin/env bash
# Hostile input, before and after: the same requests against an old and a new
# release binary, each measurement on a fresh process (embedded SQLite in a new
# temporary DATA_DIR, AUTH_MODE=api-key, a generated ADMIN_API_KEY, a free
# loopback port, the measurement's own environment), one table old vs new.
#
#   OLD_BIN=/tmp/shortener-old NEW_BIN=target/release/shortener loadtests/hostile/run.sh
#
# Environment:
#   OLD_BIN, NEW_BIN   release binaries (required)
#   OLD_LABEL, NEW_LABEL  column headings (default: old, new)
#   OLDER_BIN, OLDER_LABEL  an optional third, earlier binary (first column)
#   REPORT             where the table is written (default target/hostile-report.md)
#   ONLY               measurement ids to run, e.g. ONLY=1,3 (default: all)
#   SKIP_SCHEMATHESIS=1  leave measurement 5 out (it takes about a minute per
#                      binary and needs scripts/schemathesis.sh's virtualenv)
#
# Measurements (docs/benchmarks.md, "Hostile input, before and after"):
#   1   management rate limit (10/min, burst 5): 40 admin-key requests; 1b the
#       same with forged X-Forwarded-For/X-Real-IP; 1c forged, without a key
#   2   300 made-up HTTP methods, then distinct `method` labels in /metrics
#   3   five hostile targets for POST /urls
#   4   memory after 3,000 redirects of random 4 KB paths; 4b of random 7-char codes
#   5   scripts/schemathesis.sh against the binary (SHORTENER_BIN)
#   6   150 random bearer keys from 127.0.0.1; 6b a team key from 127.0.0.2
#       meanwhile; 6c the admin key from the guessing address meanwhile
# A binary without a feature gets "n/a" in that cell. Needs bash, Python 3
# (standard library only; hostile.py does the measuring) and Linux (/proc,
# 127.0.0.2 on loopback); measurement 5 needs scripts/schemathesis.sh's
# virtualenv (made by its first run).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

: "${OLD_BIN:?OLD_BIN: path of the old release binary}"
: "${NEW_BIN:?NEW_BIN: path of the new release binary}"
report=${REPORT:-$root/target/hostile-report.md}

args=()
if [ -n "${OLDER_BIN:-}" ]; then args+=(--bin "${OLDER_LABEL:-older}=$OLDER_BIN"); fi
args+=(--bin "${OLD_LABEL:-old}=$OLD_BIN" --bin "${NEW_LABEL:-new}=$NEW_BIN")
if [ "${SKIP_SCHEMATHESIS:-0}" != 1 ]; then args+=(--schemathesis "$root/scripts/schemathesis.sh"); fi
if [ -n "${ONLY:-}" ]; then args+=(--only "$ONLY"); fi

echo "== $(date -u '+%Y-%m-%d %H:%M:%S') UTC, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 "$here/hostile.py" --report "$report" "${args[@]}"
echo "== $(date -u '+%Y-%m-%d %H:%M:%S') UTC, load average $(cut -d' ' -f1-3 /proc/loadavg); table in $report" >&2
