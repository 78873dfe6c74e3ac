#!/usr/bin/env bash
# OCI images of the stack, built without Docker or a registry, and loaded into the real
# node's containerd (scripts/cluster.sh up --real-node) under the very references the
# operator chart and the operator's defaults use, so `helm install charts/shortener-operator`
# and `kubectl apply -f manifests/examples/minimal.yaml` run them as they are
# (`imagePullPolicy: IfNotPresent` finds them; nothing is pulled).
#
#   scripts/images.sh build [IMAGE...]  # build the image archives (default: all)
#   scripts/images.sh load [IMAGE...]   # build if needed, import into the node's containerd
#   scripts/images.sh list              # each image and the references it is loaded as
#
# Images (see docs/decisions.md for the tools):
#   shortener, operator  our release binaries (cargo build --release) on glibc and libgcc from
#                        Debian's packages, uid 65532, no shell: what docker/app.Dockerfile
#                        and operator/Dockerfile make from distroless/cc
#   postgres, pgbouncer, redis
#                        stand-ins for the public images the operator runs by default,
#                        made with mmdebstrap from Debian packages and honouring the interface
#                        the operator relies on, and postgres and pgbouncer CloudNativePG's
#                        operand interface too (see each builder below)
#   pause                the pod sandbox (scripts/cluster-node.sh builds the program)
#   traefik, coredns, prometheus, prometheus-operator, prometheus-config-reloader,
#   kube-state-metrics, metrics-server
#                        the real node's Ingress/Gateway controller, cluster DNS and
#                        monitoring, from the static binaries scripts/cluster-node.sh and
#                        scripts/cluster-monitoring.sh build (uid 65532, CA certificates);
#                        the node loads them itself, under the reference it names in
#                        SHORTENER_STATIC_IMAGE
#   cloudnative-pg       the real node's CloudNativePG operator (scripts/cluster-cnpg.sh builds
#                        its manager), in the layout of CNPG's own image; loaded the same way
# Archives are cached in ${SHORTENER_IMAGES_CACHE:-~/.cache/shortener-images}, keyed by
# their inputs; a second build of unchanged inputs does nothing.
set -euo pipefail

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SHORTENER_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shortener-images}
containerd_address=${CONTAINERD_ADDRESS:-${SHORTENER_CLUSTER_DIR:-/tmp/shortener-cluster}/containerd/containerd.sock}
target=${CARGO_TARGET_DIR:-$root/target}
mirror=${SHORTENER_IMAGES_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The stand-ins' Debian releases: trixie has PostgreSQL 17 and PgBouncer 1.24 (the versions of
# the public images the operator names); bookworm's Redis 7.0 serves every option it renders.
postgres_suite=trixie
pgbouncer_suite=trixie
redis_suite=bookworm
# Bump when a builder changes what it makes from the same inputs.
builder_version=1

# What `build` and `load` make without arguments; the node loads its add-ons itself.
all_images=(pause shortener operator postgres pgbouncer redis)
# The node's add-ons: static Go binaries the node builds.
addon_images=(traefik coredns prometheus prometheus-operator prometheus-config-reloader kube-state-metrics
  metrics-server cloudnative-pg)

# ---------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------

# A reference as the kubelet asks containerd for it: `redis:7.4-alpine` is
# `docker.io/library/redis:7.4-alpine`.
normalize() {
  local ref=$1 first=${1%%/*}
  if [[ $ref != */* ]]; then ref=docker.io/library/$ref
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then ref=docker.io/$ref; fi
  printf '%s\n' "$ref"
}

operator_binary() { echo "$target/release/shortener-operator"; }

