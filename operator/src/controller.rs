//! The reconciler: applies the desired state of each Shortener and reports back in its status.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::children::{
    self, Child, Component, Credentials, DesiredState, FIELD_MANAGER, Instance, MANAGED_BY,
    Observed, monitoring, postgres,
};
use crate::crd::{API_VERSION, Shortener, ShortenerStatus};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_PROGRESSING: &str = "Progressing";
pub const CONDITION_DEGRADED: &str = "Degraded";
pub const CONDITION_PAUSED: &str = "Paused";
pub const CONDITION_MONITORING: &str = "MonitoringAvailable";

/// Requeue interval once everything is ready; owned-object watches cover faster changes.
const STEADY_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue interval while a rollout is in progress, in case a watch event is missed.
const PROGRESS_REQUEUE: Duration = Duration::from_secs(30);
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Shared state of the reconciler.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per Shortener (namespace/name), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGED_BY.to_string(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn reset_backoff(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// Next delay for a failing Shortener: 5s, 10s, 20s, ... capped at 5 minutes.
    fn next_backoff(&self, key: &str) -> Duration {
        let attempts = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(key.to_string()).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
        BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
    }

    async fn publish(&self, shortener: &Shortener, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        // Events are for humans; failing to record one must not fail the reconcile.
        if let Err(error) = self
            .recorder
            .publish(&event, &shortener.object_ref(&()))
            .await
        {
            warn!(%error, reason, "could not publish event");
        }
    }
}

fn object_key(shortener: &Shortener) -> String {
    format!(
        "{}/{}",
        shortener.namespace().unwrap_or_default(),
        shortener.name_any()
    )
}

pub async fn reconcile(shortener: Arc<Shortener>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = shortener.namespace().unwrap_or_default();
    let name = shortener.name_any();
    let timer = ctx.metrics.start(&namespace, &name);
    let result = reconcile_shortener(&shortener, &ctx).await;
    timer.finish(result.is_ok());
    if result.is_ok() {
        ctx.reset_backoff(&object_key(&shortener));
    }
    result
}

pub fn error_policy(shortener: Arc<Shortener>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&shortener);
    let delay = ctx.next_backoff(&key);
    warn!(shortener = %key, %error, retry_in = ?delay, "reconcile failed");
    ctx.metrics.record_failure(
        &shortener.namespace().unwrap_or_default(),
        &shortener.name_any(),
        error.metric_label(),
    );
    Action::requeue(delay)
}

