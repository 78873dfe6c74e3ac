# shellcheck shell=bash disable=SC2034
# Shared settings and functions for the local production-like stack.
# Sourced by up.sh, down.sh, status.sh and the wrk/k6 wrappers; not run alone.
#
# Every port and path can be overridden from the environment. Only 127.0.0.1
# is ever used.

STACK_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${STACK_DIR:-/tmp/shortener-stack}
STACK_CACHE=${STACK_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/shortener-stack}

PG_PORT=${PG_PORT:-56432}
PGB_PORT=${PGB_PORT:-56433}
# 56379 is where scripts/services.sh starts the test suite's Redis; stay off it.
REDIS_PORT=${REDIS_PORT:-56380}
NGINX_PORT=${NGINX_PORT:-18080}
APP_PORTS=${APP_PORTS:-"18081 18082 18083"}

# Sizing: see "Sizing" in loadtests/README.md. The values mirror what the
# operator deploys on a 1 vCPU / 1 GiB node.
APP_POOL_SIZE=${APP_POOL_SIZE:-10}          # DATABASE_POOL_SIZE per replica
PGB_POOL_SIZE=${PGB_POOL_SIZE:-20}          # PgBouncer default_pool_size
PGB_MAX_CLIENTS=${PGB_MAX_CLIENTS:-200}     # PgBouncer max_client_conn
PG_SHARED_BUFFERS=${PG_SHARED_BUFFERS:-128MB}
PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-100}
REDIS_MAXMEMORY=${REDIS_MAXMEMORY:-48mb}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
NGINX_WORKER_CONNECTIONS=${NGINX_WORKER_CONNECTIONS:-4096}

# Monitoring (see "Monitoring" in loadtests/README.md): Prometheus, Alertmanager, the
# exporters and the webhook sink, all on loopback and away from the ports the Debian
# packages' own services use (9090, 9093, 9187, 9121, 9127). The sink stays on 9099, the
# address monitoring/alertmanager.yml names. STACK_MONITORING=0 (or up.sh --no-monitoring)
# leaves all of it out.
STACK_MONITORING=${STACK_MONITORING:-1}
PROM_PORT=${PROM_PORT:-19090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-19093}
PG_EXPORTER_PORT=${PG_EXPORTER_PORT:-19187}
PGB_EXPORTER_PORT=${PGB_EXPORTER_PORT:-19127}
REDIS_EXPORTER_PORT=${REDIS_EXPORTER_PORT:-19121}
ALERT_SINK_PORT=${ALERT_SINK_PORT:-9099}
PROM_URL="http://127.0.0.1:$PROM_PORT"
ALERTMANAGER_URL="http://127.0.0.1:$ALERTMANAGER_PORT"
ALERTS_LOG="$STACK_DIR/log/alerts.jsonl"
PGB_EXPORTER_BIN="$STACK_CACHE/pgbouncer-exporter/bin/pgbouncer-exporter"

# The release binary: SHORTENER_BIN, else the cargo target dir's.
TARGET_DIR=${CARGO_TARGET_DIR:-$STACK_REPO/target}
SHORTENER_BIN=${SHORTENER_BIN:-$TARGET_DIR/release/shortener}

# STACK_DB_NAME: another database on the same servers (PgBouncer maps only it),
# e.g. an empty one for an A/B against a binary that predates a migration.
DB_NAME=${STACK_DB_NAME:-shortener}
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
PGB_URL="postgres://postgres@127.0.0.1:$PGB_PORT/$DB_NAME"
REDIS_URL_STACK="redis://127.0.0.1:$REDIS_PORT"
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
KEY_FILE="$STACK_DIR/admin-api-key"
PGBOUNCER_BIN="$STACK_CACHE/pgbouncer/bin/pgbouncer"

# Service settings handed on to the replicas (stack and `redirect.sh single`)
# when set in the caller's environment; nothing else from it reaches them.
# APP_EXTRA_ENV="NAME=value NAME2=value" adds any other.
APP_PASSTHROUGH=(
  CACHE_TTL_SECONDS NEGATIVE_CACHE_TTL_SECONDS LOCAL_CACHE_TTL_SECONDS
  CACHE_CAPACITY CACHE_WARM_ENTRIES REDIS_KEY_PREFIX REDIS_TIMEOUT_MS
  CLICK_BATCH_MAX CLICK_QUEUE_CAPACITY CLICK_SPILL_CAPACITY
  RATE_LIMIT_PER_MINUTE RATE_LIMIT_BURST ACCESS_LOG
  CREATE_RATE_LIMIT_PER_MINUTE CREATE_RATE_LIMIT_BURST
  REDIRECT_MISS_LIMIT_PER_MINUTE REDIRECT_MISS_BURST CACHE_MAX_BYTES
)

