//! Pure builders for every object the operator manages.
//!
//! Nothing here talks to the API server: given a `Shortener` they return the objects the
//! reconciler applies, so the same code backs `render`, the reconciler and the tests.

pub mod app;
pub mod autoscaling;
pub mod backup;
pub mod cloudnative_pg;
pub mod exposure;
pub mod monitoring;
pub mod network;
pub mod pgbouncer;
pub mod postgres;
pub mod redis;
pub mod roles;
pub mod secrets;
pub mod stack;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    PersistentVolumeClaim, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject};
use serde_json::Value;

use crate::crd::{Database, Exposure, Shortener};
use crate::error::{Error, Result};
use crate::gateway_api::{self, HTTPRoute};

/// Field manager for every server-side apply; one owner for all children keeps conflicts visible.
pub const FIELD_MANAGER: &str = "shortener-operator";
pub const APP_NAME: &str = "shortener";
pub const MANAGED_BY: &str = "shortener-operator";

/// The labels the operator puts on every object it makes (the first three select a
/// component's pods), in [`Instance::labels`]' order: a Shortener's `pods.labels` may not
/// set them.
pub const OWN_LABEL_KEYS: [&str; 5] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
];
/// Annotation carrying a digest of the configuration a pod template depends on, so config
/// changes roll the pods even though ConfigMap contents are not part of the template.
pub const CONFIG_HASH_ANNOTATION: &str = "shortener.dev/config-hash";
/// On the superuser's Secret when the database volume outlives the Shortener: the claim it
/// goes with (see [`Instance::kept_for_it`]).
pub const KEPT_WITH_CLAIM_ANNOTATION: &str = "shortener.dev/kept-with-claim";

/// Placeholder uid used by `render`, where the Shortener was never stored by an API server.
pub const RENDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// The parts of the stack, used in names and in the `app.kubernetes.io/component` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    App,
    Postgres,
    PgBouncer,
    Redis,
    Monitoring,
    /// The Job that sets up the database roles (and restores a backup into a new database).
    RoleSetup,
    /// The CronJob that backs the database up, and its volume.
    Backup,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Postgres => "postgres",
            Self::PgBouncer => "pgbouncer",
            Self::Redis => "redis",
            Self::Monitoring => "monitoring",
            Self::RoleSetup => "postgres-roles",
            Self::Backup => "postgres-backup",
        }
    }
}

/// A validated view of one Shortener: everything builders need besides the spec.
#[derive(Clone, Debug)]
pub struct Instance<'a> {
    pub shortener: &'a Shortener,
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    exposure: Exposure<'a>,
}

