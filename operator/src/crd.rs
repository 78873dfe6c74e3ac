//! The `Shortener` custom resource: one object describes the whole stack.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::pods::PodOptions;
use crate::settings_schema;

pub const API_GROUP: &str = "shortener.dev";
pub const API_VERSION: &str = "shortener.dev/v1alpha1";

/// Desired state of a URL-shortener installation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "shortener.dev",
    version = "v1alpha1",
    kind = "Shortener",
    plural = "shorteners",
    shortname = "shrt",
    category = "shortener",
    namespaced,
    status = "ShortenerStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Route","type":"string","jsonPath":".status.conditions[?(@.type==\"RouteAccepted\")].reason"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"date","priority":1,"jsonPath":".status.lastBackup"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","priority":1,"jsonPath":".status.database.primary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    scale(
        spec_replicas_path = ".spec.app.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
// The PostgreSQL transition rules sit on the spec, not on `database.postgres`: a rule there
// is not evaluated when the old object had no `postgres` (for example `spec: {}`), so a
// shrink or a new class or version set onto the defaults would be accepted and then fail
// against the StatefulSet and the PVC. Here the defaults stand in for absent fields. (No
// `string()` around the fields: the API server's cost estimate of that conversion exceeds
// the CRD's budget a hundredfold and it refuses the CRD.)
#[x_kube(validation = Rule::new(format!(
    "quantity({}).compareTo(quantity({})) >= 0",
    postgres_field("self", "storage.size", &format!("'{DEFAULT_STORAGE_SIZE}'")),
    postgres_field("oldSelf", "storage.size", &format!("'{DEFAULT_STORAGE_SIZE}'")),
)).message("storage.size may grow but not shrink"))]
#[x_kube(validation = Rule::new(format!(
    "{} == {}",
    postgres_field("self", "storage.storageClassName", "''"),
    postgres_field("oldSelf", "storage.storageClassName", "''"),
)).message("storage.storageClassName is immutable"))]
#[x_kube(validation = Rule::new(format!(
    "{} == {}",
    postgres_field("self", "version", &format!("'{DEFAULT_POSTGRES_VERSION}'")),
    postgres_field("oldSelf", "version", &format!("'{DEFAULT_POSTGRES_VERSION}'")),
)).message("postgres.version is immutable: a major upgrade needs pg_upgrade or a dump and restore"))]
// One exposure at a time. `ingress.enabled` has no schema default (absent: an Ingress unless
// `httpRoute` is set), so a Shortener that sets only `httpRoute` needs no `ingress` at all;
// Shorteners stored before `httpRoute` existed hold `enabled: true` (the old default) and must
// turn it off to switch, which the message says.
#[x_kube(validation = Rule::new(
    "!has(self.httpRoute) || !has(self.ingress) || !has(self.ingress.enabled) || !self.ingress.enabled"
).message(BOTH_EXPOSURES))]
#[serde(rename_all = "camelCase")]
pub struct ShortenerSpec {
    /// Stop reconciling: children are left exactly as they are until this is false again.
    #[serde(default)]
    pub paused: bool,
    /// The HTTP service.
    #[serde(default)]
    pub app: AppSpec,
    /// Exposure by an Ingress: the default while `httpRoute` is not set.
    #[serde(default)]
    pub ingress: IngressSpec,
    /// Exposure by a Gateway API HTTPRoute attached to Gateways the platform team owns,
    /// instead of the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteSpec>,
    /// Where links are stored.
    #[serde(default)]
    pub database: DatabaseSpec,
    /// Connection pooler in front of the embedded PostgreSQL.
    #[serde(default)]
    pub pgbouncer: PgBouncerSpec,
    /// Cache in front of the database.
    #[serde(default)]
    pub redis: RedisSpec,
    /// Prometheus and Grafana integration.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// NetworkPolicies isolating the instance's pods.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// Node maintenance: what a drain may evict.
    #[serde(default)]
    pub maintenance_window: MaintenanceWindowSpec,
    /// Options of every pod of the stack (scheduling, pull secrets, labels, annotations);
    /// each component's `pods` refines them.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pods: PodOptions,
}