# Appends NAME=value for every set APP_PASSTHROUGH variable, and the words of
# APP_EXTRA_ENV, to the array named $1.
add_passthrough_env() {
  local -n into=$1
  local v
  for v in "${APP_PASSTHROUGH[@]}"; do
    if [ -n "${!v:-}" ]; then into+=("$v=${!v}"); fi
  done
  if [ -n "${APP_EXTRA_ENV:-}" ]; then
    # shellcheck disable=SC2206 # words on purpose: NAME=value pairs
    into+=($APP_EXTRA_ENV)
  fi
}

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root (PostgreSQL and PgBouncer are started as user postgres with runuser)"
}

# apt-get install, only for the packages that are missing.
apt_ensure() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  local opts=(-y -qq)
  [ -z "${APT_NO_RECOMMENDS:-}" ] || opts+=(--no-install-recommends)
  DEBIAN_FRONTEND=noninteractive apt-get install "${opts[@]}" "${missing[@]}" >&2
}

# apt_ensure for packages that come with a service (Prometheus, Alertmanager, the
# exporters): Debian starts those on install; a policy-rc.d that refuses keeps them from
# starting, so the packaged instances never hold a port or scrape anything. The stack runs
# its own instances with its own configs.
apt_ensure_no_start() {
  local created=0 rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created=1
  fi
  APT_NO_RECOMMENDS=1 apt_ensure "$@" || rc=$?
  [ "$created" = 0 ] || rm -f /usr/sbin/policy-rc.d
  return "$rc"
}

pg_bin_dir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  [ -n "$d" ] || return 1
  echo "$d"
}

# The pid in FILE if that process is alive and its command line contains NAME.
live_pid() {
  local file=$1 name=$2 pid
  [ -f "$file" ] || return 1
  pid=$(head -n1 "$file" 2>/dev/null | tr -dc '0-9')
  [ -n "$pid" ] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name" || return 1
  echo "$pid"
}

# What keeps 127.0.0.1:PORT from being bound, for messages; empty when nothing
# does. A listener, or a TCP connection whose local end is PORT: a client that
# was given PORT as its ephemeral port, or one that connected to itself (a
# connect() to a closed loopback port inside the ephemeral range can pick that
# very port as its source and succeed by simultaneous open). Such a
# self-connected socket blocks the port even in TIME-WAIT, for up to 60 s.
# What a dead server's accepted connections leave behind (orphans in TIME-WAIT
# or FIN-WAIT, owned by no process) does not block a new listener
# (SO_REUSEADDR) and is ignored.
port_owner() {
  # The first match, with every line read: a reader that stops early (`| head -n1`) lets
  # the writer die of SIGPIPE when there are many lines (a listener with wrk's connections),
  # which pipefail turns into a failure of the caller, now and then.
  ss -Htanp "sport = :$1" 2>/dev/null |
    awk '!found && ($1 == "LISTEN" || $4 == $5 || ($1 != "TIME-WAIT" && /users:/)) { print; found = 1 }'
}

port_free() { [ -z "$(port_owner "$1")" ]; }

# Dies unless PORT can be bound; waits (up to 65 s) for a self-connected
# socket's TIME-WAIT to expire first.
need_port() {
  local port=$1 owner
  owner=$(port_owner "$port")
  [ -n "$owner" ] || return 0
  if [ "$(awk '{print $1}' <<<"$owner")" = TIME-WAIT ]; then
    log "port $port is held by a socket that connected to itself, now in TIME-WAIT; waiting for it to expire (up to 60 s)"
    for _ in $(seq 1 65); do
      sleep 1
      owner=$(port_owner "$port")
      [ -n "$owner" ] || return 0
      [ "$(awk '{print $1}' <<<"$owner")" = TIME-WAIT ] || break
    done
  fi
  die "port $port is taken: $owner"
}

