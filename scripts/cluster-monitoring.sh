# shellcheck shell=bash disable=SC2034,SC2154 # sourced by cluster.sh, sharing its variables
# The real node's monitoring, as platform teams run it (the parts of kube-prometheus-stack
# the Shortener's objects are written for), all in the namespace `monitoring`, the one the
# Shortener's NetworkPolicy admits to the app's metrics port by default:
#   - the Prometheus Operator and its config reloader, built from their Go module, with the
#     module's own CRDs, so ServiceMonitors and PrometheusRules are read by the real thing;
#   - one Prometheus (`monitoring/k8s`), the version that operator release defaults to, built
#     from its Go module with the Kubernetes service discovery only, which selects every
#     ServiceMonitor and PrometheusRule of the cluster, as kube-prometheus-stack's does when
#     told to select them all;
#   - kube-state-metrics, built from its Go module, scraped through its own ServiceMonitor
#     with honorLabels (its series keep the namespace of the object they describe);
#   - metrics-server, built from its Go module, in `kube-system` as everywhere: the resource
#     metrics API (`metrics.k8s.io`, through the apiserver's aggregation layer) that
#     HorizontalPodAutoscalers and `kubectl top` read. It checks the kubelet's serving
#     certificate against the cluster CA (the one every pod is given), not insecurely.
# They request 55m CPU and 144 MiB from the node's 1 CPU / 1 GiB, so the default Shortener
# still fits beside them scaled to 5 replicas (docs/operator.md, the real node's budget).
# Prometheus answers on a fixed ClusterIP, which the host reaches through kube-proxy:
# `scripts/cluster.sh env` exports it as SHORTENER_PROMETHEUS_URL.

PROMETHEUS_OPERATOR_VERSION=${SHORTENER_CLUSTER_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}
KUBE_STATE_METRICS_VERSION=${SHORTENER_CLUSTER_KUBE_STATE_METRICS_VERSION:-v2.20.0}
# Prometheus v3.5.0, the default of that operator release; its Go module numbers v3.X.Y as
# v0.(300+X).Y.
PROMETHEUS_VERSION=v3.5.0
PROMETHEUS_MODULE_VERSION=v0.305.0
METRICS_SERVER_VERSION=${SHORTENER_CLUSTER_METRICS_SERVER_VERSION:-v0.8.0}
monitoring_cache=${cache_root:?}/monitoring.prometheus-operator-$PROMETHEUS_OPERATOR_VERSION.kube-state-metrics-$KUBE_STATE_METRICS_VERSION.prometheus-$PROMETHEUS_VERSION
monitoring_bin=$monitoring_cache/bin
monitoring_namespace=monitoring
prometheus_service_ip=10.96.0.90
prometheus_url=http://$prometheus_service_ip:9090
prometheus_operator_image=shortener.local/prometheus-operator:$PROMETHEUS_OPERATOR_VERSION
config_reloader_image=shortener.local/prometheus-config-reloader:$PROMETHEUS_OPERATOR_VERSION
kube_state_metrics_image=shortener.local/kube-state-metrics:$KUBE_STATE_METRICS_VERSION
prometheus_image=shortener.local/prometheus:$PROMETHEUS_VERSION
# Its own cache directory: another version rebuilds it alone, not Prometheus.
metrics_server_bin=$cache_root/metrics-server-$METRICS_SERVER_VERSION/metrics-server
metrics_server_image=shortener.local/metrics-server:$METRICS_SERVER_VERSION

monitoring_built() {
  local b
  for b in prometheus prometheus-operator prometheus-config-reloader kube-state-metrics; do
    [ -x "$monitoring_bin/$b" ] || return 1
  done
  [ -n "$(ls "$monitoring_cache/crds" 2>/dev/null)" ] && [ -x "$metrics_server_bin" ]
}