/// The embedded PostgreSQL's PodDisruptionBudget forbids evicting its only pod, so a
/// `kubectl drain` of its node waits. Set `inProgress` for the maintenance window: the
/// budget then allows one eviction (a restart of the database of a minute or so, longer if
/// its volume must move), and the drain proceeds. Unset it afterwards.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowSpec {
    /// Let a drain evict the PostgreSQL pod.
    #[serde(default)]
    pub in_progress: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.autoscaling) || !has(self.resources) || (has(self.resources.requests) && 'cpu' in self.resources.requests)"
).message("autoscaling scales on CPU use relative to the request: resources.requests.cpu must be set"))]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    /// Container image of the `shortener` binary.
    #[serde(default = "default_app_image")]
    pub image: String,
    /// Number of app pods; also driven by `kubectl scale shortener/NAME`.
    #[serde(default = "default_app_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Per-pod requests and limits; defaults fit three pods into a 1 vCPU / 1 GiB budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// RUST_LOG filter for the service.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Behaviour of the service.
    #[serde(default)]
    pub config: AppConfig,
    /// Options of the app's pods, over the Shortener-wide `pods`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pods: PodOptions,
    /// A HorizontalPodAutoscaler sets the number of app pods, between `minReplicas` and
    /// `maxReplicas`, instead of `replicas` (which, like `kubectl scale`, then has no effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// What the app's HorizontalPodAutoscaler scales on: the pods' CPU use, and the requests
/// per second each pod answers where the cluster has a custom-metrics adapter serving them
/// (docs/operator.md, "Autoscaling").
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Average CPU use the autoscaler keeps the pods at, in percent of their CPU request.
    #[serde(default = "default_cpu_utilization")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percent: i32,
    /// Requests per second each pod should answer on average (the pods metric
    /// `shortener_http_requests_per_second`, which a custom-metrics adapter must serve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    #[schemars(transform = without_format)]
    pub target_requests_per_second: Option<u32>,
    /// How fast the autoscaler scales up and down (the HorizontalPodAutoscaler's own
    /// `behavior`: stabilization windows and rate policies); unset, Kubernetes' defaults
    /// (scale down only after 5 minutes below target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::pods::terse)]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

impl Default for AppSpec {
    fn default() -> Self {
        Self {
            image: default_app_image(),
            replicas: default_app_replicas(),
            resources: None,
            log_level: default_log_level(),
            config: AppConfig::default(),
            pods: PodOptions::default(),
            autoscaling: None,
        }
    }
}

/// Behaviour of the service. Every field is one of the service's settings (the
/// variable is named in its description): its bounds, choices, pattern, default and
/// description come from the settings description the service's own parser uses
/// (crate `shortener-settings`), so the API server admits only values the service
/// starts with. The operator writes each into the app's ConfigMap; an unset field
/// takes the service's default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = settings_schema::app_config)]
pub struct AppConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mode: Option<AuthMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_pool_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_trust_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_private_targets: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_bots: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_target_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_cache_ttl_seconds: Option<u32>,
    /// Each replica's in-process cache.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cache: CacheConfig,
    /// How the service uses Redis.
    #[serde(default, skip_serializing_if = "is_default")]
    pub redis: RedisConfig,
    /// Click recording.
    #[serde(default, skip_serializing_if = "is_default")]
    pub clicks: ClickConfig,
    /// Request limits per client.
    #[serde(default, skip_serializing_if = "is_default")]
    pub rate_limit: RateLimit,
    /// Trace export (OpenTelemetry over OTLP/HTTP); off unless an endpoint is set.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tracing: TracingSpec,
}

impl AppConfig {
    pub fn auth_mode(&self) -> AuthMode {
        self.auth_mode.unwrap_or_default()
    }

    /// The service's variables this configuration sets, for the ConfigMap: every
    /// field of the settings description, set or defaulted (fields without a default
    /// are left out while unset). The trace settings are written only when an
    /// endpoint is set: without one nothing is exported, whatever they say.
    pub fn variables(&self) -> BTreeMap<String, String> {
        let set = settings_schema::as_json(self);
        let tracing = self.tracing.endpoint.is_some();
        shortener_settings::ALL
            .iter()
            .filter_map(|setting| {
                let path = setting.field()?;
                if path.starts_with("tracing.") && !tracing {
                    return None;
                }
                let value = path
                    .split('.')
                    .try_fold(&set, |value, step| value.get(step))
                    .and_then(settings_schema::variable_value)
                    .or_else(|| setting.default_value())?;
                Some((setting.env.to_string(), value))
            })
            .collect()
    }

    /// `SHUTDOWN_GRACE_SECS` as the service will read it.
    pub fn shutdown_grace_seconds(&self) -> u32 {
        self.variables()
            .get(shortener_settings::SHUTDOWN_GRACE_SECS.env)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = settings_schema::cache)]
pub struct CacheConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ttl_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_entries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_if_error_seconds: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = settings_schema::redis)]
pub struct RedisConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = settings_schema::clicks)]
pub struct ClickConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_timeout_ms: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = settings_schema::tracing)]
pub struct TracingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    #[default]
    ApiKey,
    Open,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api-key",
            Self::Open => "open",
        }
    }
}