# Ports the stack listens on that lie inside the kernel's ephemeral range
# (32768-60999 by default: PostgreSQL, PgBouncer and Redis do) are added to
# net.ipv4.ip_local_reserved_ports, so that no outgoing connection is given one
# of them as its source port while its server is down, which would keep the
# server from starting again (see port_owner). Machine-wide, until reboot; a
# kernel that refuses (read-only /proc/sys) gets a warning.
reserve_stack_ports() {
  local f=/proc/sys/net/ipv4/ip_local_reserved_ports lo hi cur p add=()
  [ -w "$f" ] || { log "warning: cannot write $f; stack ports stay in the ephemeral range"; return 0; }
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
  cur=$(cat "$f")
  for p in "$@"; do
    [ "$p" -ge "$lo" ] && [ "$p" -le "$hi" ] || continue
    awk -v p="$p" -v RS=, '{ split($0, r, "-"); if (r[2] == "") r[2] = r[1]; if (p >= r[1] + 0 && p <= r[2] + 0) found = 1 }
      END { exit !found }' <<<"$cur" && continue
    add+=("$p")
  done
  [ ${#add[@]} -gt 0 ] || return 0
  local joined
  joined=$(IFS=,; echo "${add[*]}")
  if echo "${cur:+$cur,}$joined" >"$f" 2>/dev/null; then
    log "reserved ports $joined (inside the ephemeral range $lo-$hi) in net.ipv4.ip_local_reserved_ports"
  else
    log "warning: could not reserve ports $joined in $f"
  fi
}

# True while PID exists and has not exited (an exited process whose parent
# has not reaped it yet is a zombie: gone for our purposes).
alive() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Sends SIG to PID, waits up to SECS for it to exit, then SIGKILLs it.
# Returns 1 if it had to be killed.
stop_pid() {
  local pid=$1 sig=$2 secs=$3 what=$4 i
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for i in $(seq 1 $((secs * 10))); do
    alive "$pid" || return 0
    sleep 0.1
  done
  log "$what (pid $pid) still running after ${secs}s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  return 1
}

# "VmRSS 12345 kB, VmHWM 23456 kB" for PID.
mem_of() {
  awk '/^VmRSS:/{r=$2} /^VmHWM:/{h=$2} END{printf "VmRSS %d MiB (%d kB), VmHWM %d MiB (%d kB)", r/1024, r, h/1024, h}' "/proc/$1/status" 2>/dev/null
}

http_status() {
  curl -s -o /dev/null -m "${2:-3}" -w '%{http_code}' "$1" 2>/dev/null || true
}

# Waits until URL answers 200, up to SECS seconds.
wait_http_ok() {
  local url=$1 secs=$2
  for _ in $(seq 1 $((secs * 5))); do
    [ "$(http_status "$url" 2)" = 200 ] && return 0
    sleep 0.2
  done
  return 1
}

# Many connections need many descriptors: up to 65536, or the hard limit.
raise_nofile() {
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# ---------------------------------------------------------------- measuring
# Shared by the wrk scripts and k6/run.sh.

load_note() {
  printf 'load average before the run: %s (%s cores)\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)"
  # Pressure stall information: the share of time some task waited for the
  # CPU or for I/O (fsync stalls show up here, and in commit latency).
  local r
  for r in cpu io; do
    [ -r "/proc/pressure/$r" ] &&
      printf '%s pressure: %s\n' "$r" "$(awk '/^some/ {print $2, $3, $4}' "/proc/pressure/$r")"
  done
  return 0
}

# CPU seconds used so far by each kind of process (user + system), as
# "name seconds" lines, and the machine's busy time from /proc/stat ("_busy").
# Counted: the service processes whose pids are given, the stack's PostgreSQL
# (its postmaster and children), and every pgbouncer, nginx, redis-server, wrk
# and k6, and Prometheus, Alertmanager and the exporters together as
# "monitoring". Anything else (another PostgreSQL, a compile) falls under "(other)".
cpu_snapshot() { # service-pid...
  local tck pg=0
  tck=$(getconf CLK_TCK)
  [ -f "$STACK_DIR/pg/postmaster.pid" ] && pg=$(head -n1 "$STACK_DIR/pg/postmaster.pid")
  awk -v tck="$tck" '/^cpu / {
      printf "_busy %.2f\n_irq %.2f\n_steal %.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / tck, ($7 + $8) / tck, $9 / tck
      exit }' /proc/stat
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
      # Prometheus, Alertmanager and the exporters (Debian names them prometheus-*).
      else if (comm ~ /^(prometheus|pgbouncer-expor)/) comm = "monitoring"
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
      for (c in d) if (c !~ /^_/ && d[c] > 0.05) {
        printf "  %-12s %7.2f s  %3.0f%%\n", c, d[c], 100 * d[c] / cap | "sort -k2 -rn"; known += d[c]
      }
      close("sort -k2 -rn")
      # Interrupt time (mostly the kernel doing loopback networking; the kernel
      # may count some of it in the processes too, so shares are approximate) and time
      # the hypervisor gave to other guests belong to no process.
      printf "  %-12s %7.2f s  %3.0f%%\n", "(interrupts)", d["_irq"], 100 * d["_irq"] / cap
      if (d["_steal"] > 0.05) printf "  %-12s %7.2f s  %3.0f%%\n", "(steal)", d["_steal"], 100 * d["_steal"] / cap
      other = d["_busy"] - known - d["_irq"] - d["_steal"]; if (other < 0) other = 0
      printf "  %-12s %7.2f s  %3.0f%%\n", "(other)", other, 100 * other / cap
      printf "  %-12s %7.2f s  %3.0f%%   of %d cores x %.0f s\n", "machine busy", d["_busy"], 100 * d["_busy"] / cap, cores, wall
    }' "$1" "$2"
}
