#!/usr/bin/env bash
# Smoke checks for the control plane of scripts/cluster.sh (or any cluster
# $KUBECONFIG points at): real version, health, RBAC enforced, Deployments
# rolled out onto the fake node, ServiceAccount admission, garbage collection,
# CEL validation of a CRD, Leases, namespace deletion.
#
#   export KUBECONFIG=$(scripts/cluster.sh up)
#   scripts/cluster-smoke.sh
#
# Runs every check, prints ok/FAIL per check, exits 1 if any failed.
# Uses the kubectl scripts/cluster.sh built (same version as the server; a
# kubectl elsewhere on PATH may be outside the supported version skew).
set -euo pipefail

: "${KUBECONFIG:?set KUBECONFIG, e.g. export KUBECONFIG=\$(scripts/cluster.sh up)}"
export KUBECONFIG
PATH=$("$(dirname "$0")/cluster.sh" bin):$PATH

ns=shortener-smoke-$$
crd=widgets.smoke.shortener.test
timeout=120s
failed=()

cleanup() {
  kubectl delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete crd "$crd" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

note() { printf '     %s\n' "$*"; }

# Polls a command until it prints exactly the expected text.
until_output() { # expected seconds command...
  local want=$1 deadline=$((SECONDS + $2)) got; shift 2
  while :; do
    got=$("$@" 2>/dev/null || true)
    [ "$got" = "$want" ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      note "expected '$want' from '$*', got '$got'"; return 1
    fi
    sleep 1
  done
}

# Each check runs in a subshell with errexit really on (it is suspended inside
# `if` and `||`), so its first failing command fails that check only.
check() { # description function
  local rc
  set +e
  (set -e; "$2")
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then printf 'ok   %s\n' "$1"; else printf 'FAIL %s\n' "$1"; failed+=("$1"); fi
}

server_version() {
  local v
  kubectl version | sed 's/^/     /'
  v=$(kubectl version -o json | sed -n '/"serverVersion"/,/}/s/.*"gitVersion": "\(.*\)".*/\1/p')
  [[ $v =~ ^v1\.[0-9]+\.[0-9]+ ]]
}

readyz() {
  local out
  out=$(kubectl get --raw '/readyz?verbose')
  grep -E '^\[\+\](etcd|informer-sync|poststarthook/rbac/bootstrap-roles) ok' <<<"$out" | sed 's/^/     /'
  grep -q 'readyz check passed' <<<"$out"
}

rbac_enforced() {
  local who=system:serviceaccount:default:nobody answer
  answer=$(kubectl auth can-i create secrets --as="$who" 2>/dev/null || true)
  note "can $who create secrets? $answer"
  [ "$answer" = no ]
  # Not just the answer: a real request as that identity is refused.
  if kubectl get secrets -n default --as="$who" >/dev/null 2>&1; then
    note "$who could list Secrets"; return 1
  fi
  [ "$(kubectl auth can-i '*' '*')" = yes ]
}

namespace_ready() {
  kubectl create namespace "$ns" >/dev/null
  # The ServiceAccount controller gives each new namespace its `default` account.
  until_output default 60 kubectl -n "$ns" get serviceaccount default -o 'jsonpath={.metadata.name}'
}

deployment_available() {
  kubectl -n "$ns" create deployment smoke --image=registry.invalid/shortener-smoke:1 --replicas=2 >/dev/null
  kubectl -n "$ns" rollout status deployment/smoke --timeout="$timeout" | sed 's/^/     /'
  kubectl -n "$ns" wait --for=condition=Available deployment/smoke --timeout="$timeout" >/dev/null
  until_output 2 30 kubectl -n "$ns" get deployment smoke -o 'jsonpath={.status.readyReplicas}'
  kubectl -n "$ns" get pods -l app=smoke -o wide | sed 's/^/     /'
  [ "$(kubectl -n "$ns" get pods -l app=smoke \
    -o 'jsonpath={range .items[*]}{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}/{.spec.nodeName}{"\n"}{end}' |
    grep -c '^Running/True/.')" -eq 2 ]
}

service_account_pod() {
  kubectl -n "$ns" create serviceaccount smoke-sa >/dev/null
  kubectl -n "$ns" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: smoke-sa
spec:
  serviceAccountName: smoke-sa
  containers:
  - name: main
    image: registry.invalid/shortener-smoke:1
EOF
  kubectl -n "$ns" wait --for=condition=Ready pod/smoke-sa --timeout="$timeout" >/dev/null
  # ServiceAccount admission mounted the account's token as a projected volume.
  kubectl -n "$ns" get pod smoke-sa -o 'jsonpath={.spec.volumes[*].projected.sources[*].serviceAccountToken.path}' | grep -qx token
  note "pod smoke-sa admitted with the smoke-sa token volume, Ready"
  # ... and it refuses a pod whose account does not exist.
  local out
  if out=$(kubectl -n "$ns" run smoke-nosa --image=registry.invalid/shortener-smoke:1 \
    --overrides='{"spec":{"serviceAccountName":"missing"}}' 2>&1); then
    note "a pod with a missing ServiceAccount was admitted"; return 1
  fi
  note "missing account refused: ${out#*: }"
}

garbage_collected() {
  local rs
  rs=$(kubectl -n "$ns" get replicasets -l app=smoke -o name)
  [ -n "$rs" ]
  note "deleting deployment/smoke; its $rs and pods must follow via owner references"
  kubectl -n "$ns" delete deployment smoke --cascade=background >/dev/null
  until_output "" 90 kubectl -n "$ns" get replicasets,pods -l app=smoke -o name
}

cel_validation() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: $crd
spec:
  group: smoke.shortener.test
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              min: {type: integer}
              max: {type: integer}
            x-kubernetes-validations:
            - rule: self.min <= self.max
              message: min must not exceed max
EOF
  # Polled: right after the create a CRD may have no conditions yet, which `kubectl wait`
  # takes for an error.
  local deadline=$((SECONDS + 60))
  until [ "$(kubectl get "crd/$crd" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ]; do
    [ "$SECONDS" -lt "$deadline" ] || { note "crd/$crd not Established after 60 s"; return 1; }
    sleep 0.5
  done
  widget() { printf 'apiVersion: smoke.shortener.test/v1\nkind: Widget\nmetadata: {name: %s}\nspec: {min: %s, max: %s}\n' "$@"; }
  widget good 1 3 | kubectl -n "$ns" create -f - >/dev/null
  local out
  if out=$(widget bad 5 2 | kubectl -n "$ns" create -f - 2>&1); then
    note "an invalid Widget was accepted"; return 1
  fi
  note "invalid Widget rejected: ${out#*: }"
  grep -q 'min must not exceed max' <<<"$out"
}

lease() {
  kubectl -n "$ns" apply -f - >/dev/null <<'EOF'
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: smoke-leader
spec:
  holderIdentity: smoke-1
  leaseDurationSeconds: 15
EOF
  [ "$(kubectl -n "$ns" get lease smoke-leader -o 'jsonpath={.spec.holderIdentity}')" = smoke-1 ]
}

namespace_deleted() {
  kubectl delete crd "$crd" --timeout=60s >/dev/null
  # The namespace controller empties the namespace and removes its finalizer.
  kubectl delete namespace "$ns" --timeout="$timeout" >/dev/null
}

check "server reports a real version" server_version
check "/readyz?verbose passes" readyz
if [ ${#failed[@]} -gt 0 ]; then
  echo "the API server is not reachable or not ready; skipping the other checks" >&2
  exit 1
fi
check "RBAC enforced: a ServiceAccount without bindings may not read or create Secrets" rbac_enforced
check "namespace created and given its default ServiceAccount" namespace_ready
check "Deployment with 2 replicas becomes Available with 2 Ready pods" deployment_available
check "pod with a ServiceAccount admitted and Ready; missing account refused" service_account_pod
check "deleting the Deployment garbage-collects its ReplicaSet and pods" garbage_collected
check "CRD with a CEL rule rejects an invalid object" cel_validation
check "a Lease can be created in a namespace" lease
check "namespace deletion completes" namespace_deleted

if [ ${#failed[@]} -gt 0 ]; then
  printf '%s of the checks failed\n' "${#failed[@]}" >&2
  exit 1
fi
echo "all checks passed"