/// With Redis the limits hold across all replicas; without it (or while it is away)
/// each replica applies them on its own. A rate of 0 turns that class off.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = settings_schema::rate_limit)]
pub struct RateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_miss_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_miss_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_password_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_password_burst: Option<u32>,
}

/// The host pattern of `ingress.host` and `httpRoute.hostnames`: lowercase DNS labels, the last
/// one starting with a letter. Only such hosts become a `PUBLIC_BASE_URL` the service takes
/// (`operator/tests/settings.rs`); Gateway API hostnames are a superset (wildcards aside).
pub const HOST_PATTERN: &str = r"^([a-z0-9]+(-[a-z0-9]+)*\.)*[a-z][a-z0-9]*(-[a-z0-9]+)*$";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Create an Ingress. Unset: an Ingress unless `httpRoute` is set; false: no Ingress (with
    /// neither, the service is reachable only in-cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// IngressClass that serves the Ingress. Only `nginx` (ingress-nginx) gets what is
    /// specific to ingress-nginx (its alerts); any other class gets a plain Ingress.
    #[serde(default = "default_ingress_class")]
    pub class_name: String,
    /// Public host name; without it the Ingress matches any host. Lowercase DNS labels, the
    /// last one starting with a letter (it also becomes the service's `PUBLIC_BASE_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HOST_PATTERN))]
    #[schemars(length(max = 253))]
    pub host: Option<String>,
    /// Secret of type kubernetes.io/tls holding the certificate for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Extra annotations for the ingress controller (e.g. cert-manager issuer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for IngressSpec {
    fn default() -> Self {
        Self {
            enabled: None,
            class_name: default_ingress_class(),
            host: None,
            tls_secret_name: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// The IngressClass of ingress-nginx.
pub const NGINX_CLASS: &str = "nginx";

impl IngressSpec {
    /// Served by ingress-nginx: what only ingress-nginx understands applies.
    pub fn is_nginx(&self) -> bool {
        self.class_name == NGINX_CLASS
    }
}

/// An HTTPRoute (gateway.networking.k8s.io/v1) attached to Gateways the platform team owns.
/// The operator writes its rules: everything to the app Service but `/metrics`, which the
/// Gateway answers itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Gateways (or their listeners) the route attaches to, as in an HTTPRoute's
    /// `parentRefs`; each Gateway's listeners must allow routes from this namespace.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<GatewayParentRef>,
    /// Host names the route serves, as in an HTTPRoute's `hostnames` (no wildcards); the
    /// first also becomes the service's `PUBLIC_BASE_URL`. Empty: every host the listeners
    /// accept, and the service uses each request's Host header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(inner(regex(pattern = HOST_PATTERN), length(min = 1, max = 253)))]
    pub hostnames: Vec<String>,
    /// Scheme of the public URL: `https` when the Gateway's listener terminates TLS (the
    /// Gateway, not the Shortener, holds the certificate), `http` otherwise.
    #[serde(default)]
    pub scheme: PublicScheme,
    /// Extra annotations for the HTTPRoute (e.g. external-dns).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Gateway the route attaches to (`group` and `kind` are always the Gateway API's Gateway).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway; the Shortener's own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// One listener of the Gateway, by name; all that accept the route when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
    /// The listeners of the Gateway on this port; all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PublicScheme {
    #[default]
    Https,
    Http,
}

impl PublicScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
        }
    }
}

/// How the service is reached from outside the cluster: the one reading of `ingress` and
/// `httpRoute` every builder asks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exposure<'a> {
    Ingress(&'a IngressSpec),
    HttpRoute(&'a HttpRouteSpec),
    /// Reachable in-cluster only.
    None,
}

impl<'a> Exposure<'a> {
    /// `scheme://host` for `PUBLIC_BASE_URL` and `status.url`, when the exposure names a host.
    pub fn public_base_url(&self) -> Option<String> {
        match self {
            Self::Ingress(ingress) => {
                let scheme = match ingress.tls_secret_name {
                    Some(_) => "https",
                    None => "http",
                };
                ingress
                    .host
                    .as_ref()
                    .map(|host| format!("{scheme}://{host}"))
            }
            Self::HttpRoute(route) => {
                let host = route.hostnames.first()?;
                Some(format!("{}://{host}", route.scheme.as_str()))
            }
            Self::None => None,
        }
    }

    /// Whether requests arrive through a proxy (an ingress controller or a Gateway).
    pub fn is_proxied(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// The Ingress, when that is the exposure.
    pub fn ingress(&self) -> Option<&'a IngressSpec> {
        match self {
            Self::Ingress(ingress) => Some(ingress),
            _ => None,
        }
    }

    /// The HTTPRoute, when that is the exposure.
    pub fn http_route(&self) -> Option<&'a HttpRouteSpec> {
        match self {
            Self::HttpRoute(route) => Some(route),
            _ => None,
        }
    }
}