async fn reconcile_shortener(shortener: &Shortener, ctx: &Context) -> Result<Action> {
    let instance = Instance::new(shortener)?;
    let api: Api<Shortener> = Api::namespaced(ctx.client.clone(), &instance.namespace);
    let old_status = shortener.status.clone().unwrap_or_default();
    let generation = shortener.metadata.generation;
    let now = Time(Timestamp::now());

    if shortener.spec.paused {
        let mut status = old_status.clone();
        status.observed_generation = generation;
        set_condition(
            &mut status.conditions,
            condition(
                CONDITION_PAUSED,
                true,
                "PausedBySpec",
                "spec.paused is true: children are left untouched until it is set to false",
            ),
            generation,
            &now,
        );
        set_condition(
            &mut status.conditions,
            condition(
                CONDITION_PROGRESSING,
                false,
                "Paused",
                "reconciliation is paused",
            ),
            generation,
            &now,
        );
        update_status(&api, &instance.name, &old_status, &status).await?;
        if !condition_is(&old_status, CONDITION_PAUSED, "True") {
            ctx.publish(
                shortener,
                EventType::Normal,
                "Paused",
                "spec.paused is true; children will not be changed".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }

    let observed = observe(&ctx.client, &instance).await?;
    let desired = children::desired_state(&instance, &observed, &Credentials::generate())?;

    let created_secrets = ensure_secrets(&ctx.client, &instance, &desired).await?;

    let mut applied = Vec::with_capacity(desired.children.len());
    for child in &desired.children {
        match apply(&ctx.client, &instance.namespace, child).await {
            Ok(object) => applied.push(object),
            Err(source) => {
                let error = Error::Apply {
                    kind: child.kind().to_string(),
                    name: child.name(),
                    source,
                };
                report_failure(ctx, shortener, &api, &old_status, &error, &now).await;
                return Err(error);
            }
        }
    }

    if let Some(pg) = shortener.spec.database.embedded() {
        grow_postgres_volume(&ctx.client, &instance, &observed, &pg.storage.size.0).await?;
    }

    let readiness = Readiness::from_applied(&instance, &applied);
    let status = ready_status(&instance, &old_status, &observed, &readiness, &now);
    update_status(&api, &instance.name, &old_status, &status).await?;

    if !created_secrets.is_empty() {
        // One event for all: the recorder folds same-reason events into a series anyway.
        ctx.publish(
            shortener,
            EventType::Normal,
            "SecretCreated",
            format!(
                "generated credentials in Secret(s) {}",
                created_secrets.join(", ")
            ),
        )
        .await;
    }
    if condition_is(&old_status, CONDITION_PAUSED, "True") {
        ctx.publish(
            shortener,
            EventType::Normal,
            "Resumed",
            "spec.paused is false; reconciling children again".into(),
        )
        .await;
    }
    if old_status.observed_generation != generation {
        ctx.publish(
            shortener,
            EventType::Normal,
            "Applied",
            format!(
                "applied {} objects for generation {}",
                desired.children.len(),
                generation.unwrap_or_default()
            ),
        )
        .await;
        let monitoring_wanted =
            shortener.spec.monitoring.service_monitor || shortener.spec.monitoring.prometheus_rule;
        if monitoring_wanted && !observed.monitoring_crds {
            ctx.publish(
                shortener,
                EventType::Warning,
                "MonitoringUnavailable",
                MONITORING_MISSING.into(),
            )
            .await;
        }
    }
    let was_ready = condition_is(&old_status, CONDITION_READY, "True");
    if readiness.all_ready() && !was_ready {
        ctx.publish(
            shortener,
            EventType::Normal,
            "Ready",
            format!("all components ready; serving at {}", instance.public_url()),
        )
        .await;
    } else if !readiness.all_ready() && was_ready {
        ctx.publish(
            shortener,
            EventType::Warning,
            "NotReady",
            readiness.waiting_message(),
        )
        .await;
    }

    info!(shortener = %object_key(shortener), ready = readiness.all_ready(), "reconciled");
    Ok(Action::requeue(if readiness.all_ready() {
        STEADY_REQUEUE
    } else {
        PROGRESS_REQUEUE
    }))
}

const MONITORING_MISSING: &str = "the monitoring.coreos.com CRDs are not installed, so no ServiceMonitor or PrometheusRule was created; install the Prometheus Operator (for example kube-prometheus-stack) or disable spec.monitoring.serviceMonitor and spec.monitoring.prometheusRule";

/// Facts from the cluster the desired state depends on.
async fn observe(client: &Client, instance: &Instance<'_>) -> Result<Observed> {
    let monitoring_crds = monitoring_crds_installed(client).await?;
    let mut postgres_template_size = None;
    if instance.spec().database.embedded().is_some() {
        let api: Api<StatefulSet> = Api::namespaced(client.clone(), &instance.namespace);
        if let Some(existing) = api
            .get_opt(&instance.child_name(Component::Postgres))
            .await
            .map_err(Error::Kube)?
        {
            postgres_template_size = existing
                .spec
                .and_then(|s| s.volume_claim_templates)
                .and_then(|t| t.into_iter().next())
                .and_then(|t| t.spec)
                .and_then(|s| s.resources)
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").map(|q| q.0.clone()));
        }
    }
    Ok(Observed {
        monitoring_crds,
        postgres_template_size,
    })
}

/// Discovery of the Prometheus Operator API group; a 404 means its CRDs are not installed.
pub async fn monitoring_crds_installed(client: &Client) -> Result<bool> {
    match client
        .list_api_group_resources(monitoring::MONITORING_VERSION)
        .await
    {
        Ok(list) => {
            let served = |plural: &str| list.resources.iter().any(|r| r.name == plural);
            Ok(served("servicemonitors") && served("prometheusrules"))
        }
        // The real API server answers an unserved group with a plain-text `404 page not
        // found`, not a Status object, so only the code is there to match (kube's
        // `is_not_found` wants the `NotFound` reason).
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(Error::Kube(error)),
    }
}

/// Create generated Secrets that do not exist yet; existing ones are never touched, since
/// their values are already baked into the database and clients. Returns the created names.
async fn ensure_secrets(
    client: &Client,
    instance: &Instance<'_>,
    desired: &DesiredState,
) -> Result<Vec<String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &instance.namespace);
    let mut created = Vec::new();
    for secret in &desired.secrets {
        let name = secret.name_any();
        if api.get_opt(&name).await.map_err(Error::Kube)?.is_some() {
            continue;
        }
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        match api.create(&params, secret).await {
            Ok(_) => created.push(name),
            // Another writer won the race; theirs stays.
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => return Err(Error::Kube(error)),
        }
    }
    Ok(created)
}

