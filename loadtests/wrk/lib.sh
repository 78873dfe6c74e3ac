# Helpers shared by the wrk scripts; sourced, not run.
WRK_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$WRK_HERE/../stack/lib.sh"

DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RESULTS_DIR=${RESULTS_DIR:-$STACK_DIR/results}

ensure_wrk() {
  command -v wrk >/dev/null || apt_ensure wrk
  command -v taskset >/dev/null || apt_ensure util-linux
  command -v curl >/dev/null || apt_ensure curl
}

load_note() {
  printf 'load average before the run: %s (%s cores)\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)"
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

# CPU seconds used so far by each kind of process (user + system), as
# "name seconds" lines, and the machine's busy time from /proc/stat ("_busy").
# Counted: the service processes whose pids are given, the stack's PostgreSQL
# (its postmaster and children), and every pgbouncer, nginx, redis-server, wrk
# and k6. Anything else (another PostgreSQL, a compile) falls under "(other)".
cpu_snapshot() { # service-pid...
  local tck pg=0
  tck=$(getconf CLK_TCK)
  [ -f "$STACK_DIR/pg/postmaster.pid" ] && pg=$(head -n1 "$STACK_DIR/pg/postmaster.pid")
  awk -v tck="$tck" '/^cpu / { printf "_busy %.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / tck; exit }' /proc/stat
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v tck="$tck" -v pg="$pg" -v apps=" $* " '
    {
      # The command name is in parentheses and may contain spaces.
      open = index($0, "("); close_ = index($0, ")")
      pid = substr($0, 1, open - 2)
      comm = substr($0, open + 1, close_ - open - 1)
      split(substr($0, close_ + 2), f, " ")
      t = (f[12] + f[13]) / tck            # utime, stime; f[2] is the parent pid
      if (index(apps, " " pid " ")) comm = "shortener"
      else if (comm == "postgres") { if (pid != pg && f[2] != pg) next }
      else if (comm !~ /^(pgbouncer|nginx|redis-server|wrk|k6)$/) next
      cpu[comm] += t
    }
    END { for (c in cpu) printf "%s %.2f\n", c, cpu[c] }'
}

# Where the CPU went between two snapshots taken WALL seconds apart: seconds
# per kind of process and their share of the machine, then everything else
# (other work on the machine, and processes that ended in between).
cpu_report() { # before-file after-file wall-seconds
  awk -v wall="$3" -v cores="$(nproc)" '
    NR == FNR { b[$1] = $2; next }
    { d[$1] = $2 - b[$1] }
    END {
      cap = wall * cores
      for (c in d) if (c != "_busy" && d[c] > 0.05) {
        printf "  %-12s %7.2f s  %3.0f%%\n", c, d[c], 100 * d[c] / cap; known += d[c]
      }
      other = d["_busy"] - known; if (other < 0) other = 0
      printf "  %-12s %7.2f s  %3.0f%%\n", "(other)", other, 100 * other / cap
      printf "  %-12s %7.2f s  %3.0f%%   of %d cores x %.0f s\n", "machine busy", d["_busy"], 100 * d["_busy"] / cap, cores, wall
    }' "$1" "$2"
}