build_monitoring() {
  monitoring_built && return 0
  mkdir -p "$monitoring_bin"
  local module=github.com/prometheus-operator/prometheus-operator src=$monitoring_cache/src m dir
  if [ ! -x "$monitoring_bin/prometheus-operator" ] || [ ! -x "$monitoring_bin/prometheus-config-reloader" ]; then
    # Its go.mod replaces two nested modules of its own with ./pkg/..., which the module's zip
    # does not contain: a writable copy gets them from the proxy at the same version.
    dir=$(mod_field "$module@$PROMETHEUS_OPERATOR_VERSION" Dir)
    [ -d "$dir" ] || die "could not download $module@$PROMETHEUS_OPERATOR_VERSION"
    rm -rf "$src"
    cp -r "$dir" "$src"
    for m in pkg/apis/monitoring pkg/client; do
      dir=$(mod_field "$module/$m@$PROMETHEUS_OPERATOR_VERSION" Dir)
      [ -d "$dir" ] || die "could not download $module/$m@$PROMETHEUS_OPERATOR_VERSION"
      rm -rf "${src:?}/$m"
      mkdir -p "$(dirname "$src/$m")"
      cp -r "$dir" "$src/$m"
    done
    chmod -R u+w "$src"
    timed_build prometheus-operator go_build "$src" "$monitoring_bin/prometheus-operator" ./cmd/operator "-s -w"
    timed_build prometheus-config-reloader go_build "$src" "$monitoring_bin/prometheus-config-reloader" \
      ./cmd/prometheus-config-reloader "-s -w"
    rm -rf "$monitoring_cache/crds.tmp"
    cp -r "$src/example/prometheus-operator-crd" "$monitoring_cache/crds.tmp"
    rm -rf "$monitoring_cache/crds"
    mv "$monitoring_cache/crds.tmp" "$monitoring_cache/crds"
    rm -rf "$src"
  fi
  if [ ! -x "$monitoring_bin/prometheus" ]; then
    # Prometheus's own way to leave service discovery plugins out (plugins.yml and `make
    # plugins` write plugins/plugins.go): only Kubernetes's, which is all the operator's
    # configuration uses, instead of every cloud's SDK.
    dir=$(mod_field "github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION" Dir)
    [ -d "$dir" ] || die "could not download github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION"
    rm -rf "$src"
    cp -r "$dir" "$src"
    chmod -R u+w "$src"
    printf 'package plugins\n\nimport (\n\t_ "github.com/prometheus/prometheus/discovery/kubernetes"\n)\n' \
      >"$src/plugins/plugins.go"
    timed_build prometheus go_build "$src" "$monitoring_bin/prometheus" ./cmd/prometheus \
      "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}"
    rm -rf "$src"
  fi
  if [ ! -x "$monitoring_bin/kube-state-metrics" ]; then
    local tmp=$monitoring_cache/tmp-kube-state-metrics
    rm -rf "$tmp"; mkdir -p "$tmp"
    timed_build kube-state-metrics env GOBIN="$tmp" "$GO" install -trimpath -ldflags "-s -w" \
      "k8s.io/kube-state-metrics/v2@$KUBE_STATE_METRICS_VERSION"
    mv "$tmp/kube-state-metrics" "$monitoring_bin/kube-state-metrics"; rm -rf "$tmp"
  fi
  if [ ! -x "$metrics_server_bin" ]; then
    local tmp=$metrics_server_bin.tmp
    rm -rf "$tmp"; mkdir -p "$tmp"
    timed_build metrics-server env GOBIN="$tmp" "$GO" install -trimpath \
      -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION" \
      "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
    mv "$tmp/metrics-server" "$metrics_server_bin"; rm -rf "$tmp"
  fi
}

monitoring_objects() {
  local b
  load_node_image prometheus "$monitoring_bin/prometheus" "$prometheus_image"
  load_node_image prometheus-operator "$monitoring_bin/prometheus-operator" "$prometheus_operator_image"
  load_node_image prometheus-config-reloader "$monitoring_bin/prometheus-config-reloader" "$config_reloader_image"
  load_node_image kube-state-metrics "$monitoring_bin/kube-state-metrics" "$kube_state_metrics_image"
  load_node_image metrics-server "$metrics_server_bin" "$metrics_server_image"
  metrics_server_objects
  # Server-side: the Prometheus CRD is larger than client-side apply's annotation allows.
  kc apply --server-side --force-conflicts -f "$monitoring_cache/crds" >/dev/null
  # Polled, not `kubectl wait`: right after the apply a CRD may have no conditions yet, and
  # `kubectl wait` then fails at once instead of waiting (seen).
  wait_for kube-apiserver 60 "the monitoring CRDs Established" monitoring_crds_established
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $monitoring_namespace
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: prometheus-operator
  namespace: $monitoring_namespace
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: shortener-cluster:prometheus-operator
rules:
- apiGroups: [monitoring.coreos.com]
  resources: ["*"]
  verbs: ["*"]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: ["*"]
- apiGroups: [""]
  resources: [configmaps, secrets]
  verbs: ["*"]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, delete]
