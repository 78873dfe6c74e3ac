//! The Shortener's status as pure functions of what a pass saw: readiness read from the typed
//! Deployments and StatefulSets the applies returned, the conditions, and the events that a
//! change of status deserves. Nothing here talks to the API server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;

use crate::children::{Child, Component, Instance, OptionalApis};
use crate::crd::{DatabaseStatus, Exposure, ShortenerStatus};
use crate::gateway_api::HTTPRoute;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const PAUSED: &str = "Paused";
pub const MONITORING: &str = "MonitoringAvailable";
pub const ROUTE: &str = "RouteAccepted";

pub const MONITORING_MISSING: &str = "the monitoring.coreos.com CRDs are not installed, so no ServiceMonitor or PrometheusRule was created; install the Prometheus Operator (for example kube-prometheus-stack) or disable spec.monitoring.serviceMonitor and spec.monitoring.prometheusRule";

/// Rollout state of one workload: every Deployment and StatefulSet among the children.
#[derive(Debug, PartialEq)]
pub struct Workload {
    /// The `app.kubernetes.io/component` label: app, postgres, pgbouncer or redis.
    pub component: String,
    pub desired: i32,
    pub current: i32,
    pub ready: i32,
    pub rolled_out: bool,
}

impl Workload {
    /// `None` for a child that runs no pods.
    pub fn of(child: &Child) -> Option<Self> {
        // spec.replicas, then status: observedGeneration, replicas, readyReplicas, updatedReplicas
        let (meta, desired, observed, counts) = match child {
            Child::Deployment(d) => {
                let s = d.status.clone().unwrap_or_default();
                let counts = [s.replicas, s.ready_replicas, s.updated_replicas];
                let desired = d.spec.as_ref().and_then(|s| s.replicas);
                (&d.metadata, desired, s.observed_generation, counts)
            }
            Child::StatefulSet(d) => {
                let s = d.status.clone().unwrap_or_default();
                let counts = [Some(s.replicas), s.ready_replicas, s.updated_replicas];
                let desired = d.spec.as_ref().and_then(|s| s.replicas);
                (&d.metadata, desired, s.observed_generation, counts)
            }
            Child::Dynamic(_, object) => return crate::children::cloudnative_pg::workload(object),
            _ => return None,
        };
        let [current, ready, updated] = counts.map(|n| n.unwrap_or(0));
        let desired = desired.unwrap_or(1);
        let seen = observed.unwrap_or(0) >= meta.generation.unwrap_or(0);
        let labels = meta.labels.as_ref();
        let component = labels.and_then(|l| l.get("app.kubernetes.io/component").cloned());
        Some(Self {
            component: component.unwrap_or_default(),
            desired,
            current,
            ready,
            rolled_out: seen && ready >= desired && updated >= desired && current <= desired,
        })
    }
}

/// Readiness of the stack: one entry per workload, in apply order.
#[derive(Debug, Default, PartialEq)]
pub struct Readiness {
    pub workloads: Vec<Workload>,
    /// The backup CronJob's last successful run, when there is one.
    pub last_backup: Option<Time>,
    /// The CloudNativePG Cluster's own report, when there is one.
    pub database: Option<DatabaseStatus>,
}

impl Readiness {
    pub fn of(applied: &[Child]) -> Self {
        let workloads = applied.iter().filter_map(Workload::of).collect();
        let last_backup = applied.iter().find_map(|child| match child {
            Child::CronJob(job) => job.status.as_ref()?.last_successful_time.clone(),
            _ => None,
        });
        let database = applied.iter().find_map(|child| match child {
            Child::Dynamic(_, object) => crate::children::cloudnative_pg::database_status(object),
            _ => None,
        });
        Self {
            workloads,
            last_backup,
            database,
        }
    }

    /// A workload the pass could not write (its API is not served): counted as not ready,
    /// so the Shortener is not Ready without it.
    pub fn with_unwritten(mut self, component: Component, desired: i32) -> Self {
        self.workloads.push(Workload {
            component: component.as_str().to_string(),
            desired,
            current: 0,
            ready: 0,
            rolled_out: false,
        });
        self
    }

    pub fn all_ready(&self) -> bool {
        self.workloads.iter().all(|w| w.rolled_out)
    }

    /// (ready, current) replicas of the app Deployment, for the scale subresource.
    pub fn app_replicas(&self) -> (i32, i32) {
        let app = self
            .workloads
            .iter()
            .find(|w| w.component == Component::App.as_str());
        app.map_or((0, 0), |w| (w.ready, w.current))
    }

