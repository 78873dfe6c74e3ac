#!/usr/bin/env bash
# End-to-end suite of the operator on a real Kubernetes control plane
# (operator/tests/e2e/): installs the operator chart, runs the locally built
# operator as the chart's ServiceAccount, and checks installation, scaling,
# rollouts, CEL rules, drift repair, pruning, pause, garbage collection,
# leader election and the chart's upgrade/uninstall.
#
#   scripts/e2e.sh [NAME-FILTER...]
#   scripts/e2e.sh --real-node [NAME-FILTER...]
#
# --real-node runs the real tier instead (operator/tests/real/): the real node of
# `scripts/cluster.sh up --real-node` (root), our release binaries built into images and
# loaded into its runtime (scripts/images.sh), the operator chart installed with the
# operator running in the cluster, the examples applied as written, traffic through the
# node's Ingress controller and Gateway, NetworkPolicies enforced, pods deleted under load.
#
# With KUBECONFIG set, runs against that cluster (kind, or any cluster where
# you are an admin; kubectl and helm must be on PATH). Without it, brings up
# the local control plane of scripts/cluster.sh (etcd, kube-apiserver,
# controller manager, scheduler, kwok) and stops it at the end, whatever
# happened. Logs of the operator processes are left in target/e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
cluster_started=
suite_group=
real_node=
if [ "${1:-}" = --real-node ]; then real_node=1; shift; fi

# The suite runs in its own process group (setsid), so stopping it also stops the
# operator processes it started, even if the test binary itself died first.
# shellcheck disable=SC2317 # called from the EXIT trap
stop_suite() {
  [ -n "$suite_group" ] || return 0
  kill -0 -- "-$suite_group" 2>/dev/null || return 0
  kill -TERM -- "-$suite_group" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while kill -0 -- "-$suite_group" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      kill -KILL -- "-$suite_group" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
}
# shellcheck disable=SC2317 # called from the EXIT trap
stop_cluster() {
  if [ -n "$cluster_started" ]; then
    # shellcheck disable=SC2086 # empty or one flag
    scripts/cluster.sh down ${real_node:+--real-node} || echo "e2e: scripts/cluster.sh down failed" >&2
  fi
}
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  local rc=$?
  stop_suite
  stop_cluster
  exit "$rc"
}
trap cleanup EXIT
# On INT and TERM, exit normally so that the EXIT trap runs (bash skips it when a signal
# it does not trap kills it).
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "$real_node" ] && [ -z "${KUBECONFIG:-}" ]; then
  echo "== local control plane and real node (scripts/cluster.sh up --real-node)"
  cluster_started=1
  scripts/cluster.sh up --real-node >/dev/null
  # KUBECONFIG, kubectl and helm, the runtime's socket, the Ingress and Gateway entry points.
  eval "$(scripts/cluster.sh env)"
elif [ -z "${KUBECONFIG:-}" ]; then
  echo "== local control plane (scripts/cluster.sh)"
  cluster_started=1
  KUBECONFIG=$(scripts/cluster.sh up)
  export KUBECONFIG
  # kubectl and helm of the versions the control plane was built with.
  PATH=$(scripts/cluster.sh bin):$PATH
  export PATH
else
  echo "== cluster of KUBECONFIG=$KUBECONFIG"
  for tool in kubectl helm; do
    command -v "$tool" >/dev/null || { echo "e2e: $tool is not on PATH" >&2; exit 1; }
  done
fi
kubectl version

suite=e2e
if [ -n "$real_node" ]; then
  suite=real
  echo "== images (release binaries, scripts/images.sh)"
  cargo build --release --locked -p shortener -p shortener-operator
  scripts/images.sh load
else
  echo "== build"
  cargo build --locked -p shortener-operator
fi
cargo test --locked -p shortener-operator --test "$suite" --no-run

echo "== suite ($suite)"
setsid cargo test --locked -p shortener-operator --test "$suite" -- --ignored --test-threads=1 "$@" &
suite_group=$!
status=0
wait "$suite_group" || status=$?
echo "e2e: finished in $((SECONDS - started))s"
exit "$status"