impl ShortenerSpec {
    /// The exposure this spec asks for. Both at once is refused by the API server (CEL);
    /// a manifest that never went through it (`render -f`) is refused here with the same words.
    pub fn exposure(&self) -> Result<Exposure<'_>, String> {
        match (&self.http_route, self.ingress.enabled) {
            (Some(_), Some(true)) => Err(BOTH_EXPOSURES.to_string()),
            (Some(route), _) => Ok(Exposure::HttpRoute(route)),
            (None, Some(false)) => Ok(Exposure::None),
            (None, _) => Ok(Exposure::Ingress(&self.ingress)),
        }
    }
}

/// The API server's message (and `render`'s) for a spec asking for both exposures.
pub const BOTH_EXPOSURES: &str = "expose the Shortener by spec.ingress or by spec.httpRoute, not both: remove spec.httpRoute, or set spec.ingress.enabled to false (Shorteners created before spec.httpRoute existed have it stored as true)";

/// Either the embedded PostgreSQL (`postgres`) or an existing one (`external`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.postgres), has(self.external), has(self.cloudNativePG)].filter(x, x).size() <= 1").message("set at most one of database.postgres, database.cloudNativePG and database.external"))]
#[x_kube(validation = Rule::new("has(self.external) == has(oldSelf.external) && has(self.cloudNativePG) == has(oldSelf.cloudNativePG)").message("switching between the embedded, a CloudNativePG and an external database is not supported: back the data up, create a new Shortener and restore it there"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Embedded PostgreSQL settings (used when neither `cloudNativePG` nor `external` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
    /// Run the database on CloudNativePG (its operator must be installed): a `Cluster` with
    /// replicas and automated failover, and its `Pooler` in place of the embedded PgBouncer.
    #[serde(
        default,
        rename = "cloudNativePG",
        skip_serializing_if = "Option::is_none"
    )]
    pub cloud_native_pg: Option<CloudNativePgSpec>,
    /// Use an existing database instead of running PostgreSQL and PgBouncer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSecretRef>,
}

/// Where the service's database runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Database<'a> {
    /// The operator's own StatefulSet and PgBouncer (the default).
    Embedded(Box<PostgresSpec>),
    /// A CloudNativePG Cluster and Pooler the operator creates.
    CloudNativePg(&'a CloudNativePgSpec),
    /// An existing database at a URL from a Secret.
    External(&'a ExternalSecretRef),
}

impl DatabaseSpec {
    /// Where the database runs: `external`, then `cloudNativePG`, else the embedded one.
    pub fn mode(&self) -> Database<'_> {
        match (&self.external, &self.cloud_native_pg) {
            (Some(external), _) => Database::External(external),
            (None, Some(cnpg)) => Database::CloudNativePg(cnpg),
            (None, None) => Database::Embedded(Box::new(self.postgres.clone().unwrap_or_default())),
        }
    }

    /// Settings of the embedded database, or `None` when another one is used.
    pub fn embedded(&self) -> Option<PostgresSpec> {
        match self.mode() {
            Database::Embedded(postgres) => Some(*postgres),
            _ => None,
        }
    }

    /// Whether the operator runs the database (embedded or on CloudNativePG), and so its
    /// roles, pooler and Secrets.
    pub fn operated(&self) -> bool {
        self.external.is_none()
    }
}