    pub fn waiting_message(&self) -> String {
        let waiting = self.workloads.iter().filter(|w| !w.rolled_out);
        let waiting: Vec<_> = waiting
            .map(|w| format!("{} {}/{} ready", w.component, w.ready, w.desired))
            .collect();
        format!(
            "waiting for {}; see `kubectl get pods -l app.kubernetes.io/instance` and pod events",
            waiting.join(", ")
        )
    }
}

/// Something the cluster refused that the rest of the pass does not depend on: reported as
/// Degraded while the pass still applies, prunes and updates readiness.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The Degraded condition's reason, CamelCase.
    pub reason: &'static str,
    /// What was refused, naming the object, and what to do about it.
    pub message: String,
}

/// The Degraded reason of a role-setup Job that failed.
pub const ROLE_SETUP_FAILED: &str = "RoleSetupFailed";

/// A role-setup Job the Job controller marked Failed (its retries, `backoffLimit`, are used
/// up), as a Degraded reason naming the Job. Until the roles exist, the app's init container
/// cannot log in to migrate, so new app pods do not start; the Job stays Failed until deleted,
/// and the next pass creates it again. `None` while the Job runs or once it has succeeded.
pub fn role_setup_failure(applied: &[Child]) -> Option<Refusal> {
    applied.iter().find_map(|child| {
        let Child::Job(job) = child else {
            return None;
        };
        let labels = job.metadata.labels.as_ref();
        let component = labels.and_then(|l| l.get("app.kubernetes.io/component"));
        if component.map(String::as_str) != Some(Component::RoleSetup.as_str()) {
            return None;
        }
        let status = job.status.as_ref()?;
        let mut conditions = status.conditions.iter().flatten();
        let failed = conditions.find(|c| c.type_ == "Failed" && c.status == "True")?;
        let name = job.metadata.name.clone().unwrap_or_default();
        let why = match (failed.reason.as_deref(), failed.message.as_deref()) {
            (Some(reason), Some(message)) => format!("{reason}: {message}"),
            (Some(reason), None) => reason.to_string(),
            (None, Some(message)) => message.to_string(),
            (None, None) => "no reason given".to_string(),
        };
        Some(Refusal {
            reason: ROLE_SETUP_FAILED,
            message: format!(
                "role-setup Job {name} failed ({why}); until the database roles exist, new \
                 app pods wait in their migrate init container. See `kubectl logs job/{name}`; \
                 once the cause is fixed, delete the Job and the operator runs it again \
                 (docs/operator.md, \"Database roles\")"
            ),
        })
    })
}

/// The Degraded reason of a Shortener asking for CloudNativePG where its API is not served.
pub const CLOUD_NATIVE_PG_MISSING: &str = "CloudNativePGNotInstalled";

/// `database.cloudNativePG` set, but the cluster does not serve `postgresql.cnpg.io/v1`: no
/// Cluster or Pooler was written, so the app's pods wait for a database that does not come.
pub fn cloud_native_pg_missing(instance: &Instance<'_>, apis: OptionalApis) -> Option<Refusal> {
    if apis.cloud_native_pg || instance.spec().database.cloud_native_pg.is_none() {
        return None;
    }
    Some(Refusal {
        reason: CLOUD_NATIVE_PG_MISSING,
        message: "spec.database.cloudNativePG asks for a CloudNativePG Cluster, but the cluster \
                  does not serve postgresql.cnpg.io/v1 (clusters, poolers), so none was \
                  created and the app waits for its database; install CloudNativePG's operator \
                  (docs/operator.md, \"CloudNativePG\")"
            .to_string(),
    })
}

/// How long an HTTPRoute may wait for a Gateway controller's answer (`status.parents`) before
/// the wait is reported as a failure: long enough for a busy controller, short enough that a
/// Gateway nobody serves (a wrong name, a class without a controller) shows.
pub const ROUTE_PATIENCE_SECONDS: i64 = 120;

/// The Degraded reasons of an HTTPRoute the Gateways did not take.
pub const ROUTE_NOT_ACCEPTED: &str = "RouteNotAccepted";
pub const GATEWAY_API_MISSING: &str = "GatewayAPINotInstalled";

pub const GATEWAY_API_MISSING_MESSAGE: &str = "spec.httpRoute asks for an HTTPRoute, but the cluster does not serve the Gateway API (gateway.networking.k8s.io/v1 httproutes), so none was created and the service is reachable in-cluster only; install the Gateway API CRDs (standard channel) with a Gateway implementation, or expose the Shortener by spec.ingress";

/// The RouteAccepted condition: what the Gateways named in `httpRoute.parentRefs` answered in
/// the HTTPRoute's `status.parents` (their `Accepted` and `ResolvedRefs` conditions for the
/// route's current generation).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteAcceptance {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// `Accepted`, `Pending`, `NoGatewayAnswered`, `GatewayAPINotInstalled`, `NotApplied`, or
    /// the Gateway's own reason when it refused the route.
    pub reason: String,
    pub message: String,
}