/// `Kind/name`: how an object is named in messages and events, and how a pass tells
/// the children it applied from those it did not.
pub fn object_key(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

impl<'a> Instance<'a> {
    pub fn new(shortener: &'a Shortener) -> Result<Self> {
        let name = shortener
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingObjectKey("metadata.name"))?;
        let namespace = shortener
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let mut owner = shortener
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("metadata.uid"))?;
        // kube leaves blockOwnerDeletion unset; with it, a foreground deletion of the
        // Shortener waits for its children (what the `shorteners/finalizers` RBAC rule is for).
        owner.block_owner_deletion = Some(true);
        let exposure = shortener.spec.exposure().map_err(Error::InvalidSpec)?;
        Ok(Self {
            shortener,
            name,
            namespace,
            owner,
            exposure,
        })
    }

    /// How the service is reached from outside the cluster.
    pub fn exposure(&self) -> Exposure<'a> {
        self.exposure
    }

    pub fn spec(&self) -> &crate::crd::ShortenerSpec {
        &self.shortener.spec
    }

    /// Whether this Shortener made the object: an owner reference with its uid. The one
    /// test of "ours": what is not ours is never changed, taken over or deleted.
    pub fn owns(&self, meta: &ObjectMeta) -> bool {
        let owners = meta.owner_references.iter().flatten();
        owners.clone().any(|o| o.uid == self.owner.uid)
    }

    /// Whether the embedded database's volume outlives this Shortener (the default,
    /// `storage.deleteOnRemoval: false`). The superuser's password then lives as long: the
    /// volume's database was initialised with it, so a Shortener of the same name created
    /// later on that volume needs it (the role-setup Job sets every other password again).
    pub fn keeps_its_volume(&self) -> bool {
        self.spec()
            .database
            .embedded()
            .is_some_and(|postgres| !postgres.storage.delete_on_removal)
    }

    /// A Secret an earlier Shortener of this name left with the volume it kept (no owner, our
    /// labels for this instance, the annotation naming this instance's claim): reused as it
    /// is, not refused as someone else's.
    pub fn kept_for_it(&self, meta: &ObjectMeta) -> bool {
        let kept_with = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(KEPT_WITH_CLAIM_ANNOTATION));
        self.left_for_it(meta) && kept_with == Some(&postgres::claim_name(self))
    }

    /// The backups' claim made for a Shortener of this name (no owner, our labels for this
    /// instance and the backup component): kept through the Shortener's deletion, reused.
    pub fn keeps_as_backups(&self, meta: &ObjectMeta) -> bool {
        let component = meta
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/component"));
        self.left_for_it(meta) && component.map(String::as_str) == Some(Component::Backup.as_str())
    }

    /// No owner, and this instance's labels: made by the operator for a Shortener of this
    /// name, to outlive it.
    fn left_for_it(&self, meta: &ObjectMeta) -> bool {
        let label = |key: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(key))
                .map(String::as_str)
        };
        meta.owner_references.as_ref().is_none_or(Vec::is_empty)
            && label("app.kubernetes.io/name") == Some(APP_NAME)
            && label("app.kubernetes.io/instance") == Some(self.name.as_str())
            && label("app.kubernetes.io/managed-by") == Some(MANAGED_BY)
    }

    /// Name of a child of the given component: the app keeps the bare instance name.
    pub fn child_name(&self, component: Component) -> String {
        match component {
            Component::App | Component::Monitoring => self.name.clone(),
            other => format!("{}-{}", self.name, other.as_str()),
        }
    }

    pub fn selector_labels(&self, component: Component) -> BTreeMap<String, String> {
        let [name, instance, component_key, ..] = OWN_LABEL_KEYS;
        BTreeMap::from([
            (name.to_string(), APP_NAME.to_string()),
            (instance.to_string(), self.name.clone()),
            (component_key.to_string(), component.as_str().to_string()),
        ])
    }

    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let [.., managed_by, part_of] = OWN_LABEL_KEYS;
        let mut labels = self.selector_labels(component);
        labels.insert(managed_by.to_string(), MANAGED_BY.to_string());
        labels.insert(part_of.to_string(), APP_NAME.to_string());
        labels
    }

    /// Metadata of a child: namespaced, labelled and owned (so deleting the Shortener
    /// garbage-collects the stack and `.owns()` watches route child events back to it).
    pub fn meta(&self, name: impl Into<String>, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    pub fn database_secret_name(&self) -> String {
        format!("{}-db", self.name)
    }

    /// The schema owner's credentials (runs the migrations).
    pub fn owner_secret_name(&self) -> String {
        format!("{}-db-owner", self.name)
    }

    /// The runtime role's credentials, with PgBouncer's userlist (which must hold that very
    /// password, so both are generated and stored together) and its console user's.
    pub fn runtime_secret_name(&self) -> String {
        format!("{}-db-app", self.name)
    }

    pub fn admin_secret_name(&self) -> String {
        format!("{}-admin", self.name)
    }

    pub fn redis_secret_name(&self) -> String {
        format!("{}-redis-auth", self.name)
    }

    /// Selector string of the app pods, as published for the scale subresource.
    pub fn app_selector(&self) -> String {
        selector(&self.selector_labels(Component::App))
    }

    /// Selector of everything this instance's children carry, whatever their component:
    /// what pruning lists by.
    pub fn instance_selector(&self) -> String {
        let mut labels = self.labels(Component::App);
        labels.remove("app.kubernetes.io/component");
        labels.remove("app.kubernetes.io/part-of");
        selector(&labels)
    }

    /// `PUBLIC_BASE_URL`: the public host of the Ingress or the HTTPRoute, when it names one.
    /// The one derivation of the public URL; `public_url` and the ConfigMap read it.
    pub fn public_base_url(&self) -> Option<String> {
        self.exposure.public_base_url()
    }

    /// Where users reach the service: the public host when there is one, else the in-cluster URL.
    pub fn public_url(&self) -> String {
        self.public_base_url().unwrap_or_else(|| {
            format!(
                "http://{}.{}.svc.cluster.local",
                self.child_name(Component::App),
                self.namespace
            )
        })
    }

    /// The app's API inside the cluster, through its Service (what the link sync calls).
    pub fn service_url(&self) -> String {
        format!(
            "http://{}.{}.svc:{}",
            self.child_name(Component::App),
            self.namespace,
            exposure::APP_SERVICE_PORT
        )
    }
}

impl Instance<'_> {
    /// The pooler the service's requests go through, and its port: the embedded PgBouncer,
    /// or CloudNativePG's Pooler. (Meaningless for an external database.)
    pub fn pooler_address(&self) -> (String, i32) {
        match self.spec().database.cloud_native_pg {
            Some(_) => (
                cloudnative_pg::pooler_name(self),
                cloudnative_pg::POOLER_PORT,
            ),
            None => (self.child_name(Component::PgBouncer), stack::PGBOUNCER_PORT),
        }
    }

    /// The Service of the primary PostgreSQL (port 5432), where the migrations and the
    /// role setup connect: the StatefulSet's, or the CloudNativePG Cluster's `-rw`.
    pub fn primary_host(&self) -> String {
        match self.spec().database.cloud_native_pg {
            Some(_) => cloudnative_pg::primary_service(self),
            None => self.child_name(Component::Postgres),
        }
    }
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One object to server-side apply: typed where k8s-openapi (or `gateway_api`) has bindings;
/// the Prometheus Operator's and CloudNativePG's kinds have none and stay dynamic.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a pass holds a few dozen children, once: boxing the workload kinds would save \
              kilobytes and cost an indirection at every match"
)]
pub enum Child {
    ServiceAccount(ServiceAccount),
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    PodDisruptionBudget(PodDisruptionBudget),
    Job(Job),
    CronJob(CronJob),
    Ingress(Ingress),
    HTTPRoute(HTTPRoute),
    NetworkPolicy(NetworkPolicy),
    Dynamic(ApiResource, DynamicObject),
}