/// The CloudNativePG `Cluster` the operator creates for the service (docs/operator.md,
/// "CloudNativePG").
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudNativePgSpec {
    /// PostgreSQL instances: one primary, the others streaming replicas, one of which is
    /// promoted when the primary fails.
    #[serde(default = "default_cnpg_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: i32,
    /// The PostgreSQL image (the Cluster's `imageName`; its tag starts with the major version);
    /// CloudNativePG's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image_name: Option<String>,
    /// Each instance's volume.
    #[serde(default)]
    pub storage: InstanceStorageSpec,
    /// Requests and limits of each instance's PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// PostgreSQL settings (`postgresql.parameters` of the Cluster: `shared_buffers`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// How long a primary that is being stopped (its pod deleted, its node drained) lets
    /// its sessions finish before it ends them: the Pooler keeps its server connections
    /// open, so the whole time passes before a replica is promoted. CloudNativePG's
    /// `smartShutdownTimeout`.
    #[serde(default = "default_smart_shutdown_seconds")]
    #[schemars(range(min = 0, max = 600))]
    pub smart_shutdown_timeout_seconds: i32,
    /// PgBouncer pods of the Pooler (its `instances`); its pool settings are `spec.pgbouncer`'s.
    #[serde(default = "default_pooler_instances")]
    #[schemars(range(min = 1, max = 10))]
    pub pooler_instances: i32,
    /// Limits of the role the service's requests run as.
    #[serde(default)]
    pub runtime_role: RuntimeRoleSpec,
    /// Options of the instances' pods (and of the role-setup Job's), over the Shortener-wide
    /// `pods`, as CloudNativePG takes them: labels and annotations as the Cluster's
    /// `inheritedMetadata`, node selector and tolerations in its `affinity`, the pod
    /// (anti-)affinity as its `additionalPodAffinity`/`additionalPodAntiAffinity` (beside its
    /// own preferred anti-affinity between instances).
    #[serde(default, skip_serializing_if = "is_default")]
    pub pods: PodOptions,
}

impl Default for CloudNativePgSpec {
    fn default() -> Self {
        Self {
            instances: default_cnpg_instances(),
            image_name: None,
            storage: InstanceStorageSpec::default(),
            resources: None,
            parameters: BTreeMap::new(),
            smart_shutdown_timeout_seconds: default_smart_shutdown_seconds(),
            pooler_instances: default_pooler_instances(),
            runtime_role: RuntimeRoleSpec::default(),
            pods: PodOptions::default(),
        }
    }
}

/// The volume of each CloudNativePG instance (the Cluster's `storage`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStorageSpec {
    /// Requested size of each instance's data volume; CloudNativePG grows the claims when it
    /// grows (where the StorageClass allows expansion).
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// StorageClass of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for InstanceStorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_cnpg_instances() -> i32 {
    3
}
fn default_pooler_instances() -> i32 {
    2
}
fn default_smart_shutdown_seconds() -> i32 {
    10
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// Major version of the official postgres image.
    #[serde(default = "default_postgres_version")]
    pub version: String,
    /// Full image reference; overrides `version` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Persistent volume for the data directory.
    #[serde(default)]
    pub storage: StorageSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Limits of the role the service's requests run as.
    #[serde(default)]
    pub runtime_role: RuntimeRoleSpec,
    /// Options of the database's pod (and of the role-setup and backup Jobs'), over the
    /// Shortener-wide `pods`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pods: PodOptions,
    /// Scheduled logical backups (`pg_dump`) onto a volume of their own, which outlives the
    /// Shortener (docs/operator.md, "Backup and restore").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Fills a new, empty database from a backup before the service first connects; a
    /// database that already has the service's schema is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
}

/// When and how many backups of the embedded database are kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to take one, in cron syntax (`0 3 * * *`, or `@daily`), in `timeZone`.
    #[schemars(regex(pattern = CRON_PATTERN))]
    #[schemars(length(max = 100))]
    pub schedule: String,
    /// IANA time zone of the schedule (`Europe/Paris`); the controller manager's, usually
    /// UTC, when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// How many backups to keep: each run deletes the oldest beyond this number.
    #[serde(default = "default_backups_kept")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: i32,
    /// Takes no backup while true (the ones taken stay).
    #[serde(default)]
    pub suspend: bool,
    /// The backups' volume, the claim `NAME-backups`: created once, never deleted by the
    /// operator.
    #[serde(default)]
    pub storage: BackupStorageSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStorageSpec {
    /// Requested size of the backups' volume.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// StorageClass of the backups' volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for BackupStorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Which backup a new database starts from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The claim holding the backups, in the Shortener's namespace: `NAME-backups` (this
    /// Shortener's own, kept from an earlier one of the same name) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: Option<String>,
    /// A backup's file name on that volume (`20261207T030000Z.dump`), or `latest`.
    #[serde(default = "default_restore_backup")]
    #[schemars(regex(pattern = RESTORE_BACKUP_PATTERN))]
    #[schemars(length(max = 128))]
    pub backup: String,
}

/// Five cron fields (each of digits, `*`, `,`, `-`, `/`, month or day names) or a macro;
/// the CronJob controller parses the rest.
const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*,/?-]+( [0-9A-Za-z*,/?-]+){4})$";
/// `latest`, or a plain file name ending in `.dump` (never a path).
const RESTORE_BACKUP_PATTERN: &str = r"^(latest|[A-Za-z0-9][A-Za-z0-9._-]*\.dump)$";

