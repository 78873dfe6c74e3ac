#!/usr/bin/env bash
# Checks the monitoring against the running local stack: scripts/check-monitoring.sh with
# PROMETHEUS_URL set to the stack's Prometheus, so that every alert rule and every
# dashboard query is evaluated on real data, and every metric name they use must have
# series there, except the few this stack cannot have (listed below, with the reason).
#
# First (unless --no-traffic) it sends a little traffic through nginx: one new link,
# redirects to it, the API reads, so that the service's per-route series exist; then it
# waits until Prometheus has scraped every target after that traffic.
#
# Usage: loadtests/stack/check-monitoring-live.sh [--no-traffic]
# Needs the stack with its monitoring: loadtests/stack/up.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/lib.sh"

traffic=1
for arg in "$@"; do
  case $arg in
    --no-traffic) traffic=0 ;;
    -h|--help) sed -n '2,/^set -/{/^set -/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

[ "$(http_status "$PROM_URL/-/ready")" = 200 ] ||
  die "no Prometheus at $PROM_URL: start the stack with its monitoring (loadtests/stack/up.sh)"

# Metric names the rules and the dashboard use that this stack cannot have; any other
# absent name is a failure.
METRICS_EXPECTED_ABSENT=$(cat <<'EOF'
ALERTS Prometheus' own series, present only while some alert is pending or firing
kube_deployment_spec_replicas kube-state-metrics: Kubernetes only
kube_deployment_status_replicas_available kube-state-metrics: Kubernetes only
kube_statefulset_status_replicas_ready kube-state-metrics: Kubernetes only
nginx_ingress_controller_requests ingress-nginx: the local nginx exports no metrics
nginx_ingress_controller_ssl_expire_time_seconds ingress-nginx: the local nginx exports no metrics
shortener_operator_reconcile_failures_total the operator's: Kubernetes only
EOF
)

if [ "$traffic" = 1 ]; then
  key=$(cat "$KEY_FILE")
  log "traffic through $NGINX_URL: one link, 20 redirects, reads"
  body=$(curl -fsS -m 10 "$NGINX_URL/urls" -H "authorization: Bearer $key" \
    -H 'content-type: application/json' \
    -d "{\"original_url\":\"https://example.com/check-monitoring-live/$(date +%s%N)\",\"title\":\"monitoring check\"}") ||
    die "POST /urls through nginx failed"
  id=$(jq -r '.id' <<<"$body")
  code=$(jq -r '.short_code' <<<"$body")
  if [ -z "$id" ] || [ "$id" = null ] || [ -z "$code" ] || [ "$code" = null ]; then
    die "POST /urls answered without id/short_code: $body"
  fi
  for _ in $(seq 1 20); do
    s=$(http_status "$NGINX_URL/$code")
    [ "$s" = 302 ] || die "GET /$code answered $s, not 302"
  done
  for path in "/urls/$id" "/urls/$id/stats" "/urls?page=1"; do
    s=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H "authorization: Bearer $key" "$NGINX_URL$path")
    [ "$s" = 200 ] || die "GET $path answered $s, not 200"
  done
fi

# Every target scraped after now (the traffic above is in the next scrape).
since=$(date +%s)
log "waiting for Prometheus to scrape every target after $(date -u -d "@$since" +%T)Z"
ready=0
for _ in $(seq 1 60); do
  n=$(curl -fsS -m 3 "$PROM_URL/api/v1/query" --data-urlencode "query=count(timestamp(up) > $since) == count(up)" |
    jq -r '.data.result | length')
  if [ "$n" = 1 ]; then ready=1; break; fi
  sleep 1
done
[ "$ready" = 1 ] || die "Prometheus has not scraped every target within 60 s (see $PROM_URL/targets)"
# One more evaluation cycle so the rules have seen the new samples.
sleep 6

export PROMETHEUS_URL=$PROM_URL REQUIRE_METRICS=1 METRICS_EXPECTED_ABSENT
exec bash "$STACK_REPO/scripts/check-monitoring.sh"