# The images every example Shortener runs, as the operator renders them. Without a release
# build of the operator (a fresh machine starts the real node, and with it CloudNativePG's
# operator configured with these references, before cargo has run), as the committed render
# snapshots record them: the artifacts test keeps those equal to `render` of each example.
rendered_refs() {
  local f
  if [ -x "$(operator_binary)" ]; then
    for f in "$root"/manifests/examples/*.yaml; do "$(operator_binary)" render -f "$f"; done
  else
    cat "$root"/operator/tests/snapshots/artifacts__render-*.snap
  fi | awk '$1 == "image:" || $1 == "-" && $2 == "image:" { print $NF }' | tr -d '"' | sort -u
}

# The operator chart's default image: values' repository, tag defaulting to appVersion.
operator_ref() {
  local chart=$root/charts/shortener-operator repo tag
  repo=$(awk '/^image:/ { in_image = 1; next } in_image && $1 == "repository:" { print $2; exit }' "$chart/values.yaml")
  tag=$(awk '/^image:/ { in_image = 1; next } in_image && $1 == "tag:" { print $2; exit }' "$chart/values.yaml" | tr -d '"')
  [ -n "$tag" ] || tag=$(awk '$1 == "appVersion:" { print $2 }' "$chart/Chart.yaml" | tr -d '"')
  if [ -z "$repo" ] || [ -z "$tag" ]; then die "could not read the operator image from $chart"; fi
  echo "$repo:$tag"
}

is_one_of() { # word list...
  local word=$1 item
  shift
  for item in "$@"; do [ "$item" != "$word" ] || return 0; done
  return 1
}

# References an image is loaded as.
refs_of() {
  local image=$1 ref
  if is_one_of "$image" "${addon_images[@]}"; then
    echo "${SHORTENER_STATIC_IMAGE:?the real node names the image of its $image}"
    return
  fi
  case $image in
    # The sandbox image the node's containerd is configured with (scripts/cluster-node.sh).
    pause) echo "${SHORTENER_PAUSE_IMAGE:-shortener.local/pause:1}" ;;
    operator) normalize "$(operator_ref)" ;;
    *)
      for ref in $(rendered_refs); do
        ref=$(normalize "$ref")
        local repo=${ref%:*}
        case $image:${repo##*/} in
          shortener:shortener | postgres:postgres | pgbouncer:pgbouncer | redis:redis) echo "$ref" ;;
        esac
      done
      ;;
  esac
}

# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------