- apiGroups: [""]
  resources: [services, services/finalizers, endpoints]
  verbs: [get, create, update, delete]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch, create, update, delete]
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shortener-cluster:prometheus-operator
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shortener-cluster:prometheus-operator }
subjects:
- { kind: ServiceAccount, name: prometheus-operator, namespace: $monitoring_namespace }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: prometheus-operator
  namespace: $monitoring_namespace
  labels: { app.kubernetes.io/name: prometheus-operator }
spec:
  replicas: 1
  selector:
    matchLabels: { app.kubernetes.io/name: prometheus-operator }
  template:
    metadata:
      labels: { app.kubernetes.io/name: prometheus-operator }
    spec:
      serviceAccountName: prometheus-operator
      securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 }
      containers:
      - name: prometheus-operator
        image: $prometheus_operator_image
        imagePullPolicy: Never
        args:
        - --prometheus-config-reloader=$config_reloader_image
        - --config-reloader-cpu-request=5m
        - --config-reloader-memory-request=16Mi
        - --log-level=info
        ports:
        - { name: http, containerPort: 8080 }
        readinessProbe:
          httpGet: { path: /healthz, port: http }
          periodSeconds: 2
$(hardened_container 10m 16Mi 256Mi)
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: prometheus
  namespace: $monitoring_namespace
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: shortener-cluster:prometheus
rules:
- apiGroups: [""]
  resources: [services, endpoints, pods, nodes]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
- nonResourceURLs: [/metrics]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shortener-cluster:prometheus
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shortener-cluster:prometheus }
subjects:
- { kind: ServiceAccount, name: prometheus, namespace: $monitoring_namespace }
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata:
  name: k8s
  namespace: $monitoring_namespace
spec:
  image: $prometheus_image
  version: $PROMETHEUS_VERSION
  replicas: 1
  serviceAccountName: prometheus
  # Every ServiceMonitor and PrometheusRule of the cluster, whatever its labels.
  serviceMonitorSelector: {}
  serviceMonitorNamespaceSelector: {}
  podMonitorSelector: {}
  podMonitorNamespaceSelector: {}
  ruleSelector: {}
  ruleNamespaceSelector: {}
  evaluationInterval: 15s
  retention: 6h
  securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532 }
  resources:
    requests: { cpu: 20m, memory: 64Mi }
    limits: { memory: 384Mi }
---
apiVersion: v1
kind: Service
metadata:
  name: prometheus
  namespace: $monitoring_namespace
spec:
  clusterIP: $prometheus_service_ip
  selector: { prometheus: k8s }
  ports:
  - { name: web, port: 9090, targetPort: 9090 }
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: kube-state-metrics
  namespace: $monitoring_namespace
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: shortener-cluster:kube-state-metrics
rules:
- apiGroups: [""]
  resources: [pods, services, persistentvolumeclaims, namespaces, nodes]
  verbs: [list, watch]
- apiGroups: [apps]
  resources: [deployments, statefulsets, replicasets]
  verbs: [list, watch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shortener-cluster:kube-state-metrics
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shortener-cluster:kube-state-metrics }
subjects:
- { kind: ServiceAccount, name: kube-state-metrics, namespace: $monitoring_namespace }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kube-state-metrics
  namespace: $monitoring_namespace
  labels: { app.kubernetes.io/name: kube-state-metrics }