impl RouteAcceptance {
    fn new(status: &'static str, reason: &str, message: String) -> Self {
        Self {
            status,
            reason: reason.to_string(),
            message,
        }
    }

    /// The Degraded reason this acceptance amounts to, if any: a route no Gateway serves.
    pub fn refusal(&self) -> Option<Refusal> {
        if self.status != "False" {
            return None;
        }
        let reason = if self.reason == GATEWAY_API_MISSING {
            GATEWAY_API_MISSING
        } else {
            ROUTE_NOT_ACCEPTED
        };
        Some(Refusal {
            reason,
            message: self.message.clone(),
        })
    }

    /// Still waiting for an answer: worth an early requeue.
    pub fn pending(&self) -> bool {
        self.status == "Unknown"
    }
}

/// What one Gateway said of the route.
enum ParentAnswer {
    Accepted,
    /// Accepted=False or ResolvedRefs=False: (the Gateway's reason, its words).
    Refused(String, String),
    /// No condition for the route's current generation yet.
    Silent,
}

/// `namespace/name` of a parent, with its listener or port if it names one.
fn parent_name(parent: &crate::gateway_api::ParentReference, route_namespace: &str) -> String {
    let namespace = parent.namespace.as_deref().unwrap_or(route_namespace);
    let mut name = format!("Gateway {namespace}/{}", parent.name);
    if let Some(section) = &parent.section_name {
        name.push_str(&format!(" listener {section}"));
    }
    if let Some(port) = parent.port {
        name.push_str(&format!(" port {port}"));
    }
    name
}

fn answer_of(route: &HTTPRoute, parent: &crate::gateway_api::ParentReference) -> ParentAnswer {
    let namespace = route.metadata.namespace.as_deref().unwrap_or_default();
    let generation = route.metadata.generation;
    let statuses = route.status.iter().flat_map(|s| s.parents.iter());
    let mut conditions = statuses
        .filter(|p| p.parent_ref.same_parent(parent, namespace))
        .flat_map(|p| p.conditions.iter())
        // An answer about an earlier generation says nothing about this one.
        .filter(|c| c.observed_generation.is_none() || c.observed_generation == generation);
    let (mut accepted, mut resolved) = (None, None);
    for condition in conditions.by_ref() {
        match condition.type_.as_str() {
            "Accepted" => accepted = Some(condition),
            "ResolvedRefs" => resolved = Some(condition),
            _ => {}
        }
    }
    let refused = |c: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition| {
        ParentAnswer::Refused(c.reason.clone(), c.message.clone())
    };
    match (accepted, resolved) {
        (Some(a), _) if a.status == "False" => refused(a),
        (Some(a), Some(r)) if a.status == "True" && r.status == "False" => refused(r),
        (Some(a), _) if a.status == "True" => ParentAnswer::Accepted,
        _ => ParentAnswer::Silent,
    }
}