ensure_tools() {
  local missing=() pair cmd pkg
  for pair in umoci:umoci mmdebstrap:mmdebstrap ctr:containerd dpkg-deb:dpkg; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

key_of() { sha256sum | cut -c1-16; }

# An OCI image archive from one layer (an uncompressed tar of the root filesystem) and its
# configuration (umoci config options). Written under a temporary name, renamed when complete.
assemble() { # out layer.tar tag umoci-config-option...
  local out=$1 layer=$2 tag=$3 work
  shift 3
  work=$(mktemp -d "$cache/work.XXXXXX")
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:$tag"
  umoci raw add-layer --history.created_by "scripts/images.sh" --image "$work/oci:$tag" "$layer"
  umoci config --no-history --image "$work/oci:$tag" --os linux --architecture amd64 "$@"
  umoci gc --layout "$work/oci"
  tar -C "$work/oci" -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

# Files of Debian packages of the host's release (glibc, libgcc: the distroless/cc set),
# unpacked into DIR.
debian_files() { # dir package...
  local dir=$1 debs=$cache/debs pkg deb
  shift
  mkdir -p "$debs"
  (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "$@" >&2) || die "apt-get download $* failed"
  for pkg in "$@"; do
    deb=$(find "$debs" -name "${pkg}_*.deb" -printf '%T@ %p\n' | sort -n | tail -n1 | cut -d' ' -f2)
    dpkg-deb -x "$deb" "$dir"
  done
}

# A Debian root filesystem with the given packages, as a tar, by mmdebstrap. Hooks (shell
# snippets, "$1" the root) may add users before the packages' scripts run and trim after.
debian_rootfs() { # out suite packages essential-hook customize-hook
  mmdebstrap --variant=essential --mode=root --format=tar --include="$3" \
    --aptopt='Acquire::Retries "3"' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --essential-hook="$4" --customize-hook="$5" \
    "$2" "$1.tmp" "$mirror" >&2 || die "mmdebstrap of $3 failed"
  mv "$1.tmp" "$1"
}

# The candidate version of Debian packages in a suite, for cache keys. apt knows the host's
# release; for another one the key is the suite and the build date's week (a rebuild a
# week picks up security updates).
debian_key() { # suite package...
  local suite=$1
  shift
  printf '%s %s %s\n' "$suite" "$*" "$(date -u +%G-%V)"
}

# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------

# Our two binaries on the distroless/cc layout: glibc and libgcc (from Debian's packages),
# CA certificates, /etc/passwd with `nonroot` (65532), a world-writable /tmp. No shell, no
# package manager; the root filesystem is never written (the pods mount it read-only).
build_rust() { # image binary
  local image=$1 binary=$2 out key dir
  [ -x "$binary" ] || die "$binary is missing: cargo build --release -p shortener -p shortener-operator"
  key=$({ echo "$builder_version"; sha256sum "$binary"; dpkg-query -W libc6 libgcc-s1 ca-certificates; } | key_of)
  out=$cache/$image-$key.tar
  [ -s "$out" ] && { echo "$out"; return 0; }
  log "building $image from $binary"
  dir=$(mktemp -d "$cache/rootfs.XXXXXX")
  debian_files "$dir" libc6 libgcc-s1
  rm -rf "$dir/usr/share/doc" "$dir/usr/share/man" "$dir/usr/share/lintian" "$dir/usr/share/locale"
  mkdir -p "$dir/usr/local/bin" "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot"
  install -m 0755 "$binary" "$dir/usr/local/bin/${binary##*/}"
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
  chown 65532:65532 "$dir/home/nonroot"
  tar -C "$dir" --numeric-owner -cf "$dir.tar" .
  assemble "$out" "$dir.tar" latest --config.user 65532:65532 \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.entrypoint "/usr/local/bin/${binary##*/}" --config.cmd "$3" --config.exposedports 8080/tcp
  rm -rf "$dir" "$dir.tar"
  echo "$out"
}

pause_image() {
  local binary out key dir
  binary=${SHORTENER_PAUSE_BINARY:-$("$root/scripts/cluster.sh" node-bin)/pause}
  [ -x "$binary" ] || die "no pause program at $binary"
  key=$({ echo "$builder_version"; sha256sum "$binary"; } | key_of)
  out=$cache/pause-$key.tar
  [ -s "$out" ] && { echo "$out"; return 0; }
  dir=$(mktemp -d "$cache/rootfs.XXXXXX")
  install -m 0755 "$binary" "$dir/pause"
  tar -C "$dir" --numeric-owner --owner=0 --group=0 -cf "$dir.tar" .
  assemble "$out" "$dir.tar" latest --config.user 65535:65535 --config.entrypoint /pause
  rm -rf "$dir" "$dir.tar"
  echo "$out"
}

# A static Go binary of the real node's add-ons as uid 65532, with the CA certificates and a
# writable /tmp; nothing else.
static_image() { # name
  local name=$1 binary=${SHORTENER_STATIC_BINARY:?the real node names the binary} out key dir
  [ -x "$binary" ] || die "no $name binary at $binary"
  key=$({ echo "$builder_version static 2"; sha256sum "$binary"; } | key_of)
  out=$cache/$name-$key.tar
  [ -s "$out" ] && { echo "$out"; return 0; }
  log "building $name from $binary"
  dir=$(mktemp -d "$cache/rootfs.XXXXXX")
  mkdir -p "$dir/usr/local/bin" "$dir/bin" "$dir/etc/ssl/certs" "$dir/tmp"
  install -m 0755 "$binary" "$dir/usr/local/bin/$name"
  # Also where the public images put it: the Prometheus Operator runs its config reloader
  # as /bin/prometheus-config-reloader.
  ln -s "../usr/local/bin/$name" "$dir/bin/$name"
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'nonroot:x:65532:\n' >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
  tar -C "$dir" --numeric-owner --owner=0 --group=0 -cf "$dir.tar" .
  assemble "$out" "$dir.tar" latest --config.user 65532:65532 --config.entrypoint "/usr/local/bin/$name"
  rm -rf "$dir" "$dir.tar"
  echo "$out"
}

# CloudNativePG's operator in the layout of its own image: the manager globs operator/manager_*
# relative to its working directory (/) to serve itself to the instance pods, whose init
# container runs `/manager bootstrap /controller/manager` from this same image; uid 10001, as
# its release manifest runs it, with a passwd entry; CA certificates; a writable /tmp.
cnpg_image() {
  local binary=${SHORTENER_STATIC_BINARY:?the real node names the binary} out key dir
  [ -x "$binary" ] || die "no CloudNativePG manager at $binary"
  key=$({ echo "$builder_version cnpg 1"; sha256sum "$binary"; } | key_of)
  out=$cache/cloudnative-pg-$key.tar
  [ -s "$out" ] && { echo "$out"; return 0; }
  log "building cloudnative-pg from $binary"
  dir=$(mktemp -d "$cache/rootfs.XXXXXX")
  mkdir -p "$dir/operator" "$dir/etc/ssl/certs" "$dir/tmp"
  # amd64: the architecture assemble() declares.
  install -m 0755 "$binary" "$dir/operator/manager_amd64"
  ln -s operator/manager_amd64 "$dir/manager"
  cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\ncnpg:x:10001:10001:cnpg:/nonexistent:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\ncnpg:x:10001:\n' >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
  tar -C "$dir" --numeric-owner --owner=0 --group=0 -cf "$dir.tar" .
  assemble "$out" "$dir.tar" latest --config.user 10001:10001 --config.workingdir / \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --config.entrypoint /manager
  rm -rf "$dir" "$dir.tar"
  echo "$out"
}

# The official postgres image's interface, as the operator uses it: POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB and PGDATA; on an empty PGDATA the entrypoint runs initdb
# as the running uid (999, the image's `postgres`), sets the password (scram-sha-256 for
# network logins), creates the database, then runs `postgres` listening on every address;
# `pg_isready`, `psql` and `sh` on PATH for the probes and the role-setup Job. The root
# filesystem may be read-only: only PGDATA, /var/run/postgresql and /tmp are written.
# It is also a CloudNativePG operand image: CNPG's instance manager (copied in by its init
# container) runs initdb, postgres and pg_* from PATH with a major version the tag names, as
# uid and gid 26 by default (its postgresUID/postgresGID), and initdb refuses a uid without a
# passwd entry: `cnpg` is uid 26 (gid 26 is Debian's `tape` already, which serves; the name
# does not matter, CNPG passes --username postgres and maps peer logins from whatever the
# running user is called).
postgres_image() {
  local major=17 out key entrypoint
  entrypoint=$root/scripts/images/postgres-entrypoint.sh
  # "cnpg": the builder that added CloudNativePG's user (older archives lack it).
  key=$({ echo "$builder_version cnpg"; debian_key "$postgres_suite" "postgresql-$major"; sha256sum "$entrypoint"; } | key_of)
  out=$cache/postgres-$key.tar
  [ -s "$out" ] && { echo "$out"; return 0; }
  log "building postgres ($postgres_suite's postgresql-$major)"
  debian_rootfs "$cache/postgres-rootfs.tar" "$postgres_suite" "postgresql-$major" \
    "$(users_hook postgres 999 /var/lib/postgresql)
     $(users_hook cnpg 26 /var/lib/postgresql)
     mkdir -p \"\$1/etc/postgresql-common/createcluster.d\"
     echo 'create_main_cluster = false' >\"\$1/etc/postgresql-common/createcluster.d/no-main-cluster.conf\"" \
    "install -m 0755 '$entrypoint' \"\$1/usr/local/bin/docker-entrypoint.sh\"
     mkdir -p \"\$1/var/lib/postgresql/data\" \"\$1/var/run/postgresql\"
     chown -R 999:999 \"\$1/var/lib/postgresql\" \"\$1/var/run/postgresql\"
     chmod 2777 \"\$1/var/run/postgresql\"
     $(trim_hook)"
  assemble "$out" "$cache/postgres-rootfs.tar" latest --config.user 999:999 \
    --config.env "PATH=/usr/lib/postgresql/$major/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
    --config.env PG_MAJOR=$major --config.env LANG=C.UTF-8 \
    --config.env PGDATA=/var/lib/postgresql/data \
    --config.entrypoint /usr/local/bin/docker-entrypoint.sh --config.cmd postgres \
    --config.exposedports 5432/tcp --config.stopsignal SIGINT --config.volume /var/lib/postgresql/data
  rm -f "$cache/postgres-rootfs.tar"
  echo "$out"
}

# The operator runs `pgbouncer /etc/pgbouncer/pgbouncer.ini` (its own config and userlist
# mounted there) as uid 70, the public image's `postgres`; logs go to stderr, no pid file,
# no Unix socket, so the root filesystem may be read-only.
# It is also a CloudNativePG operand image: a Pooler's pod runs CNPG's instance manager (copied
# in by its init container), which execs the hard-coded /usr/bin/pgbouncer as uid 998, gid 996
# (those of CNPG's own pgbouncer image): Debian installs it in /usr/sbin, hence a link, and
# `pgbouncer` is 998/996.
pgbouncer_image() {
  local out key
  # "cnpg": the builder that added CloudNativePG's user and path (older archives lack them).
  key=$({ echo "$builder_version cnpg"; debian_key "$pgbouncer_suite" pgbouncer; } | key_of)
  out=$cache/pgbouncer-$key.tar
  [ -s "$out" ] && { echo "$out"; return 0; }
  log "building pgbouncer ($pgbouncer_suite's pgbouncer)"
  debian_rootfs "$cache/pgbouncer-rootfs.tar" "$pgbouncer_suite" pgbouncer \
    "$(users_hook postgres 70 /var/lib/postgresql)
     $(users_hook pgbouncer 998 /nonexistent 996)" \
    "[ -e \"\$1/usr/bin/pgbouncer\" ] || ln -s ../sbin/pgbouncer \"\$1/usr/bin/pgbouncer\"
     $(trim_hook)"
  assemble "$out" "$cache/pgbouncer-rootfs.tar" latest --config.user 70:70 \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
    --config.entrypoint pgbouncer --config.cmd /etc/pgbouncer/pgbouncer.ini --config.exposedports 6432/tcp
  rm -f "$cache/pgbouncer-rootfs.tar"
  echo "$out"
}

# The operator runs `redis-server /etc/redis/redis.conf` (its config mounted there, which
# includes the password file) as uid 999, the public image's `redis`, with /data as the
# working directory, and probes with `redis-cli ping` (password from REDISCLI_AUTH).
redis_image() {
  local out key
  key=$({ echo "$builder_version"; debian_key "$redis_suite" redis-server; } | key_of)
  out=$cache/redis-$key.tar
  [ -s "$out" ] && { echo "$out"; return 0; }
  log "building redis ($redis_suite's redis-server)"
  debian_rootfs "$cache/redis-rootfs.tar" "$redis_suite" redis-server \
    "$(users_hook redis 999 /var/lib/redis)" \
    "mkdir -p \"\$1/data\" && chown 999:999 \"\$1/data\"
     $(trim_hook)"
  assemble "$out" "$cache/redis-rootfs.tar" latest --config.user 999:999 \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin --config.workingdir /data \
    --config.entrypoint redis-server --config.exposedports 6379/tcp
  rm -f "$cache/redis-rootfs.tar"
  echo "$out"
}

# An essential-hook adding a system user (and its group, gid = uid unless given) with the
# public image's uid before the packages' maintainer scripts create one with whatever uid
# comes next. A gid Debian's base system already names keeps that name.
users_hook() { # name uid home [gid]
  local gid=${4:-$2}
  printf '%s\n' \
    "echo '$1:x:$2:$gid::$3:/usr/sbin/nologin' >>\"\$1/etc/passwd\"" \
    "echo '$1:*:20000:0:99999:7:::' >>\"\$1/etc/shadow\"" \
    "grep -q '^[^:]*:[^:]*:$gid:' \"\$1/etc/group\" || {
       echo '$1:x:$gid:' >>\"\$1/etc/group\"
       echo '$1:*::' >>\"\$1/etc/gshadow\"
     }"
}

# What no container needs: apt's lists and caches, documentation, the daemons' init scripts.
trim_hook() {
  echo "rm -rf \"\$1\"/var/lib/apt/lists/* \"\$1\"/var/cache/apt/* \"\$1\"/usr/share/doc \"\$1\"/usr/share/man \"\$1\"/etc/init.d \"\$1\"/var/log/*.log"
}

build_one() { # image; prints the archive
  mkdir -p "$cache"
  case $1 in
    pause) pause_image ;;
    shortener) build_rust shortener "$target/release/shortener" serve ;;
    operator) build_rust operator "$(operator_binary)" run ;;
    postgres) postgres_image ;;
    pgbouncer) pgbouncer_image ;;
    redis) redis_image ;;
    cloudnative-pg) cnpg_image ;;
    *)
      is_one_of "$1" "${addon_images[@]}" || die "unknown image $1 (one of: ${all_images[*]} ${addon_images[*]})"
      static_image "$1"
      ;;
  esac
}

