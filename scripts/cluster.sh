#!/usr/bin/env bash
# A real Kubernetes control plane on this one machine, for testing the operator
# against a genuine API server (RBAC, admission, CEL validation, garbage
# collection) where Docker, kind and prebuilt release binaries are unavailable.
#
#   export KUBECONFIG=$(scripts/cluster.sh up)  # build once, start, wait; prints the admin kubeconfig
#   eval "$(scripts/cluster.sh env)"            # KUBECONFIG, PATH with kubectl and helm; with the
#                                               # real node also SHORTENER_INGRESS_URL, SHORTENER_GATEWAY_URL,
#                                               # SHORTENER_INGRESS_TLS_URL, SHORTENER_PROMETHEUS_URL
#   scripts/cluster.sh status                   # what runs (exit 1 if anything is down)
#   scripts/cluster.sh down                     # stop everything, remove the state directory
#   scripts/cluster.sh bin | build [--real-node] # the binaries' directory / just build them
#   scripts/cluster.sh up --real-node           # a real node instead of kwok (root; see cluster-node.sh)
#
# Everything is compiled from the Go module proxy (no release downloads): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm,
# cached in ${SHORTENER_CLUSTER_CACHE:-${XDG_CACHE_HOME:-~/.cache}/shortener-cluster}/<versions>/bin.
# By default there is no kubelet and no container runtime: kwok plays one fake
# node and moves scheduled pods to Running/Ready, so no image is ever pulled or
# run. With --real-node a kubelet, containerd, CNI, kube-proxy and CoreDNS run
# a real node instead (scripts/cluster-node.sh; images: scripts/images.sh), with its
# monitoring (scripts/cluster-monitoring.sh) and CloudNativePG's operator
# (scripts/cluster-cnpg.sh; SHORTENER_CNPG=0 leaves that out).
# Everything listens on 127.0.0.1 only (with --real-node: also on the node's
# address, on a dummy interface made for it); state and logs are in
# ${SHORTENER_CLUSTER_DIR:-/tmp/shortener-cluster}.
set -euo pipefail

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Versions. etcd is the version this Kubernetes release pins in its go.mod;
# kwok and helm are the releases built on matching Kubernetes libraries.
# Changing any of them changes the cache key, so a bump rebuilds.
K8S_VERSION=${SHORTENER_CLUSTER_K8S_VERSION:-v1.36.3}
ETCD_VERSION=${SHORTENER_CLUSTER_ETCD_VERSION:-v3.6.8}
KWOK_VERSION=${SHORTENER_CLUSTER_KWOK_VERSION:-v0.8.0}
HELM_VERSION=${SHORTENER_CLUSTER_HELM_VERSION:-v3.22.0}

cache_root=${SHORTENER_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shortener-cluster}
cache=$cache_root/k8s-$K8S_VERSION.etcd-$ETCD_VERSION.kwok-$KWOK_VERSION.helm-$HELM_VERSION
bin=$cache/bin
state=${SHORTENER_CLUSTER_DIR:-/tmp/shortener-cluster}
pki=$state/pki
kubeconfig=$state/kubeconfig

# High loopback ports, away from etcd's 2379/2380, the apiserver's 6443 and the
# 5637x-5643x ports of the test services.
apiserver_port=${SHORTENER_CLUSTER_APISERVER_PORT:-56443}
etcd_port=${SHORTENER_CLUSTER_ETCD_PORT:-56479}
etcd_peer_port=${SHORTENER_CLUSTER_ETCD_PEER_PORT:-56480}
kcm_port=${SHORTENER_CLUSTER_KCM_PORT:-56457}
scheduler_port=${SHORTENER_CLUSTER_SCHEDULER_PORT:-56459}
kwok_port=${SHORTENER_CLUSTER_KWOK_PORT:-56447}
service_cidr=10.96.0.0/16
service_ip=10.96.0.1 # first address of service_cidr: the `kubernetes` Service
pod_cidr=10.244.0.0/16
node_name=kwok-node-0
apiserver_host=127.0.0.1

# Start order; `down` stops them in reverse.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)