/// The RouteAccepted condition of a pass, or `None` when the spec asks for no HTTPRoute (the
/// condition is then removed). `old` and `now` time the wait for an answer.
pub fn route_acceptance(
    instance: &Instance<'_>,
    apis: OptionalApis,
    applied: &[Child],
    old: &ShortenerStatus,
    now: &Time,
) -> Option<RouteAcceptance> {
    let Exposure::HttpRoute(_) = instance.exposure() else {
        return None;
    };
    if !apis.gateway {
        let message = GATEWAY_API_MISSING_MESSAGE.to_string();
        return Some(RouteAcceptance::new("False", GATEWAY_API_MISSING, message));
    }
    let route = applied.iter().find_map(|child| match child {
        Child::HTTPRoute(route) => Some(route),
        _ => None,
    });
    let Some(route) = route else {
        let message = "the HTTPRoute was not applied; see the Degraded condition".to_string();
        return Some(RouteAcceptance::new("Unknown", "NotApplied", message));
    };
    let namespace = route.metadata.namespace.as_deref().unwrap_or_default();
    let (mut accepted, mut refused, mut silent) = (Vec::new(), Vec::new(), Vec::new());
    for parent in &route.spec.parent_refs {
        let name = parent_name(parent, namespace);
        match answer_of(route, parent) {
            ParentAnswer::Accepted => accepted.push(name),
            ParentAnswer::Refused(reason, message) => refused.push((name, reason, message)),
            ParentAnswer::Silent => silent.push(name),
        }
    }
    let mut parts = Vec::new();
    for (name, reason, message) in &refused {
        parts.push(format!(
            "{name} did not take the route: {reason}: {message}"
        ));
    }
    if !silent.is_empty() {
        parts.push(format!("no answer yet from {}", silent.join(", ")));
    }
    if !accepted.is_empty() {
        parts.push(format!("accepted by {}", accepted.join(", ")));
    }
    let message = parts.join("; ");
    if let Some((_, reason, _)) = refused.first() {
        return Some(RouteAcceptance::new("False", reason, message));
    }
    if silent.is_empty() {
        return Some(RouteAcceptance::new("True", "Accepted", message));
    }
    // Waiting: past the patience (counted from when the wait began) it is a failure.
    let previous = old.conditions.iter().find(|c| c.type_ == ROUTE);
    let waited_out = previous.is_some_and(|c| match (c.status.as_str(), c.reason.as_str()) {
        ("False", "NoGatewayAnswered") => true,
        ("Unknown", "Pending") => {
            now.0.as_second() - c.last_transition_time.0.as_second() >= ROUTE_PATIENCE_SECONDS
        }
        _ => false,
    });
    if waited_out {
        let message = format!(
            "{message}; after {ROUTE_PATIENCE_SECONDS} s no Gateway controller has answered: \
             check that the Gateways exist and that their GatewayClass has a running controller \
             (`kubectl get gateway -A`, `kubectl describe httproute -n {namespace} {}`)",
            instance.child_name(Component::App)
        );
        return Some(RouteAcceptance::new("False", "NoGatewayAnswered", message));
    }
    Some(RouteAcceptance::new("Unknown", "Pending", message))
}

/// (type, status, reason, message) of one condition.
type Entry<'a> = (&'a str, bool, &'a str, &'a str);

/// The status of a pass that found `spec.paused`: readiness is not re-evaluated.
pub fn paused(old: &ShortenerStatus, generation: Option<i64>, now: &Time) -> ShortenerStatus {
    let mut status = old.clone();
    status.observed_generation = generation;
    let message = "spec.paused is true: children are left untouched until it is set to false";
    let entries = [
        (PAUSED, true, "PausedBySpec", message),
        (PROGRESSING, false, "Paused", "reconciliation is paused"),
    ];
    set_conditions(&mut status.conditions, &entries, generation, now);
    status
}

/// The status of a pass that applied (and pruned) every child.
pub fn reconciled(
    instance: &Instance<'_>,
    old: &ShortenerStatus,
    apis: OptionalApis,
    readiness: &Readiness,
    refusals: &[Refusal],
    route: Option<&RouteAcceptance>,
    now: &Time,
) -> ShortenerStatus {
    let generation = instance.shortener.metadata.generation;
    let mut status = old.clone();
    status.observed_generation = generation;
    (status.ready_replicas, status.replicas) = readiness.app_replicas();
    status.selector = Some(instance.app_selector());
    status.url = Some(instance.public_url());
    status.last_backup = readiness.last_backup.clone();
    status.database = readiness.database.clone();
    let serving = format!("serving at {}", instance.public_url());
    let waiting = readiness.waiting_message();
    let done = "all components run the desired configuration";
    let mut entries: Vec<Entry<'_>> = if readiness.all_ready() {
        vec![
            (READY, true, "AllComponentsReady", &serving),
            (PROGRESSING, false, "RolloutComplete", done),
        ]
    } else {
        vec![
            (READY, false, "ComponentsNotReady", &waiting),
            (PROGRESSING, true, "RollingOut", &waiting),
        ]
    };
    let refused: Vec<_> = refusals.iter().map(|r| r.message.as_str()).collect();
    let refused = refused.join("; ");
    match refusals.first() {
        Some(first) => entries.push((DEGRADED, true, first.reason, &refused)),
        None => entries.push((DEGRADED, false, "ReconcileSucceeded", "all objects applied")),
    }
    entries.push((PAUSED, false, "Reconciling", "spec.paused is false"));
    let monitoring = &instance.spec().monitoring;
    if !(monitoring.service_monitor || monitoring.prometheus_rule) {
        status.conditions.retain(|c| c.type_ != MONITORING);
    } else if apis.monitoring {
        let applied = "ServiceMonitor and PrometheusRule are applied";
        entries.push((MONITORING, true, "CRDsInstalled", applied));
    } else {
        entries.push((MONITORING, false, "CRDNotInstalled", MONITORING_MISSING));
    }
    set_conditions(&mut status.conditions, &entries, generation, now);
    match route {
        Some(route) => set_condition(
            &mut status.conditions,
            (ROUTE, route.status, &route.reason, &route.message),
            generation,
            now,
        ),
        None => status.conditions.retain(|c| c.type_ != ROUTE),
    }
    status
}

