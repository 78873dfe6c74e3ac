#!/usr/bin/env bash
# End-to-end suite of the operator on a real Kubernetes control plane
# (operator/tests/e2e/): installs the operator chart, runs the locally built
# operator as the chart's ServiceAccount, and checks installation, scaling,
# rollouts, CEL rules, drift repair, pruning, pause, garbage collection,
# leader election and the chart's upgrade/uninstall.
#
#   scripts/e2e.sh [NAME-FILTER...]
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
stop_cluster() {
  if [ -n "$cluster_started" ]; then
    scripts/cluster.sh down || echo "e2e: scripts/cluster.sh down failed" >&2
  fi
}
trap stop_cluster EXIT
# A signal runs the EXIT trap too (bash runs EXIT traps on exit, not on a killing signal).
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${KUBECONFIG:-}" ]; then
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

echo "== build"
cargo build --locked -p shortener-operator
cargo test --locked -p shortener-operator --test e2e --no-run

echo "== suite"
cargo test --locked -p shortener-operator --test e2e -- --ignored --test-threads=1 "$@"
echo "e2e: finished in $((SECONDS - started))s"