/// `match` over a child with the same expression for every typed variant, so generic code
/// (`Api<K>`) is written once: `on_child!(child, typed => expr, (resource, object) => expr)`.
macro_rules! on_child {
    ($child:expr, $o:ident => $typed:expr, ($r:pat, $d:pat) => $dynamic:expr) => {
        match $child {
            Child::ServiceAccount($o) => $typed,
            Child::ConfigMap($o) => $typed,
            Child::Service($o) => $typed,
            Child::StatefulSet($o) => $typed,
            Child::Deployment($o) => $typed,
            Child::HorizontalPodAutoscaler($o) => $typed,
            Child::PodDisruptionBudget($o) => $typed,
            Child::Job($o) => $typed,
            Child::CronJob($o) => $typed,
            Child::Ingress($o) => $typed,
            Child::HTTPRoute($o) => $typed,
            Child::NetworkPolicy($o) => $typed,
            Child::Dynamic($r, $d) => $dynamic,
        }
    };
}
pub(crate) use on_child;

macro_rules! child_from {
    ($($kind:ident),*) => {
        $(impl From<$kind> for Child {
            fn from(object: $kind) -> Self {
                Self::$kind(object)
            }
        })*
    };
}
child_from!(
    ServiceAccount,
    ConfigMap,
    Service,
    StatefulSet,
    Deployment,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    Job,
    CronJob,
    Ingress,
    HTTPRoute,
    NetworkPolicy
);

fn resource_of<K: Resource<DynamicType = ()>>(_: &K) -> ApiResource {
    ApiResource::erase::<K>(&())
}

impl Child {
    pub fn resource(&self) -> ApiResource {
        on_child!(self, o => resource_of(o), (resource, _) => resource.clone())
    }

    pub fn kind(&self) -> String {
        self.resource().kind
    }

    pub fn meta(&self) -> &ObjectMeta {
        on_child!(self, o => &o.metadata, (_, object) => &object.metadata)
    }

    pub fn name(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }

    /// `Kind/name`, as children are named in messages and events.
    pub fn key(&self) -> String {
        object_key(&self.kind(), &self.name())
    }

    /// The object as JSON, with apiVersion and kind, exactly as sent in the apply patch.
    pub fn to_value(&self) -> Result<Value> {
        on_child!(self, o => serde_json::to_value(o), (_, object) => serde_json::to_value(object))
            .map_err(|e| Error::Build("child", e))
    }

    /// The object with apiVersion, kind and metadata first, as `render` prints it.
    pub fn to_dynamic(&self) -> Result<DynamicObject> {
        serde_json::from_value(self.to_value()?).map_err(|e| Error::Build("child", e))
    }
}

/// The optional APIs the operator writes to, each only while the cluster serves it: the
/// Prometheus Operator's ServiceMonitor and PrometheusRule, the Gateway API's HTTPRoute.
/// Discovered once per pass (`cluster::served_apis`); everything that depends on whether one
/// is served (what is built, watched, pruned, and the conditions) reads this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionalApis {
    /// `monitoring.coreos.com/v1` serves servicemonitors and prometheusrules.
    pub monitoring: bool,
    /// `gateway.networking.k8s.io/v1` serves httproutes.
    pub gateway: bool,
    /// `postgresql.cnpg.io/v1` serves clusters and poolers.
    pub cloud_native_pg: bool,
}

impl OptionalApis {
    /// Every optional API served, as `render` assumes.
    pub const ALL: Self = Self {
        monitoring: true,
        gateway: true,
        cloud_native_pg: true,
    };
}

/// The kinds `desired_state` applies, Secrets aside (created once, never pruned): the owned
/// watches and pruning cover exactly these. The optional kinds count only while served.
pub fn managed_kinds(apis: OptionalApis) -> Vec<ApiResource> {
    let mut kinds = vec![
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<Job>(&()),
        ApiResource::erase::<CronJob>(&()),
        ApiResource::erase::<Ingress>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
    ];
    if apis.gateway {
        kinds.push(gateway_api::http_route_resource());
    }
    if apis.monitoring {
        kinds.push(monitoring::service_monitor_resource());
        kinds.push(monitoring::prometheus_rule_resource());
    }
    if apis.cloud_native_pg {
        kinds.push(cloudnative_pg::cluster_resource());
        kinds.push(cloudnative_pg::pooler_resource());
    }
    kinds
}

/// The order orphans are pruned in: the reverse of the order children are applied, so what
/// routes to a Service goes before the Service (an Ingress whose `/metrics` backend went
/// first would, for a moment, send `/metrics` to the app on some controllers).
pub fn prune_order(apis: OptionalApis) -> Vec<ApiResource> {
    let mut kinds = managed_kinds(apis);
    kinds.reverse();
    kinds
}

/// Everything the reconciler writes for one Shortener.
#[derive(Clone, Debug)]
pub struct DesiredState {
    /// Created once if absent, never updated: they hold generated credentials.
    pub secrets: Vec<Secret>,
    /// Created once if absent, never updated nor deleted: the backups' volume.
    pub claims: Vec<PersistentVolumeClaim>,
    /// Server-side applied on every reconcile, in this order.
    pub children: Vec<Child>,
}

/// What the reconciler learned from the cluster before building.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Which optional APIs the cluster serves.
    pub apis: OptionalApis,
    /// Storage size in the existing PostgreSQL StatefulSet's claim template (immutable there).
    pub postgres_template_size: Option<String>,
    /// The namespace the operator runs in: its pods may call the app (the ShortLink sync).
    pub operator_namespace: Option<String>,
}

