#!/usr/bin/env bash
# The Gateway API CRDs (standard channel) of the one version the project tests against:
# the version the Traefik built for the real node implements (its go.mod), so the
# operator's HTTPRoute, the controller serving it and the CRDs agree.
#
#   scripts/gateway-api.sh dir       # prints the directory of the CRD manifests
#                                    # (fetched once through the Go module proxy)
#   scripts/gateway-api.sh install   # applies them to the cluster of $KUBECONFIG and
#                                    # waits until they are served
set -euo pipefail

VERSION=v1.4.1

die() { printf 'gateway-api: %s\n' "$*" >&2; exit 1; }

crd_dir() {
  command -v go >/dev/null || die "go is not on PATH"
  local dir
  dir=$(GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  [ -d "$dir/config/crd/standard" ] || die "no config/crd/standard in sigs.k8s.io/gateway-api@$VERSION"
  printf '%s\n' "$dir/config/crd/standard"
}

case ${1:-} in
  dir) crd_dir ;;
  install)
    dir=$(crd_dir)
    kubectl apply --server-side --force-conflicts -f "$dir" >&2
    # Polled, not `kubectl wait`: right after the apply a CRD may have no conditions yet,
    # and `kubectl wait` then fails at once instead of waiting (seen).
    for crd in gatewayclasses gateways httproutes referencegrants; do
      deadline=$((SECONDS + 60))
      until [ "$(kubectl get "crd/$crd.gateway.networking.k8s.io" \
        -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" = True ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "crd/$crd.gateway.networking.k8s.io not Established after 60 s"
        sleep 0.5
      done
    done
    ;;
  *) die "usage: scripts/gateway-api.sh dir|install" ;;
esac