async fn apply(
    client: &Client,
    namespace: &str,
    child: &Child,
) -> std::result::Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &child.resource);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&child.name(), &params, &Patch::Apply(&child.object))
        .await
}

/// Volume claim templates are immutable, so a larger `storage.size` is applied to the PVC
/// directly (the StorageClass must allow expansion). CEL on the CRD already forbids shrinking.
async fn grow_postgres_volume(
    client: &Client,
    instance: &Instance<'_>,
    observed: &Observed,
    wanted: &str,
) -> Result<()> {
    let Some(current) = observed.postgres_template_size.as_deref() else {
        return Ok(());
    };
    if current == wanted {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &instance.namespace);
    let patch = json!({ "spec": { "resources": { "requests": { "storage": wanted } } } });
    match api
        .patch(
            &postgres::claim_name(instance),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // The pod (and so its claim) may not exist yet; the next pass retries.
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(Error::Kube(error)),
    }
}

async fn report_failure(
    ctx: &Context,
    shortener: &Shortener,
    api: &Api<Shortener>,
    old_status: &ShortenerStatus,
    error: &Error,
    now: &Time,
) {
    let generation = shortener.metadata.generation;
    let mut status = old_status.clone();
    let message = format!(
        "{error}; the operator retries with backoff. Check the error above and the operator's RBAC."
    );
    set_condition(
        &mut status.conditions,
        condition(CONDITION_DEGRADED, true, "ApplyFailed", &message),
        generation,
        now,
    );
    if let Err(status_error) = update_status(api, &shortener.name_any(), old_status, &status).await
    {
        warn!(error = %status_error, "could not record the failure in the status");
    }
    ctx.publish(shortener, EventType::Warning, "ApplyFailed", message)
        .await;
}

/// Readiness of the workloads, read from the objects the apply calls returned.
#[derive(Debug, Default, PartialEq)]
pub struct Readiness {
    pub components: Vec<ComponentReadiness>,
    pub app_ready_replicas: i32,
    pub app_replicas: i32,
}

#[derive(Debug, PartialEq)]
pub struct ComponentReadiness {
    pub name: &'static str,
    pub desired: i64,
    pub ready: i64,
    pub rolled_out: bool,
}

