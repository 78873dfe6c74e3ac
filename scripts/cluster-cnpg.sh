# shellcheck shell=bash disable=SC2034,SC2154 # sourced by cluster.sh, sharing its variables
# CloudNativePG on the real node, installed as platform teams install it: its release manifest
# (the namespace `cnpg-system`, the CRDs, RBAC, the webhooks, the operator's Deployment) as
# published, so the Shortener operator's CNPG `Cluster` and `Pooler` objects meet the real
# thing (admission, defaulting, the instance and PgBouncer managers):
#   - the manager (one binary: operator, instance manager, PgBouncer manager) is built from its
#     Go module, and the release manifest is the one that module ships
#     (releases/cnpg-<version>.yaml), both cached in $cache_root/cnpg-<version>;
#   - its image (scripts/images.sh, kind cloudnative-pg) is loaded under the reference the
#     manifest names, which is also the one the operator gives its instance pods' init
#     container (OPERATOR_IMAGE_NAME);
#   - the Deployment is patched with kubectl's built-in kustomize (no python needed): images
#     found locally, requests that fit the node's 1 CPU / 1 GiB beside the monitoring, a
#     startup allowance for a loaded machine, and POSTGRES_IMAGE_NAME and PGBOUNCER_IMAGE_NAME
#     naming our postgres and pgbouncer images under the references `scripts/images.sh list`
#     gives them (the Shortener operator's own defaults), so Clusters and Poolers that name no
#     image run ours. `scripts/images.sh load postgres pgbouncer` loads them.
#   - the webhooks' certificates are the operator's own: it makes the Secrets cnpg-ca-secret
#     and cnpg-webhook-cert and writes its CA into both webhook configurations. `up` waits for
#     that, and for a server-side dry run of a Cluster through both webhooks.
# SHORTENER_CNPG=0 leaves all of it out (neither built nor installed). Everything it makes
# lives in the cluster's etcd and on the node, so `down` removes it with the rest.

CNPG_VERSION=${SHORTENER_CLUSTER_CNPG_VERSION:-v1.30.1}
cnpg_module=github.com/cloudnative-pg/cloudnative-pg
# Its own cache directory: another version rebuilds it alone.
cnpg_cache=${cache_root:?}/cnpg-$CNPG_VERSION
cnpg_manifest=$cnpg_cache/cnpg.yaml
# Named by the release manifest.
cnpg_namespace=cnpg-system
cnpg_deployment=cnpg-controller-manager

cnpg_enabled() { [ "${SHORTENER_CNPG:-1}" != 0 ]; }

cnpg_built() {
  cnpg_enabled || return 0
  [ -x "$cnpg_cache/manager" ] && [ -s "$cnpg_manifest" ]
}

# `go install .../cmd/manager@version` fails here (the proxy answers its version query with
# 403), so the manager is built in its module directory, as Traefik is; its go.mod names a
# newer toolchain than ours, which GOTOOLCHAIN=local ignores.
build_cnpg() {
  cnpg_built && return 0
  local dir commit
  mkdir -p "$cnpg_cache"
  dir=$(mod_field "$cnpg_module@$CNPG_VERSION" Dir)
  [ -d "$dir" ] || die "could not download $cnpg_module@$CNPG_VERSION"
  if [ ! -x "$cnpg_cache/manager" ]; then
    commit=$(mod_field "$cnpg_module@$CNPG_VERSION" Hash || true)
    timed_build cloudnative-pg go_build "$dir" "$cnpg_cache/manager" ./cmd/manager \
      "-s -w -X $cnpg_module/pkg/versions.buildVersion=${CNPG_VERSION#v} -X $cnpg_module/pkg/versions.buildCommit=${commit:-none} -X $cnpg_module/pkg/versions.buildDate=$(date -u +%Y-%m-%d)"
  fi
  [ -s "$dir/releases/cnpg-${CNPG_VERSION#v}.yaml" ] || die "$cnpg_module@$CNPG_VERSION has no releases/cnpg-${CNPG_VERSION#v}.yaml"
  install -m 0644 "$dir/releases/cnpg-${CNPG_VERSION#v}.yaml" "$cnpg_manifest.tmp"
  mv "$cnpg_manifest.tmp" "$cnpg_manifest"
}