# The real node (kubelet, containerd, CNI, kube-proxy, CoreDNS) lives in its own file.
# shellcheck source=scripts/cluster-node.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster-node.sh"
# shellcheck source=scripts/cluster-monitoring.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster-monitoring.sh"
# shellcheck source=scripts/cluster-cnpg.sh
. "$(dirname "${BASH_SOURCE[0]}")/cluster-cnpg.sh"
# `up --real-node` records the mode in the state directory, so that down, status and env
# of the same cluster know it without the flag.
[ ! -f "$state/real-node" ] || real_node_mode

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $*"; fi
}

# A fresh machine may lack some of these; all come from Debian.
ensure_tools() {
  local missing=() cmd pkg
  for cmd in openssl:openssl curl:curl flock:util-linux setsid:util-linux; do
    pkg=${cmd#*:}; cmd=${cmd%%:*}
    command -v "$cmd" >/dev/null || missing+=("$pkg")
  done
  [ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >&2
  fi
}

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------

# These modules need Go 1.26; Debian's golang package is far older. Take the
# first of SHORTENER_CLUSTER_GO, `go` on PATH and /usr/local/go/bin/go that is
# new enough.
go_env() {
  local g v
  GO=
  for g in "${SHORTENER_CLUSTER_GO:-}" "$(command -v go || true)" /usr/local/go/bin/go; do
    [ -x "$g" ] || continue
    v=$("$g" env GOVERSION 2>/dev/null) || continue # go1.26.8
    v=${v#go1.}; v=${v%%.*}
    if [[ $v =~ ^[0-9]+$ ]] && [ "$v" -ge 26 ]; then GO=$g; break; fi
  done
  [ -n "$GO" ] || die "Go 1.26 or newer is needed (looked on PATH and in /usr/local/go/bin)"
  # GOTOOLCHAIN=local: fail clearly instead of fetching another Go toolchain.
  # CGO_ENABLED=0: static binaries, no C toolchain needed.
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
}

# One field of `go mod download -json module@version` (downloading it if needed).
mod_field() { # module@version field
  "$GO" mod download -json "$1" | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}$/\1/p" | head -n1
}

# Runs a build step and records how long it took.
timed_build() { # name command...
  local name=$1 start; shift
  log "building $name"
  start=$(date +%s)
  "$@" >&2 || die "building $name failed"
  log "built $name in $(($(date +%s) - start))s"
  printf '%s %ss\n' "$name" "$(($(date +%s) - start))" >>"$cache/build-times.txt"
}

# Builds into a temporary name renamed only on success, so an interrupted
# build never leaves a half-written binary that later runs would trust.
go_build() { # module-dir output package ldflags
  (cd "$1" && "$GO" build -trimpath -ldflags "$4" -o "$2.tmp" "$3" && mv "$2.tmp" "$2")
}

# k8s.io/kubernetes requires its ~30 staging modules (k8s.io/api, client-go, ...)
# at v0.0.0 and replaces them with ./staging/..., which is not in the module zip.
# A wrapper module replaces each with its published v0.<minor>.<patch> release;
# the list is read from that release's own go.mod, so a version bump needs no edit.
k8s_module() {
  local dir=$cache/src/kubernetes gomod staging=() m args=() tools=()
  [ -f "$dir/.ready" ] && return 0
  rm -rf "$dir"; mkdir -p "$dir"
  gomod=$(mod_field "k8s.io/kubernetes@$K8S_VERSION" GoMod)
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
  mapfile -t staging < <(awk '$1 == "require" { $1 = ""; $0 = $0 }
    $1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)
  [ ${#staging[@]} -gt 0 ] || die "no v0.0.0 staging modules in $gomod"
  log "k8s.io/kubernetes@$K8S_VERSION: ${#staging[@]} staging modules at ${K8S_VERSION/v1./v0.}"
  for m in "${staging[@]}"; do args+=("-replace=$m=$m@${K8S_VERSION/v1./v0.}"); done
  # The version suffix matters: a bare package path would make `go get`
  # upgrade k8s.io/kubernetes to the newest release.
  for m in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    tools+=("k8s.io/kubernetes/cmd/$m@$K8S_VERSION")
  done
  (cd "$dir" && "$GO" mod init shortener.local/cluster/kubernetes 2>/dev/null &&
    "$GO" mod edit "-require=k8s.io/kubernetes@$K8S_VERSION" "${args[@]}" &&
    "$GO" get -tool "${tools[@]}" >&2) || die "preparing the Kubernetes build module failed"
  touch "$dir/.ready"
}

# What the Kubernetes release tooling stamps in, so /version and
# `kubectl version` report the real release instead of v0.0.0.
k8s_ldflags() {
  local major minor commit pkg flags="-s -w" date
  major=${K8S_VERSION#v}; major=${major%%.*}
  minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  commit=$(mod_field "k8s.io/kubernetes@$K8S_VERSION" Hash || true)
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    # The proxy may not know the commit; then leave it empty rather than the
    # source's "$Format:%H$" placeholder.
    flags+=" -X $pkg.gitCommit=$commit"
  done
  printf '%s' "$flags"
}

build_k8s() { # command name under k8s.io/kubernetes/cmd
  [ -x "$bin/$1" ] && return 0
  k8s_module
  timed_build "$1" go_build "$cache/src/kubernetes" "$bin/$1" "k8s.io/kubernetes/cmd/$1" "$(k8s_ldflags)"
}

# etcd's server module (its main package is the etcd binary) carries replace
# directives, so `go install module@version` refuses it; building it as a
# dependency of a wrapper module ignores them.
build_etcd() {
  local dir=$cache/src/etcd
  [ -x "$bin/etcd" ] && return 0
  if [ ! -f "$dir/.ready" ]; then
    rm -rf "$dir"; mkdir -p "$dir"
    (cd "$dir" && "$GO" mod init shortener.local/cluster/etcd 2>/dev/null &&
      "$GO" get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2) ||
      die "preparing the etcd build module failed"
    touch "$dir/.ready"
  fi
  timed_build etcd go_build "$dir" "$bin/etcd" go.etcd.io/etcd/server/v3 "-s -w"
}

# kwok and helm have no replace directives: plain `go install module@version`.
go_install() { # name package@version ldflags
  local name=$1 tmp=$cache/tmp-$1
  [ -x "$bin/$name" ] && return 0
  rm -rf "$tmp"; mkdir -p "$tmp"
  timed_build "$name" env GOBIN="$tmp" "$GO" install -trimpath -ldflags "$3" "$2"
  mv "$tmp/$name" "$bin/$name"; rm -rf "$tmp"
}

# kwok acts only through Stage objects. These are the stages kwok ships as its
# fast defaults (node initialise + lease heartbeat; pod ready/complete/delete),
# taken from the very module version that was built.
kwok_stages() {
  local out=$cache/kwok-stages.yaml dir f
  [ -s "$out" ] && return 0
  dir=$(mod_field "sigs.k8s.io/kwok@$KWOK_VERSION" Dir)/kustomize/stage
  : >"$out.tmp"
  for f in "$dir"/node/fast/*.yaml "$dir"/node/heartbeat-with-lease/*.yaml "$dir"/pod/fast/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    { printf -- '---\n'; cat "$f"; } >>"$out.tmp"
  done
  grep -q '^kind: Stage' "$out.tmp" || die "no kwok stages found under $dir"
  mv "$out.tmp" "$out"
}

built() {
  local b
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
  [ -s "$cache/kwok-stages.yaml" ]
}

build_all() {
  local b start helm_major=${HELM_VERSION%%.*}
  built && return 0
  ensure_tools
  go_env
  mkdir -p "$bin"
  # One build at a time, even across concurrent callers: linking the apiserver
  # takes ~2 GiB and the machine has two cores.
  exec 9>"$cache/.build.lock"
  flock 9
  start=$(date +%s)
  log "building into $bin with $("$GO" version)"
  build_etcd
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do build_k8s "$b"; done
  go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "-s -w"
  go_install helm "helm.sh/helm/$helm_major/cmd/helm@$HELM_VERSION" \
    "-s -w -X helm.sh/helm/$helm_major/internal/version.version=$HELM_VERSION -X helm.sh/helm/$helm_major/internal/version.gitTreeState=clean"
  kwok_stages
  log "binaries ready in $(($(date +%s) - start))s"
  exec 9>&-
}

# ---------------------------------------------------------------------------
# Certificates and kubeconfigs
# ---------------------------------------------------------------------------

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# A certificate signed by the cluster CA. Client certificates carry the
# identity RBAC sees: CN is the user, O the group.
issue() { # name subject extendedKeyUsage [subjectAltName [ca]]
  local name=$1 subj=$2 eku=$3 san=${4:-} ca=${5:-ca} ext
  [ -s "$pki/$name.crt" ] && return 0
  new_key "$pki/$name.key"
  ext="basicConstraints=critical,CA:FALSE"$'\n'"keyUsage=critical,digitalSignature"$'\n'"extendedKeyUsage=$eku"
  [ -z "$san" ] || ext+=$'\n'"subjectAltName=$san"
  openssl req -new -key "$pki/$name.key" -subj "$subj" |
    openssl x509 -req -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -set_serial "0x$(openssl rand -hex 16)" \
      -days 365 -extfile <(printf '%s\n' "$ext") -out "$pki/$name.crt" 2>/dev/null
}

make_pki() {
  mkdir -p "$pki"; chmod 700 "$pki"
  if [ ! -s "$pki/ca.crt" ]; then
    log "generating certificates in $pki"
    new_key "$pki/ca.key"
    openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=shortener-cluster-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$pki/ca.crt"
  fi
  # Service-account tokens: the apiserver signs and verifies them, the
  # controller manager signs the legacy token Secrets.
  if [ ! -s "$pki/sa.pub" ]; then
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
  # etcd's built-in gRPC gateway dials etcd itself with the server certificate,
  # so that certificate must be good for client authentication too.
  issue etcd-server "/CN=etcd-server" serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
  issue etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
  issue kube-apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,${real_node:+IP:$node_ip,}IP:$service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue admin "/O=system:masters/CN=shortener-admin" clientAuth
  issue kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  issue kube-scheduler "/CN=system:kube-scheduler" clientAuth
  # The aggregation layer's front proxy: its own CA, so the apiserver publishes
  # a requestheader CA, which the delegated authentication of the controller
  # manager and the scheduler expects to find.
  if [ ! -s "$pki/front-proxy-ca.crt" ]; then
    new_key "$pki/front-proxy-ca.key"
    openssl req -x509 -new -key "$pki/front-proxy-ca.key" -subj "/CN=shortener-cluster-front-proxy-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$pki/front-proxy-ca.crt"
  fi
  issue front-proxy-client "/CN=front-proxy-client" clientAuth "" front-proxy-ca
  # kwok stands in for kubelets; it gets its own user, bound to a role with
  # what it needs (see bootstrap_objects), not system:masters.
  issue kwok "/CN=shortener-cluster:kwok" clientAuth
}

write_kubeconfig() { # path cert-name
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: shortener
  cluster:
    server: https://$apiserver_host:$apiserver_port
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: shortener
  context:
    cluster: shortener
    user: $2
current-context: shortener
EOF
}

# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

# The pid of a running component. A pid file can outlive its process and pids
# are reused, so it counts only while that pid still runs the same program.
pid_of() { # component
  local f=$state/run/$1.pid pid exe
  [ -s "$f" ] || return 1
  pid=$(<"$f")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [ "${exe##*/}" = "$1" ] || return 1
  alive "$pid" || return 1
  echo "$pid"
}

# Zombies count as gone.
alive() { [ -r "/proc/$1/stat" ] && ! awk '{ exit ($3 == "Z") ? 0 : 1 }' "/proc/$1/stat" 2>/dev/null; }

# Each component runs in its own session (so its own process group, detached
# from the caller's terminal), with all output in its log file: nothing keeps
# the caller's stdout open, so `$(cluster.sh up)` returns.
launch() { # component args...
  local name=$1; shift
  pid_of "$name" >/dev/null && return 0
  log "starting $name"
  printf '==== %s: %s %s\n' "$(date -u +%FT%TZ)" "$name" "$*" >>"$state/logs/$name.log"
  setsid "$(exe_of "$name")" "$@" >>"$state/logs/$name.log" 2>&1 </dev/null 8>&- &
  local pid=$! deadline=$((SECONDS + 10))
  echo "$pid" >"$state/run/$name.pid"
  # Until setsid has exec'd the program, the pid runs setsid: pid_of would call it gone.
  while alive "$pid" && ! pid_of "$name" >/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
}

fail() { # component message
  log "error: $2"
  if [ -f "$state/logs/$1.log" ]; then
    log "last lines of $state/logs/$1.log:"
    tail -n 30 "$state/logs/$1.log" >&2
  fi
  log "components that did start keep running for inspection; stop them with: $0 down"
  exit 1
}

wait_for() { # component timeout-seconds what command...
  local name=$1 deadline=$((SECONDS + $2)) what=$3; shift 3
  until "$@" >/dev/null 2>&1; do
    pid_of "$name" >/dev/null || fail "$name" "$name exited while waiting for $what"
    [ "$SECONDS" -lt "$deadline" ] || fail "$name" "timed out waiting for $what"
    sleep 0.5
  done
}

kc() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

etcd_healthy() {
  curl -sf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/etcd-client.crt" --key "$pki/etcd-client.key" \
    "https://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"'
}
apiserver_ready() {
  curl -sf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://$apiserver_host:$apiserver_port/readyz" >/dev/null
}
# These two serve a self-signed certificate made in memory; /healthz needs no login.
healthz() { curl -skf --max-time 2 "https://127.0.0.1:$1/healthz" >/dev/null; }
kwok_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$kwok_port/healthz" >/dev/null; }
node_ready() {
  [ "$(kc get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

start_etcd() {
  # --unsafe-no-fsync: a throwaway test cluster; skipping fsync makes it fast.
  launch etcd --name=shortener --data-dir="$state/etcd" \
    --listen-client-urls="https://127.0.0.1:$etcd_port" --advertise-client-urls="https://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="shortener=http://127.0.0.1:$etcd_peer_port" \
    --cert-file="$pki/etcd-server.crt" --key-file="$pki/etcd-server.key" \
    --client-cert-auth --trusted-ca-file="$pki/ca.crt" \
    --unsafe-no-fsync --log-level=warn
  wait_for etcd 60 "etcd to become healthy" etcd_healthy
}

start_apiserver() {
  # Default admission plugins stay on (ServiceAccount, NamespaceLifecycle,
  # PodSecurity, ResourceQuota, webhooks, ...). --advertise-address is needed
  # because a loopback-only machine has no default route to guess it from.
  launch kube-apiserver \
    --advertise-address="$apiserver_host" --bind-address="$apiserver_host" --secure-port="$apiserver_port" \
    --etcd-servers="https://127.0.0.1:$etcd_port" --etcd-cafile="$pki/ca.crt" \
    --etcd-certfile="$pki/etcd-client.crt" --etcd-keyfile="$pki/etcd-client.key" \
    --tls-cert-file="$pki/kube-apiserver.crt" --tls-private-key-file="$pki/kube-apiserver.key" \
    --cert-dir="$pki" --client-ca-file="$pki/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$service_cidr" --allow-privileged=true \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
    ${real_node:+"${apiserver_node_args[@]}"}
  wait_for kube-apiserver 120 "the apiserver's /readyz" apiserver_ready
}

# What kwok needs as a stand-in for kubelets, and the fake node it manages
# (selected by its annotation, so kwok never touches any other node).
bootstrap_objects() {
  kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: shortener-cluster:kwok
rules:
- apiGroups: [""]
  resources: [nodes, pods]
  verbs: [get, list, watch, update, patch, delete]
- apiGroups: [""]
  resources: [nodes/status, pods/status]
  verbs: [update, patch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, update, patch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shortener-cluster:kwok
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: shortener-cluster:kwok
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: shortener-cluster:kwok
---
apiVersion: v1
kind: Node
metadata:
  name: $node_name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $node_name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
EOF
}

start_controllers() {
  # Every controller that is on by default (garbage collector, deployment,
  # replicaset, statefulset, namespace, serviceaccount and its token, node
  # lifecycle, ...), each with its own ServiceAccount's credentials so RBAC
  # applies to them as in a real cluster.
  launch kube-controller-manager \
    --kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --controllers='*' --use-service-account-credentials=true \
    --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$service_cidr" --cluster-cidr="$pod_cidr" --allocate-node-cidrs=false \
    --flex-volume-plugin-dir="$state/flexvolume" --leader-elect=false
  # A single scheduler: leader election would only delay the start.
  launch kube-scheduler \
    --kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$scheduler_port" --leader-elect=false
  wait_for kube-controller-manager 60 "the controller manager's /healthz" healthz "$kcm_port"
  wait_for kube-scheduler 60 "the scheduler's /healthz" healthz "$scheduler_port"
  [ -z "$real_node" ] || return 0
  launch kwok \
    --kubeconfig="$state/kwok.kubeconfig" --config="$cache/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 --cidr=10.244.0.1/24 --node-lease-duration-seconds=40 \
    --server-address="127.0.0.1:$kwok_port"
  wait_for kwok 60 "kwok's /healthz" kwok_healthy
}

all_running() {
  local c
  for c in "${components[@]}"; do pid_of "$c" >/dev/null || return 1; done
}

up() {
  local start=$SECONDS
  build_all
  [ -z "$real_node" ] || build_node
  ensure_tools
  if all_running && apiserver_ready; then echo "$kubeconfig"; return 0; fi
  if [ -n "$real_node" ]; then
    # A half-running real node is stopped and started anew. After a crash that killed every
    # daemon, node_prepare cleans the host of what the pods left (processes, mounts,
    # namespaces, rules) and the cluster's objects come back, as after a reboot.
    if [ -n "$(stragglers)" ]; then log "stopping what is left of an earlier cluster"; down; fi
    node_prepare
  elif [ -f "$state/real-node" ]; then
    die "a real-node cluster's state is in $state: stop it with: $0 down"
  fi
  mkdir -p "$state/run" "$state/logs"
  mkdir -p "$state/etcd" && chmod 700 "$state/etcd" # etcd insists on a private data directory
  make_pki
  [ -z "$real_node" ] || node_pki
  write_kubeconfig "$kubeconfig" admin
  local c
  for c in kube-controller-manager kube-scheduler kwok; do write_kubeconfig "$state/$c.kubeconfig" "$c"; done
  start_etcd
  start_apiserver
  if [ -n "$real_node" ]; then node_bootstrap_objects; else bootstrap_objects; fi
  start_controllers
  wait_for kube-controller-manager 60 "the default ServiceAccount" kc -n default get serviceaccount default
  if [ -n "$real_node" ]; then
    start_node
    wait_for kubelet 120 "node $node_name to become Ready" node_ready
    log "control plane $K8S_VERSION and node $node_name up in $((SECONDS - start))s (logs: $state/logs)"
  else
    wait_for kwok 90 "node $node_name to become Ready" node_ready
    log "control plane $K8S_VERSION up in $((SECONDS - start))s (logs: $state/logs)"
  fi
  echo "$kubeconfig"
}

# Processes of ours that lost their pid file (say, a state directory removed by
# hand): one of our binaries with this state directory on its command line.
stragglers() {
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    exe=${exe% (deleted)}
    case " ${components[*]} " in *" ${exe##*/} "*) ;; *) continue ;; esac
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$state/" || continue
    echo "${p#/proc/}"
  done
}

# Stops processes (each the leader of its own process group) and waits until
# they have exited: SIGTERM to the whole group, SIGKILL after 30 seconds.
stop_pids() { # pid...
  local pid deadline=$((SECONDS + 30)) left
  for pid in "$@"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  while :; do
    left=()
    for pid in "$@"; do alive "$pid" && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "still running 30s after SIGTERM, killing: ${left[*]}"
      for pid in "${left[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
      deadline=$((SECONDS + 10))
    fi
    sleep 0.2
  done
}

down() {
  local c pid clients=() all=()
  # The real node first (also what a crashed real node left behind).
  if node_leftovers; then real_node_mode; node_down; fi
  # Clients of the apiserver first, together; then the apiserver's store.
  for c in kwok kube-scheduler kube-controller-manager kube-apiserver; do
    if pid=$(pid_of "$c"); then log "stopping $c (pid $pid)"; clients+=("$pid"); fi
  done
  [ ${#clients[@]} -eq 0 ] || stop_pids "${clients[@]}"
  all=("${clients[@]}")
  if pid=$(pid_of etcd); then log "stopping etcd (pid $pid)"; stop_pids "$pid"; all+=("$pid"); fi
  for pid in $(stragglers); do
    log "stopping $(readlink "/proc/$pid/exe" 2>/dev/null || echo process) (pid $pid, no pid file)"
    stop_pids "$pid"; all+=("$pid")
  done
  pid=$(stragglers)
  [ -z "$pid" ] || die "still running: $pid"
  # Exited processes stay listed as zombies until init reaps them, which can
  # take a couple of seconds here; wait so that `pgrep` right after shows nothing.
  local deadline=$((SECONDS + 5))
  for pid in "${all[@]}"; do
    while [ -e "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  done
  rm -rf "$state"
  log "stopped; removed $state"
}

status() {
  local c pid rc=0
  for c in "${components[@]}"; do
    if pid=$(pid_of "$c"); then
      printf '%-24s running (pid %s, %s MiB RSS)\n' "$c" "$pid" "$(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$pid/status")"
    else
      printf '%-24s stopped\n' "$c"; rc=1
    fi
  done
  if [ -s "$pki/admin.crt" ] && apiserver_ready; then
    printf '%-24s ready (https://%s:%s, kubeconfig %s)\n' apiserver "$apiserver_host" "$apiserver_port" "$kubeconfig"
  else
    printf '%-24s not ready\n' apiserver; rc=1
  fi
  return "$rc"
}

usage() {
  sed -n '6,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# One `up` or `down` at a time; a second caller waits. The daemons must not
# inherit this descriptor (see launch), or the lock would outlive the command.
serialize() {
  mkdir -p "$cache_root"
  exec 8>"$cache_root/.up-down.lock"
  flock 8
}

main() {
  case ${2:-} in
    --real-node) real_node_mode ;;
    '') ;;
    *) usage ;;
  esac
  case ${1:-} in
    up) serialize; up ;;
    down) serialize; down ;;
    status) status ;;
    build) build_all; [ -z "$real_node" ] || build_node ;;
    bin) build_all; echo "$bin" ;;
    node-bin) build_all; build_node; echo "$node_bin" ;;
    env)
      build_all
      all_running || log "the cluster is not running; start it with: $0 up"
      printf 'export KUBECONFIG=%q\n' "$kubeconfig"
      if [ -n "$real_node" ] || [ -f "$state/real-node" ]; then
        printf 'export CONTAINERD_ADDRESS=%q\n' "$containerd_sock"
        printf 'export SHORTENER_INGRESS_URL=http://127.0.0.1:%s\n' "$ingress_port"
        printf 'export SHORTENER_GATEWAY_URL=http://127.0.0.1:%s\n' "$gateway_port"
        printf 'export SHORTENER_INGRESS_TLS_URL=https://127.0.0.1:%s\n' "$ingress_tls_port"
        printf 'export SHORTENER_PROMETHEUS_URL=%s\n' "$prometheus_url"
        # shellcheck disable=SC2016 # $PATH is for the caller's eval to expand
        printf 'export PATH=%q:%q:"$PATH"\n' "$bin" "$node_bin"
      else
        # shellcheck disable=SC2016 # $PATH is for the caller's eval to expand
        printf 'export PATH=%q:"$PATH"\n' "$bin"
      fi
      ;;
    *) usage ;;
  esac
}

main "$@"