impl Readiness {
    pub fn from_applied(instance: &Instance<'_>, applied: &[DynamicObject]) -> Self {
        let mut readiness = Self::default();
        let workloads = [
            (Component::App, "Deployment", "app"),
            (Component::Postgres, "StatefulSet", "postgres"),
            (Component::PgBouncer, "Deployment", "pgbouncer"),
            (Component::Redis, "Deployment", "redis"),
        ];
        for (component, kind, label) in workloads {
            let name = instance.child_name(component);
            let Some(object) = applied.iter().find(|o| {
                o.types.as_ref().map(|t| t.kind.as_str()) == Some(kind)
                    && o.metadata.name.as_deref() == Some(name.as_str())
            }) else {
                continue;
            };
            let number = |path: &[&str]| -> i64 {
                let mut v = &object.data;
                for key in path {
                    v = &v[*key];
                }
                v.as_i64().unwrap_or(0)
            };
            let desired = object.data["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = number(&["status", "readyReplicas"]);
            let updated = number(&["status", "updatedReplicas"]);
            let current = number(&["status", "replicas"]);
            let observed_generation = number(&["status", "observedGeneration"]);
            let generation = object.metadata.generation.unwrap_or(0);
            let rolled_out = observed_generation >= generation
                && ready >= desired
                && updated >= desired
                && current <= desired;
            if component == Component::App {
                readiness.app_ready_replicas = i32::try_from(ready).unwrap_or(i32::MAX);
                readiness.app_replicas = i32::try_from(current).unwrap_or(i32::MAX);
            }
            readiness.components.push(ComponentReadiness {
                name: label,
                desired,
                ready,
                rolled_out,
            });
        }
        readiness
    }

    pub fn all_ready(&self) -> bool {
        self.components.iter().all(|c| c.rolled_out)
    }

    pub fn waiting_message(&self) -> String {
        let waiting: Vec<String> = self
            .components
            .iter()
            .filter(|c| !c.rolled_out)
            .map(|c| format!("{} {}/{} ready", c.name, c.ready, c.desired))
            .collect();
        format!(
            "waiting for {}; see `kubectl get pods -l app.kubernetes.io/instance` and pod events",
            waiting.join(", ")
        )
    }
}

fn ready_status(
    instance: &Instance<'_>,
    old: &ShortenerStatus,
    observed: &Observed,
    readiness: &Readiness,
    now: &Time,
) -> ShortenerStatus {
    let generation = instance.shortener.metadata.generation;
    let mut status = old.clone();
    status.observed_generation = generation;
    status.ready_replicas = readiness.app_ready_replicas;
    status.replicas = readiness.app_replicas;
    status.selector = Some(instance.app_selector());
    status.url = Some(instance.public_url());
    let conditions = &mut status.conditions;
    let mut set = |c: Condition| set_condition(conditions, c, generation, now);
    if readiness.all_ready() {
        set(condition(
            CONDITION_READY,
            true,
            "AllComponentsReady",
            &format!("serving at {}", instance.public_url()),
        ));
        set(condition(
            CONDITION_PROGRESSING,
            false,
            "RolloutComplete",
            "all components run the desired configuration",
        ));
    } else {
        let message = readiness.waiting_message();
        set(condition(
            CONDITION_READY,
            false,
            "ComponentsNotReady",
            &message,
        ));
        set(condition(
            CONDITION_PROGRESSING,
            true,
            "RollingOut",
            &message,
        ));
    }
    set(condition(
        CONDITION_DEGRADED,
        false,
        "ReconcileSucceeded",
        "all objects applied",
    ));
    set(condition(
        CONDITION_PAUSED,
        false,
        "Reconciling",
        "spec.paused is false",
    ));
    let monitoring = &instance.spec().monitoring;
    if monitoring.service_monitor || monitoring.prometheus_rule {
        if observed.monitoring_crds {
            set(condition(
                CONDITION_MONITORING,
                true,
                "CRDsInstalled",
                "ServiceMonitor and PrometheusRule are applied",
            ));
        } else {
            set(condition(
                CONDITION_MONITORING,
                false,
                "CRDNotInstalled",
                MONITORING_MISSING,
            ));
        }
    } else {
        status
            .conditions
            .retain(|c| c.type_ != CONDITION_MONITORING);
    }
    status
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

/// Insert or update a condition, moving `lastTransitionTime` only when the status flips.
fn set_condition(
    conditions: &mut Vec<Condition>,
    mut new: Condition,
    generation: Option<i64>,
    now: &Time,
) {
    new.observed_generation = generation;
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            new.last_transition_time = if existing.status == new.status {
                existing.last_transition_time.clone()
            } else {
                now.clone()
            };
            *existing = new;
        }
        None => {
            new.last_transition_time = now.clone();
            conditions.push(new);
        }
    }
}

pub fn condition_is(status: &ShortenerStatus, type_: &str, value: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == value)
}

/// Write the status only when it changed, so a steady state costs no writes (and no watch
/// events that would trigger yet another reconcile).
async fn update_status(
    api: &Api<Shortener>,
    name: &str,
    old: &ShortenerStatus,
    new: &ShortenerStatus,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let patch = Patch::Apply(json!({
        "apiVersion": API_VERSION,
        "kind": "Shortener",
        "status": new,
    }));
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &patch)
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// Label selector limiting the owned-object watches to what this operator manages.
pub fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY}")
}