load_one() { # image
  local archive ref refs=() start=$SECONDS
  archive=$(build_one "$1")
  mapfile -t refs < <(refs_of "$1")
  [ ${#refs[@]} -gt 0 ] || die "no reference to load $1 as"
  for ref in "${refs[@]}"; do
    # The archive's single manifest is tagged `latest`; --base-name makes it REPO:latest,
    # then the reference the cluster uses is that image under its real name.
    ctr --address "$containerd_address" --namespace k8s.io images import --base-name "${ref%:*}" \
      "$archive" >/dev/null || die "importing $archive as $ref failed"
    if [ "${ref%:*}:latest" != "$ref" ]; then
      ctr --address "$containerd_address" --namespace k8s.io images tag --force "${ref%:*}:latest" "$ref" >/dev/null
      ctr --address "$containerd_address" --namespace k8s.io images rm "${ref%:*}:latest" >/dev/null
    fi
    log "loaded $1 as $ref ($((SECONDS - start))s)"
  done
}

main() {
  local cmd=${1:-} image images=()
  shift || true
  images=("$@")
  [ ${#images[@]} -gt 0 ] || images=("${all_images[@]}")
  case $cmd in
    build)
      ensure_tools
      for image in "${images[@]}"; do build_one "$image" >/dev/null; done
      ;;
    load)
      ensure_tools
      [ -S "$containerd_address" ] || die "no containerd at $containerd_address: start the real node with scripts/cluster.sh up --real-node"
      for image in "${images[@]}"; do load_one "$image"; done
      ;;
    list)
      for image in "${images[@]}"; do printf '%-10s %s\n' "$image" "$(refs_of "$image" | paste -sd' ')"; done
      ;;
    *) sed -n '8,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"
