# shellcheck shell=bash disable=SC2034,SC2154 # sourced by cluster.sh, sharing its variables
# The real node of `scripts/cluster.sh up --real-node`, sourced by cluster.sh (it uses that
# script's variables and helpers: state, pki, bin, launch, wait_for, issue, kc, ...).
#
# One node, `shortener-node`, that really runs containers:
#   - containerd and runc from Debian (installed when missing), with their own root, state,
#     socket and CNI configuration under the state directory;
#   - CNI from Debian's containernetworking-plugins: a bridge (hairpin mode) with host-local
#     addresses, portmap and loopback; the pod network stays on this host;
#   - kubelet and kube-proxy (nftables mode) built from the control plane's Kubernetes module;
#   - CoreDNS built from the Go module proxy, run as a pod in kube-system labelled
#     `k8s-app: kube-dns` behind the `kube-dns` Service, as clusters run it (NetworkPolicies
#     that admit DNS name those pods), so pods resolve `*.svc.cluster.local`;
#   - a pause image built here (a static Go program that sleeps and reaps);
#   - a default StorageClass of local volumes under the state directory.
# The API server binds and advertises the node's address, on a dummy interface made for it
# (pods reach it through the `kubernetes` Service; nothing is routed off the host).
#
# Allocatable for pods is 1 CPU and 1 GiB, the size of the smallest droplet: the rest of the
# machine is `systemReserved`. The node's own daemons (kubelet, containerd, kube-proxy, CoreDNS)
# run outside the pods' cgroup, so they do not take from that budget.
#
# `down` stops all of it and puts the host back: processes, mounts, network namespaces, the
# bridge and the dummy interface, nftables/iptables rules, cgroups, the paths the kubelet and
# containerd write outside their roots, and the sysctls the kubelet and the CNI plugins change.
# It also cleans what a crashed run left, and `up --real-node` calls it first for that reason.

CRICTL_VERSION=${SHORTENER_CLUSTER_CRICTL_VERSION:-v1.36.0}
COREDNS_VERSION=${SHORTENER_CLUSTER_COREDNS_VERSION:-v1.14.2}
# The pause program is ours: bump this when pause.go changes.
PAUSE_VERSION=1
# The add-ons: the Ingress and Gateway API controller (run as a pod) and the NetworkPolicy
# enforcer (a node daemon). See docs/decisions.md for why these two.
TRAEFIK_VERSION=${SHORTENER_CLUSTER_TRAEFIK_VERSION:-v3.6.12}
KUBE_ROUTER_VERSION=${SHORTENER_CLUSTER_KUBE_ROUTER_VERSION:-v2.1.0}

node_cache=${cache_root:?}/node.crictl-$CRICTL_VERSION.coredns-$COREDNS_VERSION.pause-$PAUSE_VERSION
node_bin=$node_cache/bin
addons_cache=$cache_root/addons.traefik-$TRAEFIK_VERSION.kube-router-$KUBE_ROUTER_VERSION
addons_bin=$addons_cache/bin
real_node_name=shortener-node
# A private address, only on the dummy interface below: the API server's, the kubelet's and
# CoreDNS's. Away from the pod (10.244/16) and service (10.96/16) ranges.
node_ip=${SHORTENER_CLUSTER_NODE_IP:-10.200.0.1}
node_iface=shrt-node0
cni_bridge=shrt-cni0
cni_network=shortener
pod_subnet=10.244.0.0/24
pod_gateway=10.244.0.1
dns_ip=10.96.0.10
kubelet_port=${SHORTENER_CLUSTER_KUBELET_PORT:-56450}
kubelet_healthz_port=${SHORTENER_CLUSTER_KUBELET_HEALTHZ_PORT:-56448}
proxy_healthz_port=${SHORTENER_CLUSTER_PROXY_HEALTHZ_PORT:-56446}
proxy_metrics_port=${SHORTENER_CLUSTER_PROXY_METRICS_PORT:-56449}
# Where the Ingress controller's two entry points are published on the host (loopback only):
# Ingresses of class nginx on the first, the shared Gateway's HTTP listener on the second.
ingress_port=${SHORTENER_CLUSTER_INGRESS_PORT:-56480}
gateway_port=${SHORTENER_CLUSTER_GATEWAY_PORT:-56481}
# HTTPS for Ingresses with a `tls` section, with the certificate of their Secret.
ingress_tls_port=${SHORTENER_CLUSTER_INGRESS_TLS_PORT:-56482}
# The namespace the controller runs in is the one the Shortener's NetworkPolicy admits by
# default (spec.networkPolicy.ingressControllerNamespaceSelector).
ingress_namespace=ingress-nginx
traefik_image=shortener.local/traefik:$TRAEFIK_VERSION
coredns_image=shortener.local/coredns:$COREDNS_VERSION
# The kubelet's cgroupRoot, in every cgroup v1 hierarchy: everything a pod runs is below it.
cgroup_root=shortener-node
pause_image=shortener.local/pause:$PAUSE_VERSION
containerd_sock=${state:?}/containerd/containerd.sock
local_volumes=6 # of each StorageClass
# What the kubelet (and the bridge plugin, and kube-proxy) may change; saved before the first
# start, restored by `down`.
node_sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  net.ipv4.conf.all.route_localnet net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# Written outside their roots whatever their flags (the kubelet's device-plugin socket
# directory and container-log links, containerd's shim sockets, the CNI plugins' cache,
# the runtime's network namespaces); removed by `down` when `up` created them.
node_host_paths=(/var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/cni /run/netns
  /var/lib/kube-router)

