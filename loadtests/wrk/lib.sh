# shellcheck shell=bash disable=SC2034
# Functions shared by the wrk scripts; sourced, not run.
WRK_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$WRK_HERE/../stack/lib.sh"

DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$STACK_DIR/results}
# Where nginx-baseline.sh and floor.sh serve their fixed 302.
BASELINE_PORT=${BASELINE_PORT:-18089}

ensure_wrk() {
  command -v wrk >/dev/null || apt_ensure wrk
  command -v taskset >/dev/null || apt_ensure util-linux
  command -v curl >/dev/null || apt_ensure curl
}

# What a script running its own replica on an SQLite file it fills with sqlite3 needs
# first: the binary, sqlite3, and its port ($1, named by the variable $2) free.
sqlite_tool_prerequisites() { # port variable
  [ -x "$SHORTENER_BIN" ] || die "no binary at $SHORTENER_BIN (cargo build --release -p shortener)"
  command -v sqlite3 >/dev/null || apt_ensure sqlite3
  port_free "$1" || die "port $1 is taken: $(port_owner "$1") (set $2)"
}

# The same, and wrk.
sqlite_replica_prerequisites() { # port variable
  sqlite_tool_prerequisites "$1" "$2"
  ensure_wrk
}

# A scratch directory, $work, removed at exit after the script's server ($pid, when set)
# is stopped.
scratch_dir() { # name
  work=$(mktemp -d "/tmp/shortener-$1.XXXXXX")
  pid=""
  trap 'stop_server; rm -rf "$work"' EXIT
}

stop_server() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; fi
  pid=""
}


# Prints the essentials of a wrk report (file $1) as "key: value" lines.
wrk_summary() {
  awk '
    /requests in/            { total = $1; took = $4; sub(/,$/, "", took) }
    /Requests\/sec:/         { rps = $2 }
    /Non-2xx or 3xx/         { non = $NF }
    /Socket errors:/         { sock = $0; sub(/^ *Socket errors: */, "", sock) }
    /Latency Distribution/   { dist = 1; next }
    dist && /%/              { p[$1] = $2; next }
    dist                     { dist = 0 }
    END {
      printf "requests/s:          %s\n", rps
      printf "requests:            %s in %s\n", total, took
      printf "latency p50/p75/p90/p99: %s / %s / %s / %s\n", p["50%"], p["75%"], p["90%"], p["99%"]
      printf "non-2xx/3xx:         %s\n", (non == "" ? 0 : non)
      printf "socket errors:       %s\n", (sock == "" ? "none" : sock)
    }' "$1"
}

# One tab-separated line per run, for comparing runs later.
record_result() { # name report-file extra
  mkdir -p "$RESULTS_DIR"
  local rps non p50 p99
  rps=$(awk '/Requests\/sec:/{print $2}' "$2")
  non=$(awk '/Non-2xx or 3xx/{print $NF}' "$2")
  p50=$(awk '/Latency Distribution/{d=1;next} d&&$1=="50%"{print $2}' "$2")
  p99=$(awk '/Latency Distribution/{d=1;next} d&&$1=="99%"{print $2}' "$2")
  printf '%s\t%s\trps=%s\tp50=%s\tp99=%s\tnon2xx3xx=%s\t%s\n' \
    "$(date -u +%FT%TZ)" "$1" "$rps" "$p50" "$p99" "${non:-0}" "$3" >>"$RESULTS_DIR/wrk.tsv"
}

# A metric's value from a /metrics page, summed over its label sets.
metric_sum() { # url metric [label-filter]
  curl -s -m 5 "$1/metrics" | awk -v m="$2" -v f="${3:-}" '
    $1 ~ "^" m "({|$)" && index($1, f) { s += $2; seen = 1 }
    END { if (seen) print s; else print "n/a" }'
}

# What a server answering a fixed 302 on $BASELINE_PORT (nginx-baseline.sh, floor.sh) is
# measured with: wrk, enough file descriptors, and its port free.
fixed_302_prerequisites() {
  ensure_wrk
  raise_nofile
  port_free "$BASELINE_PORT" ||
    die "port $BASELINE_PORT is taken: $(port_owner "$BASELINE_PORT") (set BASELINE_PORT)"
}

# Whether that server answers 302 within 5 s.
fixed_302_answering() {
  local url="http://127.0.0.1:$BASELINE_PORT/x"
  for _ in $(seq 1 50); do [ "$(http_status "$url")" = 302 ] && return 0; sleep 0.1; done
  [ "$(http_status "$url")" = 302 ]
}

# wrk against that server ($CONNECTIONS connections, 100; $THREADS threads, 1): a warm-up,
# then the measured run, its summary, the server's memory (process $3) and the CPU of the
# run; scratch files go to the caller's $work.
# shellcheck disable=SC2154
fixed_302_run() { # result-name title server-pid
  local name=$1 title=$2 server=$3 port=$BASELINE_PORT conns=${CONNECTIONS:-100} threads=${THREADS:-1} t0 t1
  load_note
  echo "$title; wrk: core $CLIENT_CPU, $threads thread(s), $conns connections, $DURATION after a $WARMUP warm-up"
  if [ "$WARMUP" != 0 ]; then
    taskset -c "$CLIENT_CPU" wrk -t"$threads" -c"$conns" -d"$WARMUP" "http://127.0.0.1:$port/abc123" >/dev/null
  fi
  cpu_snapshot >"$work/cpu.before"
  t0=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  { time taskset -c "$CLIENT_CPU" wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout 5s --latency \
      "http://127.0.0.1:$port/abc123" >"$work/wrk.out" 2>&1; } 2>"$work/wrk.time" || true
  t1=$(date +%s.%N)
  cat "$work/wrk.out"
  cpu_snapshot >"$work/cpu.after"
  # wrk has exited by now: its CPU time comes from the shell's `time`.
  awk '{ printf "wrk %.2f\n", $1 + $2 }' "$work/wrk.time" >>"$work/cpu.after"
  echo
  echo "== $title =="
  wrk_summary "$work/wrk.out"
  [ -n "$server" ] && printf 'server memory: %s\n' "$(mem_of "$server")"
  echo "CPU during the measured run:"
  cpu_report "$work/cpu.before" "$work/cpu.after" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" |
    tee "$work/cpu.report"
  record_result "$name" "$work/wrk.out" \
    "c=$conns t=$threads other=$(awk '/\(other\)/ { print $4 }' "$work/cpu.report")"
}
