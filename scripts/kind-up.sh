#!/usr/bin/env bash
# End-to-end run on a local kind cluster. Needs docker, kind, kubectl, helm and curl, and
# network access to pull images; see docs/operator.md.
#   scripts/kind-up.sh              cluster + ingress-nginx + operator + one Shortener
#   WITH_PROMETHEUS=1 scripts/kind-up.sh   also kube-prometheus-stack (needs more memory)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER=shortener
APP_IMAGE=shortener:0.1.0
OPERATOR_IMAGE=shortener-operator:0.1.0
HOST=sho.localtest.me
INGRESS_PORT=8080   # hostPort mapped to the node's :80 in kind-config.yaml
INGRESS_NGINX_MANIFEST=https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.12.1/deploy/static/provider/kind/deploy.yaml

step() { echo; echo "==> $*"; }

step "cluster"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --config kind-config.yaml
fi
kubectl config use-context "kind-$CLUSTER"

step "ingress-nginx"
kubectl apply -f "$INGRESS_NGINX_MANIFEST"
kubectl -n ingress-nginx wait deployment/ingress-nginx-controller --for=condition=Available --timeout=300s

if [[ "${WITH_PROMETHEUS:-0}" == 1 ]]; then
  step "kube-prometheus-stack"
  helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
  helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
    -n monitoring --create-namespace --wait --timeout 10m \
    --set grafana.sidecar.dashboards.enabled=true --set grafana.sidecar.dashboards.searchNamespace=ALL
fi

step "images"
docker build -f docker/app.Dockerfile -t "$APP_IMAGE" .
docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
kind load docker-image --name "$CLUSTER" "$APP_IMAGE" "$OPERATOR_IMAGE"

step "operator"
monitoring_values=()
if [[ "${WITH_PROMETHEUS:-0}" == 1 ]]; then
  monitoring_values=(--set serviceMonitor.enabled=true --set serviceMonitor.labels.release=kube-prometheus-stack)
fi
helm upgrade --install shortener-operator charts/shortener-operator \
  -n shortener-system --create-namespace --wait --timeout 5m \
  --set image.repository="${OPERATOR_IMAGE%%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
  "${monitoring_values[@]}"

step "Shortener"
helm upgrade --install links charts/shortener -n shortener --create-namespace \
  --set spec.app.image="$APP_IMAGE" --set spec.ingress.host="$HOST" \
  --set-string spec.monitoring.labels.release=kube-prometheus-stack
kubectl -n shortener wait shortener/links --for=condition=Ready --timeout=10m
kubectl -n shortener get shortener links
echo "stack requests (budget: 1 vCPU / 1 GiB):"
kubectl -n shortener get pods -o jsonpath='{range .items[*]}{.metadata.name}{"\t"}{range .spec.containers[*]}{.resources.requests.cpu}{" "}{.resources.requests.memory}{end}{"\n"}{end}'
kubectl get node -o jsonpath='{.items[0].status.allocatable}'; echo

step "shorten and follow a link through the ingress"
API_KEY="$(kubectl -n shortener get secret links-admin -o jsonpath='{.data.api-key}' | base64 -d)"
BASE="http://127.0.0.1:$INGRESS_PORT"
for attempt in $(seq 1 30); do
  curl -fsS -H "Host: $HOST" "$BASE/health" >/dev/null && break
  sleep 2
done
RESPONSE="$(curl -fsS -H "Host: $HOST" -H "Authorization: Bearer $API_KEY" \
  -H 'content-type: application/json' -d '{"url":"https://example.com/kind"}' "$BASE/shorten")"
echo "$RESPONSE"
CODE="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["short_code"])' <<<"$RESPONSE")"
LOCATION="$(curl -sS -o /dev/null -w '%{redirect_url}' -H "Host: $HOST" "$BASE/$CODE")"
echo "GET /$CODE -> $LOCATION"
[[ "$LOCATION" == "https://example.com/kind" ]] || { echo "redirect did not lead to the original URL"; exit 1; }
echo "OK: the stack serves and redirects through the ingress"