/// The status of a pass that failed to write a child: Degraded, everything else as it was.
pub fn failed(
    old: &ShortenerStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: &Time,
) -> ShortenerStatus {
    let mut status = old.clone();
    let entry = (DEGRADED, true, reason, message);
    set_conditions(&mut status.conditions, &[entry], generation, now);
    status
}

/// Insert or update conditions, moving `lastTransitionTime` only when a status flips.
pub fn set_conditions(
    conditions: &mut Vec<Condition>,
    entries: &[Entry<'_>],
    generation: Option<i64>,
    now: &Time,
) {
    for &(type_, value, reason, message) in entries {
        let status = if value { "True" } else { "False" };
        set_condition(
            conditions,
            (type_, status, reason, message),
            generation,
            now,
        );
    }
}

/// Insert or update one condition of any status (`True`, `False`, `Unknown`), moving
/// `lastTransitionTime` only when its status flips.
fn set_condition(
    conditions: &mut Vec<Condition>,
    (type_, status, reason, message): (&str, &str, &str, &str),
    generation: Option<i64>,
    now: &Time,
) {
    let status = status.to_string();
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let new = Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time,
        observed_generation: generation,
    };
    match existing {
        Some(i) => conditions[i] = new,
        None => conditions.push(new),
    }
}

pub fn condition_is(status: &ShortenerStatus, type_: &str, value: &str) -> bool {
    let mut conditions = status.conditions.iter();
    conditions.any(|c| c.type_ == type_ && c.status == value)
}

/// What a pass did besides computing the status.
#[derive(Debug, Default)]
pub struct Pass {
    /// Names of the Secrets generated in this pass.
    pub created_secrets: Vec<String>,
    /// Number of objects applied.
    pub applied: usize,
    /// `Kind/name` of the children deleted because the spec no longer asks for them.
    pub pruned: Vec<String>,
}

/// An event to publish on the Shortener.
#[derive(Debug, PartialEq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

impl Notice {
    pub fn normal(reason: &'static str, note: impl Into<String>) -> Self {
        let (type_, note) = (EventType::Normal, note.into());
        Self {
            type_,
            reason,
            note,
        }
    }

    pub fn warning(reason: &'static str, note: impl Into<String>) -> Self {
        let (type_, note) = (EventType::Warning, note.into());
        Self {
            type_,
            reason,
            note,
        }
    }
}