# The reference scripts/images.sh loads one of our images as (the first, should the examples
# name several).
cnpg_operand_ref() { # image
  local line refs=()
  line=$("$(dirname "${BASH_SOURCE[0]}")/images.sh" list "$1" | awk -v image="$1" '$1 == image { $1 = ""; print }')
  read -r -a refs <<<"$line"
  [ ${#refs[@]} -gt 0 ] || die "scripts/images.sh list $1 names no reference for the $1 image"
  [ ${#refs[@]} -eq 1 ] || log "the $1 image is loaded as ${refs[*]}; CloudNativePG defaults to ${refs[0]}"
  echo "${refs[0]}"
}

cnpg_objects() {
  cnpg_enabled || return 0
  local dir=$state/cnpg image postgres_ref pgbouncer_ref
  # The Deployment's (the CRDs' schemas have `image:` keys too).
  image=$(awk '/^kind:/ { kind = $2 } kind == "Deployment" && $1 == "image:" { print $2; exit }' "$cnpg_manifest")
  [ -n "$image" ] || die "no image in $cnpg_manifest"
  load_node_image cloudnative-pg "$cnpg_cache/manager" "$image"
  postgres_ref=$(cnpg_operand_ref postgres)
  pgbouncer_ref=$(cnpg_operand_ref pgbouncer)
  # kustomize reads only below its directory: the manifest is copied beside the patch.
  rm -rf "$dir"; mkdir -p "$dir"
  install -m 0644 "$cnpg_manifest" "$dir/cnpg.yaml"
  cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [cnpg.yaml]
patches:
- path: manager.yaml
EOF
  # A strategic merge: the containers and their env are merged by name, so the manifest's
  # args and other env stay; resources are replaced whole (no CPU limit: a throttled
  # operator answers its webhooks late, and the API server gives them 10 s).
  cat >"$dir/manager.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $cnpg_deployment
  namespace: $cnpg_namespace
spec:
  template:
    spec:
      containers:
      - name: manager
        imagePullPolicy: IfNotPresent
        env:
        - { name: POSTGRES_IMAGE_NAME, value: "$postgres_ref" }
        - { name: PGBOUNCER_IMAGE_NAME, value: "$pgbouncer_ref" }
        # Its measured use (27 MiB resident) plus a little: the node's 1 GiB also holds the
        # default Shortener scaled to 5 app pods beside the monitoring, which 64Mi overflowed.
        resources:
          \$patch: replace
          requests: { cpu: 20m, memory: 32Mi }
          limits: { memory: 200Mi }
        # 30 x 5 s: on a loaded machine the first start (certificates, CRD checks) is slow.
        startupProbe:
          failureThreshold: 30
EOF
  "$bin/kubectl" kustomize "$dir" >"$dir/rendered.yaml" || die "rendering $dir with kustomize failed"
  grep -qF "$postgres_ref" "$dir/rendered.yaml" || die "the patch of $dir/manager.yaml did not apply"
  # Server-side: the CRDs are larger than client-side apply's annotation allows.
  kc apply --server-side --force-conflicts -f "$dir/rendered.yaml" >/dev/null
  echo "$postgres_ref" >"$dir/postgres-image"
}

# Every webhook of a configuration has the CA the operator wrote in.
cnpg_ca_bundles_set() { # kind name
  local bundles
  bundles=$(kc get "$1" "$2" -o jsonpath='{range .webhooks[*]}{.clientConfig.caBundle}{"\n"}{end}') || return 1
  [ -n "$bundles" ] && ! grep -qx '' <<<"$bundles"
}

# Available, both CA bundles written, and a Cluster passes both webhooks for real: a server-side
# dry run goes through the API server, the Service and the operator's webhook server, and
# the defaulting webhook fills in our postgres image.
cnpg_ready() {
  cnpg_enabled || return 0
  [ "$(kc -n "$cnpg_namespace" get deployment "$cnpg_deployment" \
    -o jsonpath='{.status.conditions[?(@.type=="Available")].status} {.status.updatedReplicas}/{.spec.replicas}')" = "True 1/1" ] &&
    cnpg_ca_bundles_set validatingwebhookconfiguration cnpg-validating-webhook-configuration &&
    cnpg_ca_bundles_set mutatingwebhookconfiguration cnpg-mutating-webhook-configuration &&
    [ "$(kc -n "$cnpg_namespace" create --dry-run=server -o jsonpath='{.spec.imageName}' -f - <<EOF
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: webhook-check
spec:
  instances: 1
  storage: { size: 1Gi }
EOF
)" = "$(<"$state/cnpg/postgres-image")" ]
}