/// Generated credentials, or placeholders when rendering without a cluster.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The superuser's: used by the role-setup Job only.
    pub database_password: String,
    pub owner_password: String,
    pub runtime_password: String,
    pub pgbouncer_admin_password: String,
    pub admin_api_key: String,
    pub redis_password: String,
}

impl Credentials {
    pub fn generate() -> Self {
        Self {
            database_password: secrets::random_token(32),
            owner_password: secrets::random_token(32),
            runtime_password: secrets::random_token(32),
            pgbouncer_admin_password: secrets::random_token(32),
            admin_api_key: secrets::random_token(40),
            redis_password: secrets::random_token(32),
        }
    }

    /// Stable values for `render` and snapshots; the real operator never writes these.
    pub fn placeholder() -> Self {
        Self {
            database_password: "generated-by-operator".into(),
            owner_password: "generated-by-operator".into(),
            runtime_password: "generated-by-operator".into(),
            pgbouncer_admin_password: "generated-by-operator".into(),
            admin_api_key: "generated-by-operator".into(),
            redis_password: "generated-by-operator".into(),
        }
    }
}

/// Every object for one Shortener, in apply order (config before the workloads that read it).
pub fn desired_state(
    instance: &Instance<'_>,
    observed: &Observed,
    credentials: &Credentials,
) -> Result<DesiredState> {
    let spec = instance.spec();
    let mut secrets = Vec::new();
    let mut claims = Vec::new();
    let mut children = Vec::new();

    let database = spec.database.mode();
    if let Database::Embedded(_) = database {
        secrets.push(secrets::database_secret(
            instance,
            &credentials.database_password,
        ));
    }
    if spec.database.operated() {
        secrets.push(secrets::owner_secret(instance, &credentials.owner_password));
        secrets.push(secrets::runtime_secret(
            instance,
            &credentials.runtime_password,
            &credentials.pgbouncer_admin_password,
        ));
    }
    if spec.app.config.auth_mode() == crate::crd::AuthMode::ApiKey {
        secrets.push(secrets::admin_secret(instance, &credentials.admin_api_key));
    }
    if spec.redis.external.is_none() {
        secrets.push(secrets::redis_secret(instance, &credentials.redis_password));
    }

    children.push(app::service_account(instance).into());
    let app_config = app::config_map(instance);
    children.push(app_config.clone().into());
    // Isolation first, so no pod of the stack ever runs without it.
    for policy in network::policies(instance, observed.operator_namespace.as_deref()) {
        children.push(policy.into());
    }

    // Without CloudNativePG's API there is nothing to write the Cluster to: the status says so.
    if let Database::CloudNativePg(cnpg) = database
        && observed.apis.cloud_native_pg
    {
        children.push(cloudnative_pg::cluster(instance, cnpg));
        children.push(roles::cloud_native_pg_job(instance, cnpg).into());
        children.push(cloudnative_pg::pooler(instance, cnpg));
    }
    if let Database::Embedded(postgres) = database {
        let size = observed.postgres_template_size.as_deref();
        children.push(postgres::headless_service(instance).into());
        children.push(postgres::stateful_set(instance, &postgres, size).into());
        children.push(postgres::pod_disruption_budget(instance).into());
        children.push(roles::job(instance, &postgres).into());
        if let Some(schedule) = &postgres.backup {
            claims.push(backup::claim(instance, schedule));
            children.push(backup::cron_job(instance, &postgres, schedule).into());
        }
        let pgbouncer_config = pgbouncer::config_map(instance);
        children.push(pgbouncer_config.clone().into());
        children.push(pgbouncer::service(instance).into());
        children.push(pgbouncer::deployment(instance, &pgbouncer_config).into());
        children.push(pod_disruption_budget(instance, Component::PgBouncer, 1).into());
    }
    if spec.redis.external.is_none() {
        let redis_config = redis::config_map(instance);
        children.push(redis_config.clone().into());
        children.push(redis::service(instance).into());
        children.push(redis::deployment(instance, &redis_config).into());
        children.push(pod_disruption_budget(instance, Component::Redis, 1).into());
    }

    children.push(app::service(instance).into());
    children.push(app::deployment(instance, &app_config).into());
    if let Some(autoscaler) = autoscaling::horizontal_pod_autoscaler(instance) {
        children.push(autoscaler.into());
    }
    children.push(app::pod_disruption_budget(instance).into());
    match instance.exposure() {
        Exposure::Ingress(ingress) => {
            children.push(exposure::unrouted_service(instance).into());
            children.push(exposure::ingress(instance, ingress).into());
        }
        // Without the Gateway API there is nothing to write it to: the status says so.
        Exposure::HttpRoute(route) if observed.apis.gateway => {
            children.push(exposure::http_route(instance, route).into())
        }
        Exposure::HttpRoute(_) | Exposure::None => {}
    }

    let monitoring = &spec.monitoring;
    if monitoring.grafana_dashboard {
        children.push(monitoring::dashboard_config_map(instance)?.into());
    }
    if observed.apis.monitoring {
        if monitoring.service_monitor {
            children.push(monitoring::service_monitor(instance)?);
        }
        if monitoring.prometheus_rule {
            children.push(monitoring::prometheus_rule(instance)?);
        }
    }

    Ok(DesiredState {
        secrets,
        claims,
        children,
    })
}