/// The events a pass deserves, from the status before and after it: each one marks a change a
/// human would want to see in `kubectl describe`, so a steady state publishes none.
pub fn notices(old: &ShortenerStatus, new: &ShortenerStatus, pass: &Pass) -> Vec<Notice> {
    let was = |t: &str| condition_is(old, t, "True");
    let is = |t: &str| condition_is(new, t, "True");
    let mut out = Vec::new();
    if is(PAUSED) {
        if !was(PAUSED) {
            out.push(Notice::normal(
                "Paused",
                "spec.paused is true; children will not be changed",
            ));
        }
        return out;
    }
    if !pass.created_secrets.is_empty() {
        // One event for all: the recorder folds same-reason events into a series anyway.
        let names = pass.created_secrets.join(", ");
        let note = format!("generated credentials in Secret(s) {names}");
        out.push(Notice::normal("SecretCreated", note));
    }
    if was(PAUSED) {
        out.push(Notice::normal(
            "Resumed",
            "spec.paused is false; reconciling children again",
        ));
    }
    if old.observed_generation != new.observed_generation {
        let generation = new.observed_generation.unwrap_or_default();
        let note = format!(
            "applied {} objects for generation {generation}",
            pass.applied
        );
        out.push(Notice::normal("Applied", note));
        if condition_is(new, MONITORING, "False") {
            out.push(Notice::warning("MonitoringUnavailable", MONITORING_MISSING));
        }
    }
    if !pass.pruned.is_empty() {
        let pruned = pass.pruned.join(", ");
        let note = format!("deleted what the spec no longer asks for: {pruned}");
        out.push(Notice::normal("Pruned", note));
    }
    if is(DEGRADED) && !was(DEGRADED) {
        let degraded = new.conditions.iter().find(|c| c.type_ == DEGRADED);
        let note = degraded.map(|c| c.message.clone()).unwrap_or_default();
        out.push(Notice::warning("Degraded", note));
    }
    match (was(READY), is(READY)) {
        (false, true) => {
            let url = new.url.as_deref().unwrap_or_default();
            out.push(Notice::normal(
                "Ready",
                format!("all components ready; serving at {url}"),
            ));
        }
        (true, false) => {
            let ready = new.conditions.iter().find(|c| c.type_ == READY);
            let note = ready.map(|c| c.message.clone()).unwrap_or_default();
            out.push(Notice::warning("NotReady", note));
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::children::testing::shortener;
    use crate::crd::ShortenerSpec;
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, StatefulSet};
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn time(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    /// A workload of `component` asking for `desired` pods, of which `ready` are ready.
    fn deployment(component: &str, desired: i32, current: i32, ready: i32) -> Child {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": { "name": component, "generation": 2,
                          "labels": { "app.kubernetes.io/component": component } },
            "spec": { "replicas": desired, "selector": {}, "template": {} },
        }))
        .unwrap();
        d.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(current),
            ready_replicas: Some(ready),
            updated_replicas: Some(current),
            ..DeploymentStatus::default()
        });
        Child::Deployment(d)
    }

    #[test]
    fn workloads_are_read_from_typed_deployments_and_stateful_sets() {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": { "name": "pg", "generation": 1,
                          "labels": { "app.kubernetes.io/component": "postgres" } },
            "spec": { "replicas": 1, "selector": {}, "serviceName": "pg", "template": {} },
            "status": { "observedGeneration": 1, "replicas": 1, "readyReplicas": 0 },
        }))
        .unwrap();
        let readiness = Readiness::of(&[
            Child::StatefulSet(sts),
            deployment("redis", 1, 1, 1),
            deployment("app", 3, 3, 2),
        ]);
        assert_eq!(readiness.workloads.len(), 3);
        assert!(!readiness.all_ready());
        assert_eq!(readiness.app_replicas(), (2, 3));
        assert!(
            readiness
                .waiting_message()
                .starts_with("waiting for postgres 0/1 ready, app 2/3 ready;")
        );
    }

    #[test]
    fn a_rollout_is_done_only_when_the_new_generation_is_observed_and_old_pods_are_gone() {
        assert!(
            Workload::of(&deployment("app", 3, 3, 3))
                .unwrap()
                .rolled_out
        );
        // A surge pod of the old ReplicaSet still runs.
        assert!(
            !Workload::of(&deployment("app", 3, 4, 3))
                .unwrap()
                .rolled_out
        );
        let Child::Deployment(mut d) = deployment("app", 3, 3, 3) else {
            unreachable!()
        };
        d.metadata.generation = Some(3);
        assert!(!Workload::of(&Child::Deployment(d)).unwrap().rolled_out);
        let no_pods = Child::ConfigMap(Default::default());
        assert!(Workload::of(&no_pods).is_none());
    }

    #[test]
    fn the_status_carries_the_last_successful_backup() {
        use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus};
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let backups = |last: Option<Time>| {
            Child::CronJob(CronJob {
                status: Some(CronJobStatus {
                    last_schedule_time: Some(time(50)),
                    last_successful_time: last,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let status = |applied: &[Child]| {
            let readiness = Readiness::of(applied);
            let apis = OptionalApis::ALL;
            reconciled(
                &instance,
                &Default::default(),
                apis,
                &readiness,
                &[],
                None,
                &time(99),
            )
        };
        let app = deployment("app", 3, 3, 3);
        let taken = status(&[app.clone(), backups(Some(time(60)))]);
        assert_eq!(taken.last_backup, Some(time(60)));
        assert!(
            taken
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
        assert_eq!(status(&[app.clone(), backups(None)]).last_backup, None);
        assert_eq!(status(&[app]).last_backup, None);
    }

    #[test]
    fn reconciled_status_reports_readiness_and_monitoring() {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let ready = Readiness::of(&[deployment("app", 3, 3, 3)]);
        let status = reconciled(
            &instance,
            &Default::default(),
            OptionalApis::ALL,
            &ready,
            &[],
            None,
            &time(1),
        );
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!((status.ready_replicas, status.replicas), (3, 3));
        let conditions: Vec<_> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            conditions,
            vec![
                ("Ready", "True", "AllComponentsReady"),
                ("Progressing", "False", "RolloutComplete"),
                ("Degraded", "False", "ReconcileSucceeded"),
                ("Paused", "False", "Reconciling"),
                ("MonitoringAvailable", "True", "CRDsInstalled"),
            ]
        );

        let mut spec = ShortenerSpec::default();
        spec.monitoring.service_monitor = false;
        spec.monitoring.prometheus_rule = false;
        let s = shortener(spec);
        let instance = Instance::new(&s).unwrap();
        let starting = Readiness::of(&[deployment("app", 3, 3, 0)]);
        let later = reconciled(
            &instance,
            &status,
            OptionalApis::ALL,
            &starting,
            &[],
            None,
            &time(2),
        );
        assert!(condition_is(&later, READY, "False"));
        assert!(!later.conditions.iter().any(|c| c.type_ == MONITORING));
        let degraded = later
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert_eq!(
            degraded.last_transition_time,
            time(1),
            "unchanged status keeps its time"
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut conditions = Vec::new();
        set_conditions(
            &mut conditions,
            &[("Ready", false, "A", "a")],
            Some(1),
            &time(1_000),
        );
        set_conditions(
            &mut conditions,
            &[("Ready", false, "B", "b")],
            Some(2),
            &time(2_000),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, time(1_000));
        assert_eq!(conditions[0].reason, "B");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_conditions(
            &mut conditions,
            &[("Ready", true, "C", "c")],
            Some(2),
            &time(2_000),
        );
        assert_eq!(conditions[0].last_transition_time, time(2_000));
    }

    fn reasons(notices: &[Notice]) -> Vec<&str> {
        notices.iter().map(|n| n.reason).collect()
    }

    #[test]
    fn events_mark_changes_only() {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let ready = Readiness::of(&[deployment("app", 3, 3, 3)]);
        let first = reconciled(
            &instance,
            &Default::default(),
            OptionalApis::default(),
            &ready,
            &[],
            None,
            &time(1),
        );
        let pass = Pass {
            applied: 15,
            pruned: vec!["Ingress/links".into()],
            ..Pass::default()
        };
        let notices = notices(&Default::default(), &first, &pass);
        assert_eq!(
            reasons(&notices),
            vec!["Applied", "MonitoringUnavailable", "Pruned", "Ready"]
        );
        assert_eq!(notices[0].note, "applied 15 objects for generation 1");
        assert_eq!(
            notices[2].note,
            "deleted what the spec no longer asks for: Ingress/links"
        );
        assert!(super::notices(&first, &first, &Pass::default()).is_empty());

        let paused = paused(&first, Some(1), &time(2));
        assert_eq!(
            reasons(&super::notices(&first, &paused, &Pass::default())),
            vec!["Paused"]
        );
        assert!(super::notices(&paused, &paused, &Pass::default()).is_empty());

        let starting = Readiness::of(&[deployment("app", 3, 3, 1)]);
        let resumed = reconciled(
            &instance,
            &paused,
            OptionalApis::default(),
            &starting,
            &[],
            None,
            &time(3),
        );
        let notices = super::notices(&paused, &resumed, &Pass::default());
        assert_eq!(reasons(&notices), vec!["Resumed", "NotReady"]);
        assert!(
            notices[1].note.contains("app 1/3 ready"),
            "{}",
            notices[1].note
        );
        assert_eq!(notices[1].type_, EventType::Warning);
    }

    /// A role-setup Job as the API server returns it, with these status conditions.
    fn role_job(conditions: serde_json::Value) -> Child {
        let job: Job = serde_json::from_value(json!({
            "metadata": { "name": "links-postgres-roles-0123456789",
                          "labels": { "app.kubernetes.io/component": "postgres-roles" } },
            "spec": { "template": {} },
            "status": { "conditions": conditions },
        }))
        .unwrap();
        Child::Job(job)
    }

    #[test]
    fn a_failed_role_setup_job_degrades_the_shortener_until_it_succeeds() {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let ready = deployment("app", 3, 3, 3);
        let failed = role_job(json!([
            { "type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit" },
            { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit" },
        ]));
        let applied = [ready.clone(), failed];
        let refusal = role_setup_failure(&applied).unwrap();
        assert_eq!(refusal.reason, "RoleSetupFailed");
        assert!(
            refusal.message.starts_with(
                "role-setup Job links-postgres-roles-0123456789 failed (BackoffLimitExceeded: \
                 Job has reached the specified backoff limit)"
            ),
            "{}",
            refusal.message
        );
        let readiness = Readiness::of(&applied);
        let degraded = reconciled(
            &instance,
            &Default::default(),
            OptionalApis::ALL,
            &readiness,
            &[refusal],
            None,
            &time(1),
        );
        let condition = degraded
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED)
            .unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "RoleSetupFailed")
        );
        assert!(
            condition
                .message
                .contains("links-postgres-roles-0123456789")
        );
        let events = notices(&Default::default(), &degraded, &Pass::default());
        let warned = events.iter().find(|n| n.reason == "Degraded").unwrap();
        assert_eq!(warned.type_, EventType::Warning);
        assert!(warned.note.contains("links-postgres-roles-0123456789"));

        // Running, then succeeded (the Job the next pass made): nothing to report, and the
        // condition clears.
        for conditions in [
            json!([]),
            json!([{ "type": "Complete", "status": "True" },
                   { "type": "SuccessCriteriaMet", "status": "True" }]),
        ] {
            let applied = [ready.clone(), role_job(conditions)];
            assert_eq!(role_setup_failure(&applied), None);
        }
        let cleared = reconciled(
            &instance,
            &degraded,
            OptionalApis::ALL,
            &readiness,
            &[],
            None,
            &time(2),
        );
        assert!(condition_is(&cleared, DEGRADED, "False"));
        // A Job of another component is not the role setup's.
        let Child::Job(mut other) = role_job(json!([{ "type": "Failed", "status": "True" }]))
        else {
            unreachable!()
        };
        other.metadata.labels = None;
        assert_eq!(role_setup_failure(&[Child::Job(other)]), None);
    }

    #[test]
    fn a_route_no_gateway_answers_is_pending_then_reported() {
        use crate::crd::{GatewayParentRef, HttpRouteSpec, PublicScheme};
        let spec = ShortenerSpec {
            http_route: Some(HttpRouteSpec {
                parent_refs: vec![GatewayParentRef {
                    name: "public".into(),
                    namespace: None,
                    section_name: None,
                    port: None,
                }],
                hostnames: vec![],
                scheme: PublicScheme::Https,
                annotations: Default::default(),
            }),
            ..ShortenerSpec::default()
        };
        let s = shortener(spec);
        let instance = Instance::new(&s).unwrap();
        let route = crate::children::exposure::http_route(
            &instance,
            instance.exposure().http_route().unwrap(),
        );
        let mut stored = route.clone();
        stored.metadata.generation = Some(2);
        let applied = [Child::HTTPRoute(stored.clone())];
        let ready = Readiness::of(&[deployment("app", 3, 3, 3)]);
        let apis = OptionalApis::ALL;
        let at = |old: &ShortenerStatus, second: i64| {
            let route = route_acceptance(&instance, apis, &applied, old, &time(second)).unwrap();
            let refusal: Vec<_> = route.refusal().into_iter().collect();
            reconciled(
                &instance,
                old,
                apis,
                &ready,
                &refusal,
                Some(&route),
                &time(second),
            )
        };
        let route_condition = |status: &ShortenerStatus| {
            let c = status.conditions.iter().find(|c| c.type_ == ROUTE).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        let first = at(&Default::default(), 1_000);
        assert_eq!(
            route_condition(&first),
            ("Unknown".into(), "Pending".into())
        );
        assert!(condition_is(&first, DEGRADED, "False"));
        let still = at(&first, 1_000 + ROUTE_PATIENCE_SECONDS - 1);
        assert_eq!(
            route_condition(&still),
            ("Unknown".into(), "Pending".into())
        );
        let late = at(&still, 1_000 + ROUTE_PATIENCE_SECONDS);
        assert_eq!(
            route_condition(&late),
            ("False".into(), "NoGatewayAnswered".into())
        );
        assert!(condition_is(&late, DEGRADED, "True"));
        let later = at(&late, 5_000);
        assert_eq!(route_condition(&later).1, "NoGatewayAnswered");

        // An answer about an earlier generation of the route is no answer.
        let mut stale = stored.clone();
        stale.status = Some(
            serde_json::from_value(json!({ "parents": [{
                "parentRef": { "name": "public" },
                "controllerName": "example.net/gateway",
                "conditions": [{ "type": "Accepted", "status": "True", "reason": "Accepted",
                  "message": "", "observedGeneration": 1,
                  "lastTransitionTime": "2026-01-01T00:00:00Z" }],
            }] }))
            .unwrap(),
        );
        let answer = route_acceptance(
            &instance,
            apis,
            &[Child::HTTPRoute(stale.clone())],
            &first,
            &time(1_001),
        )
        .unwrap();
        assert_eq!(answer.reason, "Pending");
        stale.metadata.generation = Some(1);
        let answer = route_acceptance(
            &instance,
            apis,
            &[Child::HTTPRoute(stale)],
            &first,
            &time(1_001),
        )
        .unwrap();
        assert_eq!(
            (answer.status, answer.reason.as_str()),
            ("True", "Accepted")
        );
        assert!(
            answer.message.contains("accepted by Gateway web/public"),
            "{}",
            answer.message
        );

        // No HTTPRoute asked for: no condition.
        let plain = shortener(ShortenerSpec::default());
        let plain = Instance::new(&plain).unwrap();
        assert_eq!(route_acceptance(&plain, apis, &[], &first, &time(1)), None);
        let cleared = reconciled(&plain, &late, apis, &ready, &[], None, &time(6_000));
        assert!(!cleared.conditions.iter().any(|c| c.type_ == ROUTE));
    }
}