real_node=
apiserver_node_args=()

# Switches the rest of cluster.sh to the real node.
real_node_mode() {
  real_node=1
  apiserver_host=$node_ip
  node_name=$real_node_name
  components=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy kube-router)
  # Logs and exec through the kubelet's InternalIP, with a client certificate, checking the
  # kubelet's serving certificate against the cluster CA.
  apiserver_node_args=(
    --kubelet-preferred-address-types=InternalIP
    --kubelet-client-certificate="$pki/kube-apiserver-kubelet-client.crt"
    --kubelet-client-key="$pki/kube-apiserver-kubelet-client.key"
    --kubelet-certificate-authority="$pki/ca.crt"
  )
}

exe_of() {
  case $1 in
    containerd) command -v containerd ;;
    coredns | crictl | pause) echo "$node_bin/$1" ;;
    kube-router | traefik) echo "$addons_bin/$1" ;;
    *) echo "$bin/$1" ;;
  esac
}

need_root() { [ "$(id -u)" -eq 0 ] || die "the real node needs root (containers, network, cgroups)"; }

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------

# Debian packages: the runtime, the CNI plugins and the tools the kubelet, kube-proxy and
# `down` call. Installed once; a second run finds them.
ensure_node_packages() {
  local missing=() pair cmd pkg
  for pair in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
    nft:nftables iptables:iptables ipset:ipset conntrack:conntrack ip:iproute2 umoci:umoci mmdebstrap:mmdebstrap; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    if [[ $cmd == /* ]]; then [ -e "$cmd" ] || missing+=("$pkg")
    else command -v "$cmd" >/dev/null || missing+=("$pkg"); fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
  # Debian's package starts its own containerd where systemd runs; ours is separate
  # (its own socket and root), so that one may keep running.
}

node_built() {
  local b
  for b in kubelet kube-proxy; do [ -x "$bin/$b" ] || return 1; done
  for b in crictl coredns pause; do [ -x "$node_bin/$b" ] || return 1; done
  for b in traefik kube-router; do [ -x "$addons_bin/$b" ] || return 1; done
  monitoring_built && cnpg_built
}

# The kubelet and kube-proxy come from the control plane's wrapper module; their packages
# need go.sum entries the control plane's did not, hence one `go get` of both.
kubelet_module() {
  local dir=$cache/src/kubernetes
  [ -f "$dir/.node-ready" ] && return 0
  k8s_module
  (cd "$dir" && "$GO" get -tool "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-proxy@$K8S_VERSION" >&2) || die "adding the kubelet to the Kubernetes build module failed"
  touch "$dir/.node-ready"
}

node_go_install() { # name package@version ldflags
  local name=$1 tmp=$node_cache/tmp-$1
  [ -x "$node_bin/$name" ] && return 0
  rm -rf "$tmp"; mkdir -p "$tmp"
  timed_build "$name" env GOBIN="$tmp" "$GO" install -trimpath -ldflags "$3" "$2"
  mv "$tmp/$name" "$node_bin/$name"; rm -rf "$tmp"
}

# The pod sandbox's process: holds the pod's namespaces, reaps orphans, exits on SIGTERM.
build_pause() {
  local dir=$node_cache/src/pause
  [ -x "$node_bin/pause" ] && return 0
  rm -rf "$dir"; mkdir -p "$dir"
  cat >"$dir/pause.go" <<'EOF'
// pause holds a pod's namespaces: it sleeps, reaps the orphans it inherits as the pod's
// first process, and exits on SIGINT or SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF
  printf 'module shortener.local/cluster/pause\n\ngo 1.26\n' >"$dir/go.mod"
  timed_build pause go_build "$dir" "$node_bin/pause" . "-s -w"
}

# Traefik's go.mod has `replace` lines, which `go install` refuses: it is built in its own
# module directory instead. kube-router installs as any module.
build_addons() {
  mkdir -p "$addons_bin"
  if [ ! -x "$addons_bin/traefik" ]; then
    local dir
    dir=$(mod_field "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" Dir)
    [ -d "$dir" ] || die "could not download github.com/traefik/traefik/v3@$TRAEFIK_VERSION"
    timed_build traefik go_build "$dir" "$addons_bin/traefik" ./cmd/traefik \
      "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
  fi
  if [ ! -x "$addons_bin/kube-router" ]; then
    local tmp=$addons_cache/tmp-kube-router
    rm -rf "$tmp"; mkdir -p "$tmp"
    timed_build kube-router env GOBIN="$tmp" "$GO" install -trimpath -ldflags "-s -w" \
      "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
    mv "$tmp/kube-router" "$addons_bin/kube-router"; rm -rf "$tmp"
  fi
}

build_node() {
  node_built && return 0
  ensure_node_packages
  go_env
  mkdir -p "$bin" "$node_bin"
  local start=$SECONDS b
  # These have their own cache directory; the Kubernetes ones share the control plane's
  # module and build lock.
  exec 9>"$node_cache/.build.lock"
  flock 9
  node_go_install crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" \
    "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
  node_go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION" "-s -w"
  build_pause
  build_addons
  build_monitoring
  build_cnpg
  exec 9>"$cache/.build.lock"
  flock 9
  kubelet_module
  for b in kubelet kube-proxy; do build_k8s "$b"; done
  log "node binaries ready in $((SECONDS - start))s"
  exec 9>&-
}

# ---------------------------------------------------------------------------
# Host setup
# ---------------------------------------------------------------------------

save_sysctls() {
  local f=$state/node/sysctls k v
  [ -s "$f" ] && return 0
  mkdir -p "$state/node"
  for k in "${node_sysctls[@]}"; do
    v=$(sysctl -n "$k" 2>/dev/null) || continue
    printf '%s=%s\n' "$k" "$v"
  done >"$f.tmp"
  mv "$f.tmp" "$f"
}

# Which of node_host_paths this run creates, so `down` removes those and no others.
record_host_paths() {
  local f=$state/node/created-paths p
  [ -f "$f" ] && return 0
  mkdir -p "$state/node"
  for p in "${node_host_paths[@]}"; do [ -e "$p" ] || echo "$p"; done >"$f"
}

# The node's address lives on a dummy interface; a kernel without the dummy driver (this
# machine's) gets it on the loopback interface instead, which serves the same: a local
# address that is not 127.0.0.0/8, reachable from the pods through their gateway, routed
# nowhere else.
host_network_up() {
  if [ -e "/sys/class/net/$node_iface" ] || ip link add "$node_iface" type dummy 2>/dev/null; then
    ip addr replace "$node_ip/32" dev "$node_iface"
    ip link set "$node_iface" up
  else
    log "no dummy interfaces in this kernel: the node's address $node_ip goes on lo"
    ip addr replace "$node_ip/32" dev lo
  fi
  # The bridge plugin needs bridged traffic to pass netfilter (Service NAT between pods on
  # the same bridge) and forwarding (pod -> Service -> pod is routed through the host).
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null ||
    die "the kernel has no br_netfilter (net.bridge.bridge-nf-call-iptables)"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 net.ipv4.ip_forward=1
}

# cgroup v1 (this machine's hybrid layout): the kubelet's cgroupRoot must exist in every
# hierarchy; cpuset needs its cpus and mems before anything can join.
cgroups_up() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -L "${h%/}" ] && continue
    mkdir -p "$h$cgroup_root"
  done
  if [ -d "/sys/fs/cgroup/cpuset/$cgroup_root" ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$cgroup_root/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$cgroup_root/cpuset.mems"
  fi
}

write_containerd_config() {
  local d=$state/containerd
  mkdir -p "$d" "$state/cni/net.d"
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "$containerd_sock"

[ttrpc]
  address = "$d/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start
  # ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroup v1 through cgroupfs, like the kubelet; runc's own state under ours.
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$d/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
EOF
  # One bridge for the pods, the host as their gateway. No masquerading: nothing leaves the
  # host. Hairpin mode lets a pod reach itself through its Service.
  cat >"$state/cni/net.d/10-$cni_network.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$cni_network",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$cni_bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$pod_subnet", "gateway": "$pod_gateway" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$state/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
}

# The allocatable of the droplet: 1 CPU and 1 GiB for pods, everything else reserved.
write_kubelet_config() {
  local cpus mem_kib reserved_kib eviction_mib=100
  cpus=$(nproc)
  [ "$cpus" -ge 2 ] || die "the real node needs 2 CPUs or more (1 for pods, the rest reserved)"
  mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
  reserved_kib=$((mem_kib - 1048576 - eviction_mib * 1024))
  [ "$reserved_kib" -gt 0 ] || die "the real node needs more than 1.1 GiB of memory"
  mkdir -p "$state/kubelet" "$state/node/pod-logs" "$state/node/volume-plugins"
  : >"$state/node/resolv.conf"
  cat >"$state/node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 (hybrid) through cgroupfs; refused by default since 1.35.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$cgroup_root
containerRuntimeEndpoint: unix://$containerd_sock
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz_port
tlsCertFile: $pki/kubelet-server.crt
tlsPrivateKeyFile: $pki/kubelet-server.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $pki/ca.crt }
authorization:
  mode: Webhook
clusterDNS: [$dns_ip]
clusterDomain: cluster.local
# Pods get the cluster DNS only: no nameserver of the host, which they could not reach.
resolvConf: $state/node/resolv.conf
# kube-proxy owns the rules; the kubelet's utility chains are not needed.
makeIPTablesUtilChains: false
failSwapOn: false
podLogsDir: $state/node/pod-logs
volumePluginDir: $state/node/volume-plugins
systemReserved:
  cpu: "$((cpus - 1))"
  memory: ${reserved_kib}Ki
enforceNodeAllocatable: [pods]
# The node shares the host's disk with builds (a workspace's target/ takes tens of GiB):
# a share of it would taint the node with DiskPressure whenever builds fill the disk (seen:
# 12 GiB free of 252, under 5 %, and no pod scheduled). Absolute floors instead, and a short
# transition period, so the node recovers as soon as space is freed.
evictionHard:
  memory.available: ${eviction_mib}Mi
  nodefs.available: 1Gi
  imagefs.available: 1Gi
  nodefs.inodesFree: 5%
evictionPressureTransitionPeriod: 30s
# No image garbage collection: nothing can be pulled again here. With it, a disk filled by
# builds made the kubelet evict Traefik and then delete its now unused image, and the
# replacement pod stayed in ErrImageNeverPull after the space came back (seen).
imageGCHighThresholdPercent: 100
serializeImagePulls: false
EOF
}

node_pki() {
  issue kubelet "/O=system:nodes/CN=system:node:$real_node_name" clientAuth
  issue kubelet-server "/CN=$real_node_name" serverAuth "IP:$node_ip,DNS:$real_node_name"
  issue kube-apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" clientAuth
  issue kube-proxy "/CN=system:kube-proxy" clientAuth
  issue kube-router "/CN=shortener-cluster:kube-router" clientAuth
  local c
  for c in kubelet kube-proxy kube-router; do write_kubeconfig "$state/$c.kubeconfig" "$c"; done
}

# The API server's kubelet client may use the kubelet API (logs, exec); CoreDNS reads what it
# serves; kube-router reads the policies and the pods and namespaces they select. The
# built-in roles cover the kubelet (Node authorizer) and kube-proxy.
node_bootstrap_objects() {
  kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shortener-cluster:kube-apiserver-kubelet-client
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kubelet-api-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: kube-apiserver-kubelet-client
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: shortener-cluster:coredns
rules:
- apiGroups: [""]
  resources: [services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shortener-cluster:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: shortener-cluster:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: shortener-cluster:kube-router
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, endpoints, nodes]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shortener-cluster:kube-router
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: shortener-cluster:kube-router
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: shortener-cluster:kube-router
EOF
}

# Cluster DNS: CoreDNS as a pod of kube-system labelled `k8s-app: kube-dns` (what the
# Shortener's NetworkPolicies admit DNS from, as in any cluster), on port 53 as in any cluster
# (policies name the pod's port) without root: the pod lowers its own network namespace's
# unprivileged port floor (a safe sysctl). Behind the `kube-dns` Service at the kubelet's
# clusterDNS address.
# The resources and hardened securityContext of an add-on's container, indented as in
# the Deployments below: requests of CPU $1 and memory $2, memory limit $3.
hardened_container() {
  cat <<EOF
        resources:
          requests: { cpu: $1, memory: $2 }
          limits: { memory: $3 }
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: { drop: [ALL] }
EOF
}

dns_objects() {
  load_node_image coredns "$node_bin/coredns" "$coredns_image"
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: { k8s-app: kube-dns }
spec:
  replicas: 1
  selector:
    matchLabels: { k8s-app: kube-dns }
  template:
    metadata:
      labels: { k8s-app: kube-dns }
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        sysctls: [{ name: net.ipv4.ip_unprivileged_port_start, value: "53" }]
      containers:
      - name: coredns
        image: $coredns_image
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - { name: dns, containerPort: 53, protocol: UDP }
        - { name: dns-tcp, containerPort: 53, protocol: TCP }
        livenessProbe:
          httpGet: { path: /health, port: 8080 }
        readinessProbe:
          httpGet: { path: /ready, port: 8181 }
          periodSeconds: 2
$(hardened_container 20m 32Mi 128Mi)
        volumeMounts:
        - { name: config, mountPath: /etc/coredns }
      volumes:
      - name: config
        configMap: { name: coredns }
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: { k8s-app: kube-dns }
spec:
  clusterIP: $dns_ip
  selector: { k8s-app: kube-dns }
  ports:
  - { name: dns, port: 53, protocol: UDP, targetPort: 53 }
  - { name: dns-tcp, port: 53, protocol: TCP, targetPort: 53 }
EOF
}

dns_ready() {
  [ "$(kc -n kube-system get deployment coredns -o jsonpath='{.status.readyReplicas}')" = 1 ]
}

# A static binary of the node's add-ons as an image in the runtime (scripts/images.sh).
load_node_image() { # name binary reference
  SHORTENER_STATIC_BINARY="$2" SHORTENER_STATIC_IMAGE="$3" CONTAINERD_ADDRESS="$containerd_sock" \
    "$(dirname "${BASH_SOURCE[0]}")/images.sh" load "$1" >&2 || fail containerd "loading the $1 image failed"
}

# Storage: no provisioner runs here, so claims bind to local volumes made in advance
# (directories under the state directory, on this node), when the first pod using the claim
# is scheduled. Two classes: `local`, the default, and `standard`, the name kind's default
# class has, which manifests written for kind (manifests/examples/full.yaml) ask for. The
# kubelet applies fsGroup to local volumes, so a non-root database owns its data directory.
# Reclaim policy Retain: a released volume is not reused (its data stays until `down`).
storage_objects() {
  local class i default
  {
    for class in local standard; do
      default=false
      [ "$class" != local ] || default=true
      cat <<EOF
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $class
  annotations: { storageclass.kubernetes.io/is-default-class: "$default" }
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
      for ((i = 0; i < local_volumes; i++)); do
        mkdir -p "$state/volumes/$class-$i"
        cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $class-$i
spec:
  capacity: { storage: 10Gi }
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: $class
  local: { path: $state/volumes/$class-$i }
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - { key: kubernetes.io/hostname, operator: In, values: [$real_node_name] }
EOF
      done
    done
  } | kc apply -f - >/dev/null
}

# The Ingress and Gateway API controller: Traefik as a pod in the namespace an ingress-nginx
# installation would use, serving Ingresses of class `nginx` (its ingress-nginx provider,
# the migration path off the retired ingress-nginx; on every plain-HTTP entry point, the
# only choice of this version) and the shared Gateway `public` (class `traefik`, routes from
# every namespace, its listener on the second entry point only). Both are
# published on loopback ports of the host through the portmap plugin, so traffic reaches
# the apps from the controller's pod, as in a cluster, and NetworkPolicies apply to it.
ingress_objects() {
  load_node_image traefik "$addons_bin/traefik" "$traefik_image"
  PATH=$bin:$PATH KUBECONFIG=$kubeconfig "$(dirname "${BASH_SOURCE[0]}")/gateway-api.sh" install ||
    die "installing the Gateway API CRDs failed"
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $ingress_namespace
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: traefik
  namespace: $ingress_namespace
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: shortener-cluster:traefik
rules:
- apiGroups: [""]
  resources: [services, endpoints, secrets, namespaces, nodes, pods, configmaps]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, ingressclasses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [update, patch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [gatewayclasses, gateways, httproutes, grpcroutes, referencegrants, backendtlspolicies, tcproutes, tlsroutes]
  verbs: [get, list, watch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [gatewayclasses/status, gateways/status, httproutes/status, grpcroutes/status, backendtlspolicies/status, tcproutes/status, tlsroutes/status]
  verbs: [update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shortener-cluster:traefik
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: shortener-cluster:traefik
subjects:
- kind: ServiceAccount
  name: traefik
  namespace: $ingress_namespace
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
spec:
  controller: k8s.io/ingress-nginx
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: traefik
spec:
  controllerName: traefik.io/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: public
  namespace: $ingress_namespace
spec:
  gatewayClassName: traefik
  listeners:
  - name: http
    protocol: HTTP
    port: 8001
    allowedRoutes:
      namespaces: { from: All }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: traefik
  namespace: $ingress_namespace
  labels: { app.kubernetes.io/name: traefik }
spec:
  replicas: 1
  # Its host ports admit one pod at a time on the node.
  strategy: { type: Recreate }
  selector:
    matchLabels: { app.kubernetes.io/name: traefik }
  template:
    metadata:
      labels: { app.kubernetes.io/name: traefik }
    spec:
      serviceAccountName: traefik
      securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 }
      containers:
      - name: traefik
        image: $traefik_image
        imagePullPolicy: Never
        args:
        - --entryPoints.web.address=:8000
        - --entryPoints.websecure.address=:8443
        - --entryPoints.websecure.http.tls=true
        - --entryPoints.gateway.address=:8001
        - --entryPoints.ping.address=:8080
        - --ping.entryPoint=ping
        - --providers.kubernetesIngressNGINX.ingressClass=nginx
        - --providers.kubernetesGateway
        - --log.level=INFO
        ports:
        - { name: web, containerPort: 8000, hostPort: $ingress_port, hostIP: 127.0.0.1 }
        - { name: websecure, containerPort: 8443, hostPort: $ingress_tls_port, hostIP: 127.0.0.1 }
        - { name: gateway, containerPort: 8001, hostPort: $gateway_port, hostIP: 127.0.0.1 }
        - { name: ping, containerPort: 8080 }
        readinessProbe:
          httpGet: { path: /ping, port: ping }
          periodSeconds: 2
$(hardened_container 50m 64Mi 256Mi)
EOF
}

ingress_ready() {
  [ "$(kc -n "$ingress_namespace" get deployment traefik -o jsonpath='{.status.readyReplicas}')" = 1 ] &&
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$ingress_port/" &&
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$gateway_port/"
}

# kube-router's NetworkPolicy controller only: iptables and ipset rules on the pods' traffic.
kube_router_ready() { iptables -S KUBE-ROUTER-FORWARD >/dev/null 2>&1; }

containerd_ready() { ctr_cmd version; }
ctr_cmd() { ctr --address "$containerd_sock" --namespace k8s.io "$@"; }
crictl_cmd() { "$node_bin/crictl" --runtime-endpoint "unix://$containerd_sock" --image-endpoint "unix://$containerd_sock" --timeout 30s "$@"; }
kubelet_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$kubelet_healthz_port/healthz" >/dev/null; }
proxy_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$proxy_healthz_port/healthz" >/dev/null; }

# Before the control plane: a clean host (a crashed run's leftovers removed), the packages,
# the node's address for the API server to bind.
node_prepare() {
  need_root
  if node_owned_elsewhere; then
    die "the real node of $(node_owner) runs on this machine; stop it first: SHORTENER_CLUSTER_DIR=$(node_owner) $0 down"
  fi
  ensure_node_packages
  if node_leftovers; then
    log "cleaning what an earlier real node left behind"
    node_down
  fi
  mkdir -p "$state/node"
  touch "$state/real-node"
  echo "$state" >"$node_owner_file"
  save_sysctls
  record_host_paths
  host_network_up
}

start_node() {
  cgroups_up
  write_containerd_config
  launch containerd --config "$state/containerd/config.toml"
  wait_for containerd 60 "containerd's socket" containerd_ready
  SHORTENER_PAUSE_BINARY="$node_bin/pause" SHORTENER_PAUSE_IMAGE="$pause_image" CONTAINERD_ADDRESS="$containerd_sock" \
    "$(dirname "${BASH_SOURCE[0]}")/images.sh" load pause >&2 || fail containerd "loading the pause image failed"
  write_kubelet_config
  launch kubelet --config="$state/node/kubelet.yaml" --kubeconfig="$state/kubelet.kubeconfig" \
    --root-dir="$state/kubelet" --cert-dir="$pki/kubelet-certs" \
    --hostname-override="$real_node_name" --node-ip="$node_ip" --v=1
  cat >"$state/node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: { kubeconfig: $state/kube-proxy.kubeconfig }
hostnameOverride: $real_node_name
clusterCIDR: 10.244.0.0/16
healthzBindAddress: 127.0.0.1:$proxy_healthz_port
metricsBindAddress: 127.0.0.1:$proxy_metrics_port
nodePortAddresses: ["$node_ip/32"]
# Leave the host's conntrack settings alone.
conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s }
EOF
  launch kube-proxy --config="$state/node/kube-proxy.yaml"
  dns_objects
  storage_objects
  wait_for kubelet 120 "the kubelet's /healthz" kubelet_healthy
  wait_for kube-proxy 60 "kube-proxy's /healthz" proxy_healthy
  wait_for kubelet 120 "CoreDNS Ready" dns_ready
  # kube-router finds its node by name: after the kubelet has registered it.
  wait_for kubelet 60 "the node registered" kc get node "$real_node_name"
  launch kube-router --kubeconfig="$state/kube-router.kubeconfig" --hostname-override="$real_node_name" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-ipv6=false \
    --service-cluster-ip-range="$service_cidr" --health-port=0 --metrics-port=0 --v=1
  wait_for kube-router 60 "kube-router's firewall chains" kube_router_ready
  ingress_objects
  wait_for kubelet 180 "Traefik serving on 127.0.0.1:$ingress_port and :$gateway_port" ingress_ready
  monitoring_objects
  wait_for kubelet 180 "Prometheus, its operator, kube-state-metrics and metrics-server Ready ($prometheus_url)" monitoring_ready
  cnpg_objects
  # Generous: a machine busy building (the first run's) may start the operator slowly.
  wait_for kubelet 300 "CloudNativePG's operator Available and its webhooks serving" cnpg_ready
}

# ---------------------------------------------------------------------------
# Teardown (also of a crashed run)
# ---------------------------------------------------------------------------

# One real node per machine (it takes host paths, an address, a bridge): the state directory
# of the one that runs is written here, so that a cluster of another state directory (a kwok
# one on other ports) neither starts a second node nor takes this one's host setup for the
# leftovers of a crash and removes it.
node_owner_file=/run/shortener-real-node
node_owner() { cat "$node_owner_file" 2>/dev/null; }
node_owned_elsewhere() {
  local owner
  owner=$(node_owner) || return 1
  [ -n "$owner" ] && [ "$owner" != "$state" ] && [ -d "$owner" ]
}

node_leftovers() {
  node_owned_elsewhere && return 1
  [ -f "$state/real-node" ] || [ -e "/sys/class/net/$node_iface" ] || [ -e "/sys/class/net/$cni_bridge" ] ||
    [ -d "/sys/fs/cgroup/memory/$cgroup_root" ] || node_ip_on_lo
}

node_ip_on_lo() { ip -4 -o addr show dev lo 2>/dev/null | grep -qF " $node_ip/"; }

# Shims of our containerd (its socket on their command line).
our_shims() {
  local p
  for p in /proc/[0-9]*; do
    case $(readlink "$p/exe" 2>/dev/null) in */containerd-shim*) ;; *) continue ;; esac
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$containerd_sock" && echo "${p#/proc/}"
  done
}

# Every process in a cgroup below the kubelet's cgroupRoot: the pods' processes.
pod_processes() {
  local h
  for h in /sys/fs/cgroup/*/"$cgroup_root"; do
    [ -d "$h" ] && find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}

kill_all() { # pid...
  [ $# -gt 0 ] || return 0
  kill -KILL "$@" 2>/dev/null || true
  local deadline=$((SECONDS + 10)) pid
  for pid in "$@"; do
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  done
}

# Network namespaces holding an address of our pod subnet.
our_netns() {
  local ns
  [ -d /run/netns ] || return 0
  for ns in /run/netns/*; do
    [ -e "$ns" ] || continue
    ip netns exec "${ns##*/}" ip -4 -o addr show 2>/dev/null | grep -q " ${pod_subnet%.*}\." && echo "${ns##*/}"
  done
}

unmount_under() { # prefix...
  local prefix m
  for prefix in "$@"; do
    # Deepest first; a mount point may repeat when stacked.
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
    done < <(awk -v p="$prefix" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  done
}

# kube-router's sets (after the rules using them are gone).
ipset_cleanup() {
  command -v ipset >/dev/null || return 0
  ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router)' | xargs -r -n1 ipset destroy 2>/dev/null || true
}
nft_cleanup() {
  local family
  command -v nft >/dev/null || return 0
  for family in ip ip6; do
    nft list table "$family" kube-proxy >/dev/null 2>&1 && nft delete table "$family" kube-proxy
  done
  return 0
}

# Chains the kubelet, kube-proxy or the CNI plugins may add through iptables (KUBE-*, and
# the portmap plugin's CNI-HOSTPORT-* / CNI-DN-* that carry our network's name).
iptables_cleanup() {
  local tool table chain
  for tool in iptables ip6tables iptables-legacy ip6tables-legacy; do
    command -v "$tool" >/dev/null || continue
    for table in filter nat mangle raw; do
      "$tool" -t "$table" -S >/dev/null 2>&1 || continue
      # Rules that jump to one of our chains (xargs keeps their quoted comments whole), then
      # the chains.
      "$tool" -t "$table" -S 2>/dev/null | grep -E -- '-j KUBE-|"'"$cni_network"'"' | grep '^-A ' |
        sed 's/^-A /-D /' | xargs -r -L1 "$tool" -t "$table" 2>/dev/null || true
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'); do
        "$tool" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }'); do
        "$tool" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

cgroups_cleanup() {
  local h
  for h in /sys/fs/cgroup/*/"$cgroup_root"; do
    [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  for h in /sys/fs/cgroup/*/"$cgroup_root"; do
    [ -d "$h" ] && log "cgroup $h is still there"
  done
  return 0
}

restore_sysctls() {
  local f=$state/node/sysctls line
  [ -s "$f" ] || return 0
  while read -r line; do
    sysctl -qw "$line" 2>/dev/null || log "could not restore $line"
  done <"$f"
}

# Puts the host back. Every step runs whatever the others did (this is also the EXIT trap
# of `down`), and each is harmless when there is nothing to undo.
node_host_cleanup() {
  local ns p pids
  mapfile -t pids < <(our_shims)
  kill_all "${pids[@]}"
  mapfile -t pids < <(pod_processes)
  kill_all "${pids[@]}"
  # Our pods' network namespaces (and with them their veths) before any unmounting: they
  # are recognised by their address, which needs them mounted.
  for ns in $(our_netns); do ip netns delete "$ns" 2>/dev/null || log "could not delete netns $ns"; done
  unmount_under "$state/" /run/containerd/
  for p in "$cni_bridge" "$node_iface"; do
    [ -e "/sys/class/net/$p" ] && { ip link delete "$p" || log "could not delete interface $p"; }
  done
  if node_ip_on_lo; then ip addr delete "$node_ip/32" dev lo || log "could not remove $node_ip from lo"; fi
  nft_cleanup
  iptables_cleanup
  ipset_cleanup
  cgroups_cleanup
  restore_sysctls
  if [ -f "$state/node/created-paths" ]; then
    while read -r p; do
      [ -n "$p" ] && [ -e "$p" ] && { rm -rf "$p" || log "could not remove $p"; }
    done <"$state/node/created-paths"
  fi
  # The CNI cache of our network, should /var/lib/cni have existed before.
  rm -rf "/var/lib/cni/results/$cni_network"-* "/var/lib/cni/networks/$cni_network" 2>/dev/null
  [ "$(node_owner)" != "$state" ] || rm -f "$node_owner_file"
  return 0
}

# Stops the node: the kubelet first (so it restarts nothing), then every pod sandbox through
# the CRI (the CNI plugins release addresses and interfaces, mounts go), then the daemons;
# finally the host cleanup, which also runs if any of this fails.
node_down() {
  local pid c
  need_root
  trap node_host_cleanup EXIT
  if pid=$(pid_of kubelet); then log "stopping kubelet (pid $pid)"; stop_pids "$pid"; fi
  if pid_of containerd >/dev/null && [ -x "$node_bin/crictl" ]; then
    log "removing every pod sandbox"
    crictl_cmd rmp --all --force >/dev/null 2>&1 || log "crictl rmp failed; cleaning up by hand"
  fi
  for c in kube-router kube-proxy containerd; do
    if pid=$(pid_of "$c"); then log "stopping $c (pid $pid)"; stop_pids "$pid"; fi
  done
  node_host_cleanup
  trap - EXIT
}
