#!/usr/bin/env bash
# The physical ceiling for a redirect on this machine: nginx alone, one worker
# pinned to core $SERVER_CPU (0), answering every request with
# `return 302 https://example.com/;`, and wrk pinned to core $CLIENT_CPU (1).
# No application, no database: what one core can do for a 302 over loopback
# HTTP/1.1 keepalive. Compare with `redirect.sh single` (same pinning, same
# connections).
#
# Usage: loadtests/wrk/nginx-baseline.sh
# Environment: DURATION (15s), WARMUP (3s), CONNECTIONS (100), THREADS (1),
# BASELINE_PORT (18089), SERVER_CPU, CLIENT_CPU.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

command -v nginx >/dev/null || apt_ensure nginx
fixed_302_prerequisites

work=$(mktemp -d /tmp/shortener-nginx-baseline.XXXXXX)
nginx_pid=""
cleanup() {
  if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
    stop_pid "$nginx_pid" QUIT 10 "baseline nginx" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/tmp"
cat >"$work/nginx.conf" <<EOF
user www-data;
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $work/nginx.pid;
error_log $work/error.log warn;
daemon off;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    client_body_temp_path $work/tmp/client_body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    server {
        listen 127.0.0.1:$BASELINE_PORT backlog=4096;
        location / { return 302 https://example.com/; }
    }
}
EOF
nginx -t -q -c "$work/nginx.conf" -p "$work" -e "$work/error.log" || die "nginx rejected the baseline config"
taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work" -e "$work/error.log" &
nginx_pid=$!
fixed_302_answering || die "baseline nginx does not answer 302"

worker=$(pgrep -P "$nginx_pid" | head -n1 || true)
fixed_302_run nginx-baseline "nginx return 302, one worker on core $SERVER_CPU" "$worker"