/// The PodDisruptionBudget of one component's pods: at most `max_unavailable` of them may be
/// evicted at a time (0: none; a drain of their node waits). What each budget means for a
/// drain is in docs/operator.md ("Node drains").
pub fn pod_disruption_budget(
    instance: &Instance<'_>,
    component: Component,
    max_unavailable: i32,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: instance.meta(instance.child_name(component), component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(match_labels(instance.selector_labels(component))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A selector of exactly these labels.
pub fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    }
}

/// Resource requirements: the user's override, or the component's budgeted default.
pub fn resources(
    custom: Option<&ResourceRequirements>,
    default: ResourceBudget,
) -> ResourceRequirements {
    custom.cloned().unwrap_or_else(|| default.requirements())
}

/// Default requests and limits of one container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceBudget {
    pub cpu_request: &'static str,
    pub memory_request: &'static str,
    pub cpu_limit: &'static str,
    pub memory_limit: &'static str,
}

impl ResourceBudget {
    fn requirements(self) -> ResourceRequirements {
        let quantities = |cpu: &str, memory: &str| {
            Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(cpu.into())),
                ("memory".to_string(), Quantity(memory.into())),
            ]))
        };
        ResourceRequirements {
            requests: quantities(self.cpu_request, self.memory_request),
            limits: quantities(self.cpu_limit, self.memory_limit),
            ..Default::default()
        }
    }
}

/// A TCP port of a Service.
pub(crate) fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// A Service in front of `component`'s pods, exposing their container port named
/// `port_name` as `port`: a ClusterIP Service, or a headless one (no virtual IP: DNS names
/// the pods themselves).
pub(crate) fn component_service(
    instance: &Instance<'_>,
    component: Component,
    port_name: &str,
    port: i32,
    headless: bool,
) -> Service {
    Service {
        metadata: instance.meta(instance.child_name(component), component),
        spec: Some(ServiceSpec {
            type_: (!headless).then(|| "ClusterIP".into()),
            cluster_ip: headless.then(|| "None".into()),
            selector: Some(instance.selector_labels(component)),
            ports: Some(vec![ServicePort {
                target_port: Some(IntOrString::String(port_name.into())),
                ..service_port(port_name, port)
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container of the stack: its image pulled when absent, `resources`, and the security
/// settings every container of the stack has (no privilege escalation, no capabilities, a
/// read-only root filesystem); the caller adds the rest.
pub(crate) fn container(
    name: &str,
    image: impl Into<String>,
    resources: ResourceRequirements,
) -> Container {
    let security = SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..Default::default()
    };
    Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        resources: Some(resources),
        security_context: Some(security),
        ..Default::default()
    }
}

/// A named TCP port of a container.
pub(crate) fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// An environment variable with a literal value.
pub(crate) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// An environment variable read from a key of a Secret: referenced, never copied, so the
/// secret value never appears in the object.
pub(crate) fn secret_env(name: &str, secret: impl Into<String>, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A writable scratch volume of at most `size_limit`.
pub(crate) fn empty_dir(name: &str, size_limit: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(size_limit.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// What every pod of the stack starts from: the instance's ServiceAccount without its token
/// (none of the pods talk to the Kubernetes API), and non-root as `uid`, which must match the
/// user baked into the image so files it owns (data directories, sockets) stay writable.
pub(crate) fn pod_spec(instance: &Instance<'_>, uid: i64, fs_group: Option<i64>) -> PodSpec {
    let security = PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        seccomp_profile: Some(runtime_default_seccomp()),
        fs_group,
        fs_group_change_policy: fs_group.map(|_| "OnRootMismatch".into()),
        ..Default::default()
    };
    PodSpec {
        service_account_name: Some(instance.child_name(Component::App)),
        automount_service_account_token: Some(false),
        security_context: Some(security),
        ..Default::default()
    }
}

/// The pod template of a component's pods: their labels, the digest of the ConfigMap they
/// read, if any, so a change of its contents rolls them, and the Shortener's pod options
/// (`crate::pods`) for the component.
pub(crate) fn pod_template(
    instance: &Instance<'_>,
    component: Component,
    config: Option<&ConfigMap>,
    mut spec: PodSpec,
) -> PodTemplateSpec {
    let mut labels = instance.labels(component);
    let mut annotations = BTreeMap::new();
    if let Some(config) = config {
        let digest = config_digest(&config.data.clone().unwrap_or_default());
        annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), digest);
    }
    let spread = (component == Component::App)
        .then(|| crate::pods::default_spread(instance.selector_labels(component)));
    instance
        .spec()
        .pod_options(component)
        .apply(&mut spec, &mut labels, &mut annotations, spread);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        }),
        spec: Some(spec),
    }
}

/// Never below the desired count during a rollout: the new pod must be ready before an old
/// one goes.
pub(crate) fn surge_first() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    }
}