fn default_backups_kept() -> i32 {
    7
}

fn default_restore_backup() -> String {
    "latest".into()
}

impl Default for PostgresSpec {
    fn default() -> Self {
        Self {
            version: default_postgres_version(),
            image: None,
            storage: StorageSpec::default(),
            resources: None,
            runtime_role: RuntimeRoleSpec::default(),
            pods: PodOptions::default(),
            backup: None,
            restore: None,
        }
    }
}

/// Set on the runtime role itself (`ALTER ROLE ... SET`), since PgBouncer's transaction
/// pooling cannot carry per-connection options: every server connection PgBouncer opens for
/// the service gets them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRoleSpec {
    /// `statement_timeout`: the default is the service's request timeout
    /// (`REQUEST_TIMEOUT_SECS`, 10 s); a statement outliving its request is work for nobody.
    #[serde(default = "default_statement_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    #[schemars(transform = without_format)]
    pub statement_timeout_seconds: u32,
    /// `idle_in_transaction_session_timeout`: ends a session left inside a transaction
    /// (holding its locks and a pooled server connection) this long.
    #[serde(default = "default_idle_in_transaction_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    #[schemars(transform = without_format)]
    pub idle_in_transaction_timeout_seconds: u32,
}

impl Default for RuntimeRoleSpec {
    fn default() -> Self {
        Self {
            statement_timeout_seconds: default_statement_timeout(),
            idle_in_transaction_timeout_seconds: default_idle_in_transaction_timeout(),
        }
    }
}

impl PostgresSpec {
    pub fn image(&self) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| format!("postgres:{}", self.version))
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of the data volume.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// StorageClass of the data volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Delete the data volume with the Shortener. Off (the default), the claim
    /// `data-NAME-postgres-0` and its data outlive the Shortener until deleted by hand.
    #[serde(default)]
    pub delete_on_removal: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            delete_on_removal: false,
        }
    }
}

/// A key of a Secret in the Shortener's namespace holding a connection URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Key holding the URL (postgres://... or redis://...).
    #[serde(default = "default_url_key")]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBouncerSpec {
    #[serde(default = "default_pgbouncer_image")]
    pub image: String,
    /// `transaction`, the only mode the service runs under: `statement` pooling forbids the
    /// transactions it writes in (click batches, bulk imports), and `session` pooling would
    /// pin one server connection to each of the replicas' pooled client connections, so
    /// that replicas × `databasePoolSize` above `defaultPoolSize` would wait forever.
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// Server connections per database/user pair. The embedded PostgreSQL's
    /// `max_connections` is raised to cover it (never below 100).
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1, max = 1000))]
    #[schemars(transform = without_format)]
    pub default_pool_size: u32,
    /// Client connections accepted in total.
    #[serde(default = "default_max_client_conn")]
    #[schemars(range(min = 1, max = 100000))]
    #[schemars(transform = without_format)]
    pub max_client_connections: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Options of PgBouncer's pods, over the Shortener-wide `pods`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pods: PodOptions,
}

impl Default for PgBouncerSpec {
    fn default() -> Self {
        Self {
            image: default_pgbouncer_image(),
            pool_mode: PoolMode::default(),
            default_pool_size: default_pool_size(),
            max_client_connections: default_max_client_conn(),
            resources: None,
            pods: PodOptions::default(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    #[default]
    Transaction,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transaction => "transaction",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(redis_memory_rule()).message(kube::core::Message::Message(redis_memory_message())))]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    #[serde(default = "default_redis_image")]
    pub image: String,
    /// Redis `maxmemory` (`b`, `kb`, `mb`, `gb`: powers of 1024). Keep it at most 80% of the
    /// Redis container's memory limit, so that Redis evicts before the kernel's OOM killer stops
    /// it (the API server checks it against the default limit, 96Mi, when `resources` is not set).
    #[serde(default = "default_redis_maxmemory")]
    #[schemars(regex(pattern = r"^[0-9]+(b|kb|mb|gb)$"), length(max = 16))]
    pub max_memory: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Use an existing Redis instead of running one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSecretRef>,
    /// Options of Redis's pod, over the Shortener-wide `pods`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pods: PodOptions,
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            image: default_redis_image(),
            max_memory: default_redis_maxmemory(),
            resources: None,
            external: None,
            pods: PodOptions::default(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// ServiceMonitor for the app pods (needs the Prometheus Operator CRDs).
    #[serde(default = "default_true")]
    pub service_monitor: bool,
    /// PrometheusRule with the alerts (needs the Prometheus Operator CRDs).
    #[serde(default = "default_true")]
    pub prometheus_rule: bool,
    /// ConfigMap labelled `grafana_dashboard: "1"` for the Grafana sidecar.
    #[serde(default = "default_true")]
    pub grafana_dashboard: bool,
    /// Extra labels for ServiceMonitor and PrometheusRule, e.g. `release: kube-prometheus-stack`
    /// so the Prometheus instance's selectors pick them up.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self {
            service_monitor: true,
            prometheus_rule: true,
            grafana_dashboard: true,
            labels: BTreeMap::new(),
        }
    }
}

