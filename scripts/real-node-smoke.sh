#!/usr/bin/env bash
# The stack on the real node, as a newcomer would type it: the operator chart installed with
# the operator running in the cluster from its image, then manifests/examples/minimal.yaml,
# until the Shortener is Ready through its real probes; then a link shortened and followed
# through the app's Service.
#
#   scripts/real-node-smoke.sh          # starts the real node if needed; leaves it running
#   scripts/real-node-smoke.sh --down   # and stops it at the end, whatever happened
#
# Needs the release binaries (cargo build --release -p shortener -p shortener-operator) and
# root (the real node). On failure it prints the pods, events and the logs of what is not
# ready.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*"; }
fail() {
  printf 'real-node-smoke: %s\n' "$*" >&2
  diagnose
  exit 1
}
started=$SECONDS
stop_at_end=
[ "${1:-}" != --down ] || stop_at_end=1

# shellcheck disable=SC2317 # called from the EXIT trap
finish() {
  local rc=$?
  if [ -n "$stop_at_end" ]; then scripts/cluster.sh down || rc=1; fi
  printf 'real-node-smoke: finished in %ss\n' "$((SECONDS - started))"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

diagnose() {
  kubectl get pods -A -o wide >&2 || true
  kubectl get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 >&2 || true
  local pod
  for pod in $(kubectl get pods -A --no-headers 2>/dev/null | awk '$3 !~ /^([0-9]+)\/\1$/ && $4 != "Completed" { print $1 "/" $2 }'); do
    printf -- '--- logs of %s\n' "$pod" >&2
    kubectl logs -n "${pod%%/*}" "${pod#*/}" --all-containers --tail=30 >&2 || true
  done
}

# Polls COMMAND until it succeeds or TIMEOUT seconds pass.
wait_until() { # timeout what command...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out after $((SECONDS - started))s waiting for $what"
    sleep 2
  done
  say "$what ($((SECONDS - started))s)"
}

for binary in target/release/shortener target/release/shortener-operator; do
  [ -x "$binary" ] || fail "$binary is missing: cargo build --release -p shortener -p shortener-operator"
done

say "real node"
KUBECONFIG=$(scripts/cluster.sh up --real-node)
export KUBECONFIG
eval "$(scripts/cluster.sh env)"
kubectl get nodes -o wide

say "images"
scripts/images.sh load

say "operator chart"
helm upgrade --install shortener-operator charts/shortener-operator \
  --namespace shortener-system --create-namespace --wait --timeout 5m
wait_until 120 "the operator holds its lease" kubectl -n shortener-system get lease shortener-operator

say "minimal example"
kubectl apply -f manifests/examples/minimal.yaml
shortener_ready() {
  [ "$(kubectl get shortener links -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_until 600 "Shortener links is Ready" shortener_ready
kubectl get shortener,pods,jobs,pvc -o wide

say "a link through the app's Service"
ip=$(kubectl get service links -o jsonpath='{.spec.clusterIP}')
port=$(kubectl get service links -o jsonpath='{.spec.ports[0].port}')
key=$(kubectl get secret links-admin -o jsonpath='{.data.api-key}' | base64 -d)
created=$(curl -sS --max-time 10 -X POST "http://$ip:$port/shorten" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' -d '{"url":"https://example.com/real-node"}') ||
  fail "POST /shorten failed"
code=$(printf '%s' "$created" | sed -n 's/.*"short_code":"\([^"]*\)".*/\1/p')
[ -n "$code" ] || fail "POST /shorten answered: $created"
answer=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{redirect_url}' "http://$ip:$port/$code")
[ "$answer" = "302 https://example.com/real-node" ] || fail "GET /$code answered: $answer"
say "GET /$code -> $answer"

say "the data stores, through kubectl exec"
# Redis refuses a client without the password, answers the probes' client with it, and holds
# the link the redirect cached.
noauth=$(kubectl exec deploy/links-redis -- sh -c 'REDISCLI_AUTH= redis-cli ping' 2>&1 || true)
case $noauth in *NOAUTH*) ;; *) fail "Redis answered a client without the password: $noauth" ;; esac
[ "$(kubectl exec deploy/links-redis -- redis-cli ping)" = PONG ] || fail "Redis refused its password"
keys=$(kubectl exec deploy/links-redis -- redis-cli dbsize)
[ "${keys:-0}" -gt 0 ] || fail "nothing cached in Redis after a redirect"
roles=$(kubectl exec links-postgres-0 -- psql -X -At -U shortener -d shortener \
  -c "select string_agg(rolname, ',' order by rolname) from pg_roles where rolname like 'shortener%'")
[ "$roles" = shortener,shortener_app,shortener_owner ] || fail "PostgreSQL roles: $roles"
kubectl logs deploy/links --tail=1 >/dev/null || fail "kubectl logs failed"
say "Redis: password required, $keys key(s) cached; PostgreSQL roles: $roles"
say "all checks passed"