/// The Deployment of one component's pods, which read `config`; `replicas` unset when an
/// autoscaler owns the count.
pub(crate) fn component_deployment(
    instance: &Instance<'_>,
    component: Component,
    replicas: Option<i32>,
    strategy: DeploymentStrategy,
    config: &ConfigMap,
    pod: PodSpec,
) -> Deployment {
    Deployment {
        metadata: instance.meta(instance.child_name(component), component),
        spec: Some(DeploymentSpec {
            replicas,
            revision_history_limit: Some(5),
            selector: match_labels(instance.selector_labels(component)),
            strategy: Some(strategy),
            template: pod_template(instance, component, Some(config), pod),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Hex SHA-256 of configuration contents, for the pod template annotation.
pub fn config_digest(data: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (key, value) in data {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::crd::{Shortener, ShortenerSpec};
    use serde_json::json;

    pub fn shortener(spec: ShortenerSpec) -> Shortener {
        let mut s = Shortener::new("links", spec);
        s.metadata.namespace = Some("web".into());
        s.metadata.uid = Some("3f1c9a52-5d8e-4c4b-9a51-0d0e8f1a7b21".into());
        s.metadata.generation = Some(1);
        s
    }

    /// The embedded database with daily backups (and everything else by default).
    pub fn with_daily_backups(spec: &mut ShortenerSpec) {
        spec.database.postgres = Some(crate::crd::PostgresSpec {
            backup: Some(serde_json::from_value(json!({ "schedule": "@daily" })).unwrap()),
            ..Default::default()
        });
    }

    /// The pod template's spec of a Deployment.
    pub fn pod_of(
        deployment: k8s_openapi::api::apps::v1::Deployment,
    ) -> k8s_openapi::api::core::v1::PodSpec {
        deployment.spec.unwrap().template.spec.unwrap()
    }

    /// Every container in a pod spec, as JSON, for the security and resource checks.
    pub fn containers(pod_spec: &Value) -> Vec<Value> {
        let mut all = Vec::new();
        for key in ["initContainers", "containers"] {
            if let Some(list) = pod_spec.get(key).and_then(Value::as_array) {
                all.extend(list.iter().cloned());
            }
        }
        all
    }

    /// Assert the hardening every container of the stack must have.
    pub fn assert_hardened(pod_spec: &Value) {
        assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], json!(true));
        assert_eq!(pod_spec["automountServiceAccountToken"], json!(false));
        let containers = containers(pod_spec);
        assert!(!containers.is_empty());
        for c in containers {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], json!(false), "{name}");
            assert_eq!(sc["runAsNonRoot"], json!(true), "{name}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
            for kind in ["requests", "limits"] {
                for res in ["cpu", "memory"] {
                    assert!(c["resources"][kind][res].is_string(), "{name} {kind}.{res}");
                }
            }
            // An init container that runs to completion may not have probes (the API
            // server refuses them); every long-running container must.
            let runs_to_completion = pod_spec["initContainers"]
                .as_array()
                .is_some_and(|init| init.contains(&c))
                && c["restartPolicy"] != "Always";
            if !runs_to_completion {
                assert!(c["readinessProbe"].is_object(), "{name} readiness");
                assert!(c["livenessProbe"].is_object(), "{name} liveness");
            }
        }
    }

    pub fn assert_owned(meta: &ObjectMeta, component: &str) {
        let owners = meta.owner_references.as_ref().expect("owner references");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Shortener");
        assert_eq!(owners[0].name, "links");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(labels["app.kubernetes.io/name"], "shortener");
        assert_eq!(labels["app.kubernetes.io/instance"], "links");
        assert_eq!(labels["app.kubernetes.io/component"], component);
        assert_eq!(labels["app.kubernetes.io/managed-by"], "shortener-operator");
        assert_eq!(meta.namespace.as_deref(), Some("web"));
    }
}

#[cfg(test)]
mod tests {
    use super::testing::shortener;
    use super::*;
    use crate::crd::{ExternalSecretRef, ShortenerSpec};

    fn kinds(state: &DesiredState) -> Vec<String> {
        state.children.iter().map(Child::key).collect()
    }

    #[test]
    fn default_spec_builds_the_whole_stack_in_dependency_order() {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let state = desired_state(
            &instance,
            &Observed {
                apis: OptionalApis::ALL,
                ..Observed::default()
            },
            &Credentials::placeholder(),
        )
        .unwrap();
        let role_job = format!(
            "Job/{}",
            roles::job_name(&instance, &crate::crd::PostgresSpec::default())
        );
        assert_eq!(
            kinds(&state),
            vec![
                "ServiceAccount/links",
                "ConfigMap/links-config",
                "NetworkPolicy/links-default-deny",
                "NetworkPolicy/links",
                "NetworkPolicy/links-pgbouncer",
                "NetworkPolicy/links-postgres",
                "NetworkPolicy/links-postgres-roles",
                "NetworkPolicy/links-redis",
                "Service/links-postgres",
                "StatefulSet/links-postgres",
                "PodDisruptionBudget/links-postgres",
                role_job.as_str(),
                "ConfigMap/links-pgbouncer",
                "Service/links-pgbouncer",
                "Deployment/links-pgbouncer",
                "PodDisruptionBudget/links-pgbouncer",
                "ConfigMap/links-redis",
                "Service/links-redis",
                "Deployment/links-redis",
                "PodDisruptionBudget/links-redis",
                "Service/links",
                "Deployment/links",
                "PodDisruptionBudget/links",
                "Service/links-unrouted",
                "Ingress/links",
                "ConfigMap/links-dashboard",
                "ServiceMonitor/links",
                "PrometheusRule/links",
            ]
        );
        let secret_names: Vec<_> = state
            .secrets
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            secret_names,
            vec![
                "links-db",
                "links-db-owner",
                "links-db-app",
                "links-admin",
                "links-redis-auth"
            ]
        );
    }

    fn cloud_native_pg_state(apis: OptionalApis) -> (Shortener, DesiredState) {
        let mut spec = ShortenerSpec::default();
        spec.database.cloud_native_pg = Some(crate::crd::CloudNativePgSpec::default());
        let s = shortener(spec);
        let instance = Instance::new(&s).unwrap();
        let observed = Observed {
            apis,
            ..Observed::default()
        };
        let state = desired_state(&instance, &observed, &Credentials::placeholder()).unwrap();
        (s, state)
    }

    /// On CloudNativePG, the Cluster and its Pooler replace the StatefulSet and PgBouncer;
    /// the roles' Secrets are basic-auth ones CloudNativePG reads, and no superuser Secret
    /// is made (CloudNativePG generates its own).
    #[test]
    fn cloud_native_pg_replaces_the_embedded_database_and_pooler() {
        let (s, state) = cloud_native_pg_state(OptionalApis::ALL);
        let instance = Instance::new(&s).unwrap();
        let cnpg = crate::crd::CloudNativePgSpec::default();
        let role_job = roles::cloud_native_pg_job(&instance, &cnpg);
        let role_job = format!("Job/{}", role_job.metadata.name.unwrap());
        let kinds = kinds(&state);
        let database: Vec<&str> = kinds[7..12].iter().map(String::as_str).collect();
        assert_eq!(
            database,
            vec![
                "NetworkPolicy/links-redis",
                "Cluster/links-postgres",
                role_job.as_str(),
                "Pooler/links-pgbouncer",
                "ConfigMap/links-redis",
            ]
        );
        assert!(!kinds.iter().any(|k| k.starts_with("StatefulSet/")));
        assert!(!kinds.contains(&"Deployment/links-pgbouncer".to_string()));
        let secrets: Vec<_> = state.secrets.iter().map(|s| s.metadata.clone()).collect();
        let names: Vec<_> = secrets.iter().map(|m| m.name.clone().unwrap()).collect();
        assert_eq!(
            names,
            [
                "links-db-owner",
                "links-db-app",
                "links-admin",
                "links-redis-auth"
            ]
        );
        for role in &state.secrets[..2] {
            assert_eq!(role.type_.as_deref(), Some("kubernetes.io/basic-auth"));
            let labels = role.metadata.labels.as_ref().unwrap();
            assert_eq!(labels["cnpg.io/reload"], "true");
        }
        assert_eq!(state.secrets[2].type_.as_deref(), Some("Opaque"));
    }

    /// Without CloudNativePG's API nothing of the database is written (the status says why);
    /// the rest of the stack is.
    #[test]
    fn without_cloud_native_pg_served_no_database_is_built() {
        let apis = OptionalApis {
            cloud_native_pg: false,
            ..OptionalApis::ALL
        };
        let (s, state) = cloud_native_pg_state(apis);
        let kinds = kinds(&state);
        assert!(!kinds.iter().any(|k| k.starts_with("Cluster/")
            || k.starts_with("Pooler/")
            || k.starts_with("Job/")));
        assert!(kinds.contains(&"Deployment/links".to_string()));
        let instance = Instance::new(&s).unwrap();
        let refusal = crate::status::cloud_native_pg_missing(&instance, apis).unwrap();
        assert_eq!(refusal.reason, "CloudNativePGNotInstalled");
        assert!(crate::status::cloud_native_pg_missing(&instance, OptionalApis::ALL).is_none());
        let plain = shortener(ShortenerSpec::default());
        let plain = Instance::new(&plain).unwrap();
        assert!(crate::status::cloud_native_pg_missing(&plain, apis).is_none());
    }

    #[test]
    fn without_monitoring_crds_only_the_dashboard_is_built() {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let state =
            desired_state(&instance, &Observed::default(), &Credentials::placeholder()).unwrap();
        let kinds = kinds(&state);
        assert!(kinds.contains(&"ConfigMap/links-dashboard".to_string()));
        assert!(!kinds.iter().any(|k| k.starts_with("ServiceMonitor")));
        assert!(!kinds.iter().any(|k| k.starts_with("PrometheusRule")));
    }

    #[test]
    fn external_database_and_redis_skip_their_workloads_and_secret() {
        let mut spec = ShortenerSpec::default();
        spec.database.external = Some(ExternalSecretRef {
            secret_name: "pg".into(),
            key: "url".into(),
        });
        spec.redis.external = Some(ExternalSecretRef {
            secret_name: "cache".into(),
            key: "url".into(),
        });
        spec.app.config.auth_mode = Some(crate::crd::AuthMode::Open);
        let s = shortener(spec);
        let instance = Instance::new(&s).unwrap();
        let state =
            desired_state(&instance, &Observed::default(), &Credentials::placeholder()).unwrap();
        assert!(state.secrets.is_empty());
        for k in kinds(&state) {
            assert!(
                !k.contains("postgres") && !k.contains("pgbouncer") && !k.contains("redis"),
                "{k}"
            );
        }
    }

    #[test]
    fn every_child_is_owned_and_labelled() {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let state = desired_state(
            &instance,
            &Observed {
                apis: OptionalApis::ALL,
                ..Observed::default()
            },
            &Credentials::placeholder(),
        )
        .unwrap();
        for child in &state.children {
            let meta = child.meta();
            let component = meta.labels.as_ref().unwrap()["app.kubernetes.io/component"].clone();
            testing::assert_owned(meta, &component);
        }
        // Every Secret but the superuser's, which stays with the volume the default keeps.
        for secret in &state.secrets {
            if secret.metadata.name.as_deref() == Some("links-db") {
                assert!(instance.kept_for_it(&secret.metadata));
            } else {
                testing::assert_owned(&secret.metadata, "app");
            }
        }
    }

    /// The superuser's Secret outlives the Shortener exactly when the volume does, and only a
    /// Shortener of the same name, whose claim it names, takes it for its own.
    #[test]
    fn the_superuser_secret_is_kept_with_the_volume() {
        let kept = shortener(ShortenerSpec::default());
        let instance = Instance::new(&kept).unwrap();
        assert!(instance.keeps_its_volume());
        let secret = secrets::database_secret(&instance, "pw");
        assert!(secret.metadata.owner_references.is_none());
        assert!(instance.kept_for_it(&secret.metadata));
        assert!(!instance.owns(&secret.metadata));

        let mut other = kept.clone();
        other.metadata.name = Some("other".into());
        assert!(!Instance::new(&other).unwrap().kept_for_it(&secret.metadata));
        let mut owned = secret.metadata.clone();
        owned.owner_references = Some(vec![instance.owner.clone()]);
        assert!(!instance.kept_for_it(&owned));
        let mut unannotated = secret.metadata.clone();
        unannotated.annotations = None;
        assert!(!instance.kept_for_it(&unannotated));

        let mut spec = ShortenerSpec::default();
        let mut postgres = crate::crd::PostgresSpec::default();
        postgres.storage.delete_on_removal = true;
        spec.database.postgres = Some(postgres);
        let deleted = shortener(spec);
        let instance = Instance::new(&deleted).unwrap();
        assert!(!instance.keeps_its_volume());
        testing::assert_owned(&secrets::database_secret(&instance, "pw").metadata, "app");
    }

    /// Watches and pruning see every kind the reconciler applies, so no child can be
    /// left behind when the spec stops asking for it.
    #[test]
    fn every_applied_kind_is_watched_and_pruned() {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let observed = Observed {
            apis: OptionalApis::ALL,
            ..Observed::default()
        };
        let state = desired_state(&instance, &observed, &Credentials::placeholder()).unwrap();
        for child in &state.children {
            assert!(
                managed_kinds(OptionalApis::ALL).contains(&child.resource()),
                "{}",
                child.key()
            );
        }
        assert!(
            !managed_kinds(OptionalApis::default())
                .iter()
                .any(|k| k.group == monitoring::MONITORING_GROUP)
        );
        assert_eq!(
            instance.instance_selector(),
            "app.kubernetes.io/instance=links,app.kubernetes.io/managed-by=shortener-operator,app.kubernetes.io/name=shortener"
        );
    }

    #[test]
    fn instance_requires_a_stored_object() {
        let mut s = shortener(ShortenerSpec::default());
        s.metadata.uid = None;
        assert!(matches!(
            Instance::new(&s),
            Err(Error::MissingObjectKey("metadata.uid"))
        ));
    }

    #[test]
    fn public_url_prefers_the_ingress_host() {
        let mut spec = ShortenerSpec::default();
        let s = shortener(spec.clone());
        assert_eq!(
            Instance::new(&s).unwrap().public_url(),
            "http://links.web.svc.cluster.local"
        );
        spec.ingress.host = Some("sho.rt".into());
        let s = shortener(spec.clone());
        assert_eq!(Instance::new(&s).unwrap().public_url(), "http://sho.rt");
        spec.ingress.tls_secret_name = Some("sho-rt-tls".into());
        let s = shortener(spec);
        assert_eq!(Instance::new(&s).unwrap().public_url(), "https://sho.rt");
    }

    /// The documented budget: default requests of the whole stack fit 1 vCPU / 1 GiB.
    #[test]
    fn default_requests_fit_one_cpu_and_one_gib() {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let state =
            desired_state(&instance, &Observed::default(), &Credentials::placeholder()).unwrap();
        let (mut millicpu, mut mebibytes) = (0, 0);
        for child in &state.children {
            let v = child.to_value().unwrap();
            if !matches!(child.kind().as_str(), "Deployment" | "StatefulSet") {
                continue;
            }
            let replicas = v["spec"]["replicas"].as_i64().unwrap();
            for c in v["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
            {
                let cpu = c["resources"]["requests"]["cpu"].as_str().unwrap();
                let mem = c["resources"]["requests"]["memory"].as_str().unwrap();
                millicpu += replicas * cpu.trim_end_matches('m').parse::<i64>().unwrap();
                mebibytes += replicas * mem.trim_end_matches("Mi").parse::<i64>().unwrap();
            }
        }
        assert_eq!((millicpu, mebibytes), (300, 544), "update docs/operator.md");
        assert!(millicpu <= 1000 && mebibytes <= 1024);
    }

    #[test]
    fn config_digest_changes_with_content() {
        let a = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let b = BTreeMap::from([("A".to_string(), "2".to_string())]);
        assert_ne!(config_digest(&a), config_digest(&b));
        assert_eq!(config_digest(&a), config_digest(&a.clone()));
        assert_eq!(config_digest(&a).len(), 64);
    }
}