spec:
  replicas: 1
  selector:
    matchLabels: { app.kubernetes.io/name: kube-state-metrics }
  template:
    metadata:
      labels: { app.kubernetes.io/name: kube-state-metrics }
    spec:
      serviceAccountName: kube-state-metrics
      securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532 }
      containers:
      - name: kube-state-metrics
        image: $kube_state_metrics_image
        imagePullPolicy: Never
        args:
        - --port=8080
        - --telemetry-port=8081
        - --resources=pods,services,persistentvolumeclaims,namespaces,nodes,deployments,statefulsets,replicasets,jobs
        ports:
        - { name: http-metrics, containerPort: 8080 }
        - { name: telemetry, containerPort: 8081 }
        readinessProbe:
          httpGet: { path: /, port: telemetry }
          periodSeconds: 2
$(hardened_container 10m 16Mi 256Mi)
---
apiVersion: v1
kind: Service
metadata:
  name: kube-state-metrics
  namespace: $monitoring_namespace
  labels: { app.kubernetes.io/name: kube-state-metrics }
spec:
  selector: { app.kubernetes.io/name: kube-state-metrics }
  ports:
  - { name: http-metrics, port: 8080, targetPort: http-metrics }
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: kube-state-metrics
  namespace: $monitoring_namespace
spec:
  selector:
    matchLabels: { app.kubernetes.io/name: kube-state-metrics }
  endpoints:
  - port: http-metrics
    interval: 15s
    # Its series describe objects of other namespaces: keep their namespace label.
    honorLabels: true
EOF
}

monitoring_crds_established() {
  local b
  for b in prometheuses servicemonitors prometheusrules; do
    [ "$(kc get "crd/$b.monitoring.coreos.com" \
      -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ] || return 1
  done
}

monitoring_ready() {
  [ "$(kc -n "$monitoring_namespace" get deployment prometheus-operator kube-state-metrics \
    -o jsonpath='{.items[*].status.readyReplicas}')" = "1 1" ] &&
    curl -sf -o /dev/null --max-time 2 "$prometheus_url/-/ready" &&
    [ "$(kc get apiservice v1beta1.metrics.k8s.io \
      -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" = True ]
}

# metrics-server as its own manifests install it (service account, the aggregated API's
# delegated authentication and authorization, read access to nodes' metrics), with the
# kubelet's certificate verified and a request sized for this node.
metrics_server_objects() {
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:
  name: metrics-server
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-server
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:aggregated-metrics-reader
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
rules:
- apiGroups: [metrics.k8s.io]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:metrics-server
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:metrics-server }
subjects:
- { kind: ServiceAccount, name: metrics-server, namespace: kube-system }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: metrics-server:system:auth-delegator
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator }
subjects:
- { kind: ServiceAccount, name: metrics-server, namespace: kube-system }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: metrics-server-auth-reader
  namespace: kube-system
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader }
subjects:
- { kind: ServiceAccount, name: metrics-server, namespace: kube-system }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: metrics-server
  namespace: kube-system
  labels: { k8s-app: metrics-server }
spec:
  replicas: 1
  strategy: { rollingUpdate: { maxUnavailable: 0 } }
  selector:
    matchLabels: { k8s-app: metrics-server }
  template:
    metadata:
      labels: { k8s-app: metrics-server }
    spec:
      serviceAccountName: metrics-server
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: { type: RuntimeDefault }
      containers:
      - name: metrics-server
        image: $metrics_server_image
        imagePullPolicy: Never
        args:
        - --cert-dir=/tmp
        - --secure-port=10250
        - --kubelet-preferred-address-types=InternalIP
        - --kubelet-use-node-status-port
        - --kubelet-certificate-authority=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt
        - --metric-resolution=15s
        ports:
        - { name: https, containerPort: 10250 }
        readinessProbe:
          httpGet: { path: /readyz, port: https, scheme: HTTPS }
          periodSeconds: 5
        livenessProbe:
          httpGet: { path: /livez, port: https, scheme: HTTPS }
          periodSeconds: 10
$(hardened_container 10m 32Mi 128Mi)
        volumeMounts:
        - { name: tmp, mountPath: /tmp }
      volumes:
      - name: tmp
        emptyDir: {}
---
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
spec:
  selector: { k8s-app: metrics-server }
  ports:
  - { name: https, port: 443, targetPort: https }
---
# The aggregated API's serving certificate is the one metrics-server makes itself at start,
# as in its own manifests; the apiserver reaches it through the Service.
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  service: { name: metrics-server, namespace: kube-system }
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
}