/// Every pod of the instance denies all traffic but DNS; each component then admits exactly
/// the flows of the stack (see docs/security.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies (enforced only where the cluster's CNI supports them).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Labels of the namespace(s) of the ingress controller, the only source of traffic to
    /// the app's HTTP port besides Prometheus while the service is exposed by an Ingress.
    #[serde(default = "default_ingress_controller_namespace")]
    pub ingress_controller_namespace_selector: BTreeMap<String, String>,
    /// Labels of the namespace(s) where the Gateway implementation's proxies run, the only
    /// source of traffic to the app's HTTP port besides Prometheus while the service is
    /// exposed by an HTTPRoute. Unset: the namespaces of `httpRoute.parentRefs` (where most
    /// implementations run a Gateway's proxies); set it when they run elsewhere, e.g.
    /// `kubernetes.io/metadata.name: envoy-gateway-system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_namespace_selector: Option<BTreeMap<String, String>>,
    /// Labels of the namespace(s) of Prometheus, which scrapes the app's `/metrics`.
    #[serde(default = "default_prometheus_namespace")]
    pub prometheus_namespace_selector: BTreeMap<String, String>,
    /// Labels of the namespace of CloudNativePG's operator, which manages the instances
    /// over their port 8000 and PostgreSQL's (with `database.cloudNativePG`).
    #[serde(default = "default_cloud_native_pg_namespace")]
    #[serde(rename = "cloudNativePGNamespaceSelector")]
    pub cloud_native_pg_namespace_selector: BTreeMap<String, String>,
    /// Where the Kubernetes API server listens, for the pods that call it (CloudNativePG's
    /// instances and poolers): the policies match the address a Service's traffic is sent
    /// to, the API server's own, not the `kubernetes` Service's.
    #[serde(default)]
    pub api_server: ApiServerPeer,
}

/// The API server's addresses and ports as NetworkPolicies see them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerPeer {
    /// CIDRs of the API server's endpoints (`kubectl get endpointslice -n default -l
    /// kubernetes.io/service-name=kubernetes`); any address when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub cidrs: Vec<String>,
    /// Its TCP ports (most clusters: 443 or 6443).
    #[serde(default = "default_api_server_ports")]
    #[schemars(length(min = 1, max = 8), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
}

impl Default for ApiServerPeer {
    fn default() -> Self {
        Self {
            cidrs: Vec::new(),
            ports: default_api_server_ports(),
        }
    }
}

fn default_api_server_ports() -> Vec<i32> {
    vec![443, 6443]
}
fn default_cloud_native_pg_namespace() -> BTreeMap<String, String> {
    namespace_named("cnpg-system")
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            ingress_controller_namespace_selector: default_ingress_controller_namespace(),
            gateway_namespace_selector: None,
            prometheus_namespace_selector: default_prometheus_namespace(),
            cloud_native_pg_namespace_selector: default_cloud_native_pg_namespace(),
            api_server: ApiServerPeer::default(),
        }
    }
}

fn namespace_named(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())])
}
fn default_ingress_controller_namespace() -> BTreeMap<String, String> {
    namespace_named("ingress-nginx")
}
fn default_prometheus_namespace() -> BTreeMap<String, String> {
    namespace_named("monitoring")
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShortenerStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, Paused, MonitoringAvailable and RouteAccepted.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// App pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// App pods that exist (for the scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Label selector of the app pods (for the scale subresource and HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Where users reach the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When the newest backup of the embedded database was taken (the backup CronJob's
    /// last successful run), with `database.postgres.backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The CloudNativePG Cluster as its operator reports it, with `database.cloudNativePG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,
}

/// What CloudNativePG says of the Cluster (its `status`), for `kubectl get shortener -o wide`
/// and alerts, without reading the Cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// The Cluster's phase (`Cluster in healthy state`, `Failing over`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The instance pod that is the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Instances ready, of `instances`.
    #[serde(default)]
    pub ready_instances: i32,
    #[serde(default)]
    pub instances: i32,
}