/// Run the controller until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shorteners = Api::<Shortener>::all(client.clone());
    let owned = watcher::Config::default().labels(&managed_selector());
    Controller::new(shorteners, watcher::Config::default().any_semantic())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(Api::<ServiceAccount>::all(client.clone()), owned.clone())
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            owned.clone(),
        )
        .owns(Api::<Ingress>::all(client.clone()), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(shortener = %object.name, "reconcile done"),
                Err(error) => warn!(%error, "controller error"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::shortener;
    use crate::crd::ShortenerSpec;
    use crate::fixtures::{Recorded, Scenario, Workloads, finish};

    async fn pass(s: &Shortener, scenario: Scenario) -> (Result<Action>, Recorded, Arc<Context>) {
        let (ctx, server) = Context::test();
        let script = server.run(scenario);
        let result = reconcile(Arc::new(s.clone()), ctx.clone()).await;
        (result, finish(script).await, ctx)
    }

    /// A Shortener whose status is what a pass over a ready stack wrote.
    async fn reconciled_and_ready() -> Shortener {
        let mut s = shortener(ShortenerSpec::default());
        let (result, recorded, _) =
            pass(&s, Scenario::ExistingStack(s.clone(), Workloads::Ready)).await;
        result.unwrap();
        s.status = recorded.status;
        s
    }

    #[tokio::test]
    async fn first_creation_generates_secrets_applies_everything_and_reports_progress() {
        let s = shortener(ShortenerSpec::default());
        let (result, recorded, _) = pass(&s, Scenario::FirstCreation(s.clone())).await;
        assert_eq!(result.unwrap(), Action::requeue(PROGRESS_REQUEUE));

        assert_eq!(recorded.created_secrets.len(), 2);
        let db = &recorded.created_secrets[0]["stringData"];
        let password = db["password"].as_str().unwrap();
        assert_eq!(password.len(), 32);
        assert_ne!(password, "generated-by-operator");
        assert_eq!(
            db["userlist.txt"],
            format!("\"shortener\" \"{password}\"\n")
        );
        assert_eq!(
            recorded.created_secrets[1]["stringData"]["api-key"]
                .as_str()
                .unwrap()
                .len(),
            40
        );

        assert_eq!(recorded.applied.len(), 17);
        assert_eq!(
            recorded.condition("Ready"),
            ("False".into(), "ComponentsNotReady".into())
        );
        assert_eq!(
            recorded.condition("Progressing"),
            ("True".into(), "RollingOut".into())
        );
        assert_eq!(
            recorded.condition("Degraded"),
            ("False".into(), "ReconcileSucceeded".into())
        );
        assert_eq!(
            recorded.condition("MonitoringAvailable"),
            ("True".into(), "CRDsInstalled".into())
        );
        let status = recorded.status.as_ref().unwrap();
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.ready_replicas, 0);
        assert_eq!(
            status.url.as_deref(),
            Some("http://links.web.svc.cluster.local")
        );
        assert_eq!(
            status.selector.as_deref(),
            Some(
                "app.kubernetes.io/component=app,app.kubernetes.io/instance=links,app.kubernetes.io/name=shortener"
            )
        );
        assert_eq!(recorded.event_reasons(), vec!["SecretCreated", "Applied"]);
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert!(ready.message.contains("app 0/3 ready"), "{}", ready.message);
    }

    #[tokio::test]
    async fn second_pass_over_a_ready_stack_writes_nothing() {
        let mut s = shortener(ShortenerSpec::default());
        let (result, first, _) =
            pass(&s, Scenario::ExistingStack(s.clone(), Workloads::Ready)).await;
        assert_eq!(result.unwrap(), Action::requeue(STEADY_REQUEUE));
        assert_eq!(
            first.condition("Ready"),
            ("True".into(), "AllComponentsReady".into())
        );
        assert_eq!(first.event_reasons(), vec!["Applied", "Ready"]);
        assert_eq!(first.status.as_ref().unwrap().ready_replicas, 3);

        s.status = first.status.clone();
        let (result, second, _) = pass(&s, Scenario::NoOp(s.clone())).await;
        assert_eq!(result.unwrap(), Action::requeue(STEADY_REQUEUE));
        assert!(
            second.status.is_none(),
            "unchanged status must not be written"
        );
        assert!(second.events.is_empty(), "{:?}", second.events);
        assert_eq!(first.applied, second.applied, "applies are idempotent");
    }

    #[tokio::test]
    async fn drift_is_repaired_by_reapplying_the_desired_state() {
        let s = reconciled_and_ready().await;
        let (result, recorded, _) = pass(
            &s,
            Scenario::ExistingStack(s.clone(), Workloads::AppScaledDown),
        )
        .await;
        assert_eq!(result.unwrap(), Action::requeue(PROGRESS_REQUEUE));
        // The hand-made scale-down is overwritten by the forced apply.
        assert_eq!(
            recorded.applied("Deployment", "links")["spec"]["replicas"],
            3
        );
        assert_eq!(
            recorded.condition("Ready"),
            ("False".into(), "ComponentsNotReady".into())
        );
        assert_eq!(
            recorded.condition("Progressing"),
            ("True".into(), "RollingOut".into())
        );
        assert_eq!(
            recorded.events,
            vec![("NotReady".to_string(), "Warning".to_string())]
        );
        assert_eq!(recorded.status.as_ref().unwrap().ready_replicas, 1);
    }

    #[tokio::test]
    async fn spec_change_is_rolled_out() {
        let mut s = reconciled_and_ready().await;
        let (_, before, _) = pass(&s, Scenario::NoOp(s.clone())).await;
        s.spec.app.replicas = 5;
        s.spec.app.config.cache_ttl_seconds = 60;
        s.metadata.generation = Some(2);
        let (result, after, _) =
            pass(&s, Scenario::ExistingStack(s.clone(), Workloads::Ready)).await;
        result.unwrap();
        let deployment = after.applied("Deployment", "links");
        assert_eq!(deployment["spec"]["replicas"], 5);
        assert_eq!(
            after.applied("ConfigMap", "links-config")["data"]["CACHE_TTL_SECONDS"],
            "60"
        );
        let hash = |v: &serde_json::Value| {
            v["spec"]["template"]["metadata"]["annotations"][children::CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_ne!(
            hash(deployment),
            hash(before.applied("Deployment", "links"))
        );
        assert_eq!(after.status.as_ref().unwrap().observed_generation, Some(2));
        assert_eq!(after.event_reasons(), vec!["Applied"]);
    }

    #[tokio::test]
    async fn pause_leaves_children_alone() {
        let mut s = reconciled_and_ready().await;
        s.spec.paused = true;
        s.metadata.generation = Some(2);
        let (result, recorded, _) = pass(&s, Scenario::Paused(s.clone())).await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert!(recorded.applied.is_empty());
        assert_eq!(
            recorded.condition("Paused"),
            ("True".into(), "PausedBySpec".into())
        );
        assert_eq!(
            recorded.condition("Progressing"),
            ("False".into(), "Paused".into())
        );
        // Readiness is not re-evaluated while paused.
        assert_eq!(
            recorded.condition("Ready"),
            ("True".into(), "AllComponentsReady".into())
        );
        assert_eq!(recorded.event_reasons(), vec!["Paused"]);

        s.spec.paused = false;
        s.status = recorded.status;
        s.metadata.generation = Some(3);
        let (result, resumed, _) =
            pass(&s, Scenario::ExistingStack(s.clone(), Workloads::Ready)).await;
        result.unwrap();
        assert_eq!(
            resumed.condition("Paused"),
            ("False".into(), "Reconciling".into())
        );
        assert_eq!(resumed.event_reasons(), vec!["Resumed", "Applied"]);
    }

    #[tokio::test]
    async fn missing_monitoring_crds_are_reported_not_fatal() {
        let s = shortener(ShortenerSpec::default());
        let (result, recorded, _) = pass(&s, Scenario::MonitoringCrdsMissing(s.clone())).await;
        result.unwrap();
        let kinds: Vec<_> = recorded
            .applied
            .iter()
            .map(|v| v["kind"].as_str().unwrap())
            .collect();
        assert!(!kinds.contains(&"ServiceMonitor") && !kinds.contains(&"PrometheusRule"));
        assert!(recorded.applied("ConfigMap", "links-dashboard").is_object());
        assert_eq!(
            recorded.condition("MonitoringAvailable"),
            ("False".into(), "CRDNotInstalled".into())
        );
        assert_eq!(
            recorded.condition("Ready"),
            ("True".into(), "AllComponentsReady".into())
        );
        assert!(
            recorded
                .events
                .contains(&("MonitoringUnavailable".to_string(), "Warning".to_string()))
        );
    }

    #[tokio::test]
    async fn apply_failure_marks_degraded_and_backs_off() {
        let s = reconciled_and_ready().await;
        let (result, recorded, ctx) =
            pass(&s, Scenario::ApplyRejected(s.clone(), "StatefulSet")).await;
        let error = result.unwrap_err();
        assert!(
            matches!(&error, Error::Apply { kind, name, .. } if kind == "StatefulSet" && name == "links-postgres"),
            "{error}"
        );
        assert_eq!(
            recorded.condition("Degraded"),
            ("True".into(), "ApplyFailed".into())
        );
        let degraded = recorded
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert!(
            degraded.message.contains("links-postgres"),
            "{}",
            degraded.message
        );
        assert_eq!(
            recorded.events,
            vec![("ApplyFailed".to_string(), "Warning".to_string())]
        );
        // Nothing after the failed object is applied.
        assert!(
            recorded
                .applied
                .iter()
                .all(|v| v["kind"] != "Deployment" || v["metadata"]["name"] != "links")
        );

        let s = Arc::new(s);
        let delays: Vec<_> = (0..4)
            .map(|_| error_policy(s.clone(), &error, ctx.clone()))
            .collect();
        assert_eq!(
            delays,
            vec![
                Action::requeue(Duration::from_secs(5)),
                Action::requeue(Duration::from_secs(10)),
                Action::requeue(Duration::from_secs(20)),
                Action::requeue(Duration::from_secs(40)),
            ]
        );
        let metrics = ctx.metrics.encode().unwrap();
        assert!(metrics.contains(r#"shortener_operator_reconcile_failures_total{error="apply",name="links",namespace="web"} 4"#), "{metrics}");
        ctx.reset_backoff("web/links");
        assert_eq!(
            error_policy(s, &error, ctx),
            Action::requeue(Duration::from_secs(5))
        );
    }

    #[tokio::test]
    async fn backoff_is_capped() {
        let (ctx, _server) = Context::test();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = ctx.next_backoff("web/links");
        }
        assert_eq!(last, BACKOFF_MAX);
    }

    #[tokio::test]
    async fn existing_secrets_are_never_overwritten() {
        let s = shortener(ShortenerSpec::default());
        // The script answers the Secret reads with existing objects and fails the test on any
        // write to them.
        let (result, recorded, _) =
            pass(&s, Scenario::ExistingStack(s.clone(), Workloads::Starting)).await;
        result.unwrap();
        assert!(recorded.created_secrets.is_empty());
        assert!(!recorded.event_reasons().contains(&"SecretCreated"));
        assert!(recorded.applied.iter().all(|v| v["kind"] != "Secret"));
    }

    #[tokio::test]
    async fn storage_growth_resizes_the_claim_not_the_template() {
        let mut spec = ShortenerSpec::default();
        let mut pg = crate::crd::PostgresSpec::default();
        pg.storage.size.0 = "5Gi".into();
        spec.database.postgres = Some(pg);
        let s = shortener(spec);
        let (result, recorded, _) = pass(&s, Scenario::StorageGrown(s.clone(), "1Gi")).await;
        result.unwrap();
        let sts = recorded.applied("StatefulSet", "links-postgres");
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "1Gi"
        );
        assert_eq!(
            recorded.pvc_patch.unwrap()["spec"]["resources"]["requests"]["storage"],
            "5Gi"
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let t1 = Time(Timestamp::from_second(1_000).unwrap());
        let t2 = Time(Timestamp::from_second(2_000).unwrap());
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            condition("Ready", false, "A", "a"),
            Some(1),
            &t1,
        );
        set_condition(
            &mut conditions,
            condition("Ready", false, "B", "b"),
            Some(2),
            &t2,
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, t1);
        assert_eq!(conditions[0].reason, "B");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_condition(
            &mut conditions,
            condition("Ready", true, "C", "c"),
            Some(2),
            &t2,
        );
        assert_eq!(conditions[0].last_transition_time, t2);
    }
}
