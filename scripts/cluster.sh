#!/usr/bin/env bash
# A real Kubernetes control plane on this one machine, for testing the operator
# against a genuine API server (RBAC, admission, CEL validation, garbage
# collection) where Docker, kind and prebuilt release binaries are unavailable.
#
#   scripts/cluster.sh bin | build              # the binaries' directory / just build them
#
# Everything is compiled from the Go module proxy (no release downloads): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm,
# cached in ${SHORTENER_CLUSTER_CACHE:-${XDG_CACHE_HOME:-~/.cache}/shortener-cluster}/<versions>/bin.
# There is no kubelet and no container runtime: kwok plays one fake node and
# moves scheduled pods to Running/Ready, so no image is ever pulled or run.
# Everything listens on 127.0.0.1 only; state and logs are in
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
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)

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

# Debian's golang package is far older than these modules need, so use the
# toolchain installed under /usr/local/go (or whatever `go` is on PATH).
go_env() {
  if command -v go >/dev/null; then GO=$(command -v go)
  elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
  else die "Go 1.26 or newer is needed (expected at /usr/local/go/bin/go)"; fi
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
    [ -z "$commit" ] || flags+=" -X $pkg.gitCommit=$commit"
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

usage() {
  sed -n '6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  case ${1:-} in
    build) build_all ;;
    bin) build_all; echo "$bin" ;;
    *) usage ;;
  esac
}

main "$@"