fn default_true() -> bool {
    true
}
fn default_app_image() -> String {
    "shortener:0.1.0".into()
}
fn default_app_replicas() -> i32 {
    3
}
fn default_log_level() -> String {
    "info".into()
}
fn default_ingress_class() -> String {
    NGINX_CLASS.into()
}
const DEFAULT_POSTGRES_VERSION: &str = "17";
const DEFAULT_STORAGE_SIZE: &str = "1Gi";

/// CEL for `database.postgres.<path>` of `root` (`self` or `oldSelf` of the spec) as a
/// string, or `default` when any step of the path is absent.
fn postgres_field(root: &str, path: &str, default: &str) -> String {
    let mut steps = vec![
        format!("{root}.database"),
        format!("{root}.database.postgres"),
    ];
    let mut prefix = format!("{root}.database.postgres");
    for part in path.split('.') {
        prefix = format!("{prefix}.{part}");
        steps.push(prefix.clone());
    }
    let present = steps
        .iter()
        .map(|step| format!("has({step})"))
        .collect::<Vec<_>>()
        .join(" && ");
    format!("({present} ? {prefix} : {default})")
}

/// Kubernetes knows the integer formats int32 and int64 only, and warns about schemars'
/// `uint32` on every write of the CRD; the field's range bounds it instead.
fn default_min_replicas() -> i32 {
    2
}
fn default_cpu_utilization() -> i32 {
    70
}

fn without_format(schema: &mut schemars::Schema) {
    schema.remove("format");
}

fn default_postgres_version() -> String {
    DEFAULT_POSTGRES_VERSION.into()
}
fn default_storage_size() -> Quantity {
    Quantity(DEFAULT_STORAGE_SIZE.into())
}
fn default_statement_timeout() -> u32 {
    10
}
fn default_idle_in_transaction_timeout() -> u32 {
    30
}
fn default_url_key() -> String {
    "url".into()
}
fn default_pgbouncer_image() -> String {
    "edoburu/pgbouncer:v1.24.1-p1".into()
}
fn default_pool_size() -> u32 {
    20
}
fn default_max_client_conn() -> u32 {
    200
}
fn default_redis_image() -> String {
    "redis:7.4-alpine".into()
}
/// The Redis container's memory limit when `redis.resources` is not set.
pub const DEFAULT_REDIS_MEMORY_LIMIT: &str = "96Mi";

/// The share of the Redis container's memory limit `maxmemory` may take: the rest is Redis's
/// own (client buffers, fragmentation, the process).
pub const REDIS_MAXMEMORY_SHARE_PERCENT: u32 = 80;

fn redis_memory_message() -> String {
    format!(
        "redis.maxMemory may be at most {REDIS_MAXMEMORY_SHARE_PERCENT}% of the Redis container's default memory limit ({DEFAULT_REDIS_MEMORY_LIMIT}): Redis needs the rest for itself, or the kernel kills it before it evicts; set redis.resources with a larger limit"
    )
}

/// `maxmemory` against the default memory limit, as quantities (Redis's `mb` is 1024², a
/// Kubernetes `Mi`), when `redis.resources` is not set: raising `maxMemory` alone is the likely
/// mistake. A limit set in `redis.resources` is not compared: it may be a number of bytes,
/// and telling a number from a string needs CEL's `type()`, which kube's client-side CEL
/// evaluation (the examples' tests) does not support. Nothing to check with an external Redis.
fn redis_memory_rule() -> String {
    let configured =
        format!("(has(self.maxMemory) ? self.maxMemory : '{DEFAULT_REDIS_MAXMEMORY}')");
    let max_memory = ["gb", "mb", "kb"].iter().rev().fold(
        format!("{configured}.replace('b', '')"),
        |otherwise, unit| {
            let quantity = format!("{}i", unit[..1].to_uppercase());
            format!(
                "({configured}.endsWith('{unit}') ? {configured}.replace('{unit}', '{quantity}') : {otherwise})"
            )
        },
    );
    format!(
        "has(self.external) || has(self.resources) || quantity({max_memory}).asApproximateFloat() * 100.0 <= quantity('{DEFAULT_REDIS_MEMORY_LIMIT}').asApproximateFloat() * {REDIS_MAXMEMORY_SHARE_PERCENT}.0"
    )
}

/// Redis's `maxmemory` when `redis.maxMemory` is not set.
pub const DEFAULT_REDIS_MAXMEMORY: &str = "48mb";

fn default_redis_maxmemory() -> String {
    DEFAULT_REDIS_MAXMEMORY.into()
}
