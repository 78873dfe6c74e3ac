//! The reconciler: applies the desired state of each Shortener, prunes what it no longer asks
//! for, and reports back in its status.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::children::{
    self, Component, Credentials, DesiredState, Instance, MANAGED_BY, Observed, OptionalApis,
    cloudnative_pg,
};
use crate::cluster::{self, ClusterResources, SeenChildren, Written};
use crate::crd::{Shortener, ShortenerStatus};
use crate::error::{Error, Result};
use crate::gateway_api;
use crate::metrics::Metrics;
use crate::status::{self, Notice, Pass, Readiness};

/// Requeue interval once everything is ready; owned-object watches cover faster changes.
const STEADY_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue interval while a rollout is in progress, in case a watch event is missed.
const PROGRESS_REQUEUE: Duration = Duration::from_secs(30);

/// Shared state of the reconciler.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per Shortener (namespace/name).
    backoff: Backoff,
    /// Apply Ingress annotations that inject raw controller configuration (`*-snippet`).
    allow_snippet_annotations: bool,
    /// What the owned-kind watches have seen of the children.
    pub seen: SeenChildren,
    /// The optional APIs the last pass found served; the watch of an optional kind starts
    /// once its API is (see `run_in`).
    served: tokio::sync::watch::Sender<OptionalApis>,
    /// Where the operator runs: its pods may call the apps it runs (the ShortLink sync).
    operator_namespace: Option<String>,
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
            backoff: Backoff::default(),
            allow_snippet_annotations: false,
            seen: SeenChildren::default(),
            served: tokio::sync::watch::Sender::new(OptionalApis::default()),
            operator_namespace: None,
        }
    }

    /// The namespace the operator's pods run in.
    pub fn in_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.operator_namespace = Some(namespace.into());
        self
    }

    /// Record what a pass discovered; wakes the watches waiting for an optional API.
    fn discovered(&self, apis: OptionalApis) {
        self.served.send_if_modified(|known| {
            let changed = *known != apis;
            *known = apis;
            changed
        });
    }

    /// Let Shorteners carry snippet annotations (`--allow-snippet-annotations`).
    pub fn allowing_snippet_annotations(mut self, allow: bool) -> Self {
        self.allow_snippet_annotations = allow;
        self
    }

    fn reset_backoff(&self, key: &str) {
        self.backoff.reset(key);
    }

    fn next_backoff(&self, key: &str) -> Duration {
        self.backoff.next(key)
    }

    async fn publish(&self, shortener: &Shortener, notices: Vec<Notice>) {
        for notice in notices {
            let event = Event {
                type_: notice.type_,
                reason: notice.reason.to_string(),
                note: Some(notice.note),
                action: "Reconcile".to_string(),
                secondary: None,
            };
            // Events are for humans; failing to record one must not fail the reconcile.
            let regarding = shortener.object_ref(&());
            if let Err(error) = self.recorder.publish(&event, &regarding).await {
                warn!(%error, reason = notice.reason, "could not publish event");
            }
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
    let old = shortener.status.clone().unwrap_or_default();
    let generation = shortener.metadata.generation;
    let now = Time(Timestamp::now());

    if shortener.spec.paused {
        let new = status::paused(&old, generation, &now);
        cluster::write_status(&api, &instance.name, &old, &new).await?;
        ctx.publish(shortener, status::notices(&old, &new, &Pass::default()))
            .await;
        return Ok(Action::await_change());
    }

    if let Some(message) = refused_annotations(shortener, ctx.allow_snippet_annotations) {
        let new = status::failed(&old, generation, SNIPPETS_REFUSED, &message, &now);
        if new != old {
            cluster::write_status(&api, &instance.name, &old, &new).await?;
            let notice = Notice::warning(SNIPPETS_REFUSED, message);
            ctx.publish(shortener, vec![notice]).await;
        }
        // Nothing to retry: a spec change (or a restart with the flag) brings the next pass.
        return Ok(Action::await_change());
    }

    let mut observed = cluster::observe(&ctx.client, &instance).await?;
    observed.operator_namespace = ctx.operator_namespace.clone();
    ctx.discovered(observed.apis);
    let desired = children::desired_state(&instance, &observed, &Credentials::generate())?;
    let (created_secrets, mut refusals) =
        cluster::ensure_secrets(&ctx.client, &instance, &desired).await?;
    let (_, claim_refusals) = cluster::ensure_claims(&ctx.client, &instance, &desired).await?;
    refusals.extend(claim_refusals);
    let Written {
        applied,
        pruned,
        refusals: more_refusals,
    } = match write_children(&ctx.client, &ctx.seen, &instance, &desired, &observed).await {
        Ok(written) => written,
        Err(error) => {
            report_failure(ctx, shortener, &api, &old, &error, &now).await;
            return Err(error);
        }
    };

    refusals.extend(more_refusals);
    refusals.extend(status::role_setup_failure(&applied));
    let mut readiness = Readiness::of(&applied);
    if let Some(missing) = status::cloud_native_pg_missing(&instance, observed.apis) {
        refusals.push(missing);
        let instances = shortener.spec.database.cloud_native_pg.as_ref();
        let desired = instances.map_or(1, |cnpg| cnpg.instances);
        readiness = readiness.with_unwritten(Component::Postgres, desired);
    }
    let route = status::route_acceptance(&instance, observed.apis, &applied, &old, &now);
    refusals.extend(route.as_ref().and_then(|r| r.refusal()));
    let new = status::reconciled(
        &instance,
        &old,
        observed.apis,
        &readiness,
        &refusals,
        route.as_ref(),
        &now,
    );
    cluster::write_status(&api, &instance.name, &old, &new).await?;
    let pass = Pass {
        created_secrets,
        applied: applied.len(),
        pruned,
    };
    ctx.publish(shortener, status::notices(&old, &new, &pass))
        .await;

    info!(shortener = %object_key(shortener), ready = readiness.all_ready(), "reconciled");
    // A route waiting for its Gateways' answer is looked at again soon, so that the wait is
    // reported once it outlasts its patience even if no watch event comes.
    let waiting = route.as_ref().is_some_and(|r| r.pending());
    Ok(Action::requeue(
        if readiness.all_ready() && refusals.is_empty() && !waiting {
            STEADY_REQUEUE
        } else {
            PROGRESS_REQUEUE
        },
    ))
}

const SNIPPETS_REFUSED: &str = "SnippetAnnotationRefused";

/// Why the spec cannot be applied at all: snippet annotations on the Ingress, unless allowed.
/// Refused before any write, so the stack keeps running as last applied.
fn refused_annotations(shortener: &Shortener, allowed: bool) -> Option<String> {
    let Ok(crate::crd::Exposure::Ingress(ingress)) = shortener.spec.exposure() else {
        return None;
    };
    let snippets = children::exposure::snippet_annotations(&ingress.annotations);
    if allowed || snippets.is_empty() {
        return None;
    }
    Some(format!(
        "spec.ingress.annotations {} inject raw configuration into the ingress controller; the \
         operator refuses them unless started with --allow-snippet-annotations. Nothing was \
         applied; the stack runs as last applied.",
        snippets.join(", ")
    ))
}

/// Apply every desired child in order, grow the data volume, then prune what is no longer
/// desired (only after every apply succeeded). A refused resize is reported, not fatal.
async fn write_children(
    client: &Client,
    seen: &SeenChildren,
    instance: &Instance<'_>,
    desired: &DesiredState,
    observed: &Observed,
) -> Result<Written> {
    if instance.spec().app.autoscaling.is_some() {
        cluster::hand_over_replicas(client, instance).await?;
    }
    let mut resources = ClusterResources::new(client, instance, seen);
    for child in &desired.children {
        resources.apply(child).await?;
    }
    if let Some(pg) = instance.spec().database.embedded() {
        let size = &pg.storage.size.0;
        resources.refused(cluster::grow_postgres_volume(client, instance, observed, size).await?);
    }
    resources.prune(observed.apis).await
}

async fn report_failure(
    ctx: &Context,
    shortener: &Shortener,
    api: &Api<Shortener>,
    old: &ShortenerStatus,
    error: &Error,
    now: &Time,
) {
    let reason = match error {
        Error::Prune { .. } => "PruneFailed",
        _ => "ApplyFailed",
    };
    let message = format!(
        "{error}; the operator retries with backoff. Check the error above and the operator's RBAC."
    );
    let new = status::failed(old, shortener.metadata.generation, reason, &message, now);
    if let Err(error) = cluster::write_status(api, &shortener.name_any(), old, &new).await {
        warn!(%error, "could not record the failure in the status");
    }
    ctx.publish(shortener, vec![Notice::warning(reason, message)])
        .await;
}

/// Label selector limiting the owned-object watches to what this operator manages.
pub fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY}")
}

/// Run the controller until `shutdown` resolves; in-flight reconciles finish first. Every
/// managed kind but the monitoring ones (whose CRDs may be missing) is watched for drift.
/// With `namespaces`, one controller per namespace watches only there (a namespaced install's
/// Roles allow nothing else); without, one controller watches the whole cluster.
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    namespaces: &[String],
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    if namespaces.is_empty() {
        run_in(client, ctx, None, shutdown).await;
        return;
    }
    let controllers = namespaces.iter().map(|ns| {
        run_in(
            client.clone(),
            ctx.clone(),
            Some(ns.as_str()),
            shutdown.clone(),
        )
    });
    futures::future::join_all(controllers).await;
}

async fn run_in(
    client: Client,
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shorteners = match namespace {
        Some(ns) => Api::<Shortener>::namespaced(client.clone(), ns),
        None => Api::<Shortener>::all(client.clone()),
    };
    let owned = watcher::Config::default().labels(&managed_selector());
    let controller = Controller::new(shorteners, watcher::Config::default().any_semantic());
    // The kinds every cluster serves are watched from the start; the HTTPRoute's watch starts
    // once a pass has found the Gateway API served, CloudNativePG's once it is served (a watch
    // of a kind not served would fail and retry forever). ServiceMonitor and PrometheusRule
    // are not watched: re-applied at the periodic requeue.
    let controller = children::managed_kinds(OptionalApis::default())
        .into_iter()
        .fold(controller, |controller, kind| {
            let stream = owned_watch(&client, namespace, &ctx, kind.clone(), owned.clone());
            controller.owns_stream_with(stream, kind)
        });
    // The same for CloudNativePG's Cluster and Pooler, whose status (a failover, a replica
    // back) is the database's readiness.
    let optional: [(ApiResource, ServedWhen); 3] = [
        (gateway_api::http_route_resource(), |apis| apis.gateway),
        (cloudnative_pg::cluster_resource(), |apis| {
            apis.cloud_native_pg
        }),
        (cloudnative_pg::pooler_resource(), |apis| {
            apis.cloud_native_pg
        }),
    ];
    let controller = optional
        .into_iter()
        .fold(controller, |controller, (kind, served_now)| {
            let watch = owned_watch(&client, namespace, &ctx, kind.clone(), owned.clone());
            let mut served = ctx.served.subscribe();
            let once_served = futures::stream::once(async move {
                // Only a dropped context ends the wait, and then nothing is left to watch.
                if served.wait_for(served_now).await.is_err() {
                    futures::future::pending::<()>().await;
                }
                watch
            })
            .flatten();
            controller.owns_stream_with(once_served, kind)
        });
    controller
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

/// Whether a pass's discovery found an optional kind served.
type ServedWhen = fn(&OptionalApis) -> bool;

/// The label-filtered metadata watch of one owned kind: it triggers a reconcile of the owner
/// on every change (deletions too: a deleted child is recreated) and fills the store that
/// tells a pass what exists (cluster::SeenChildren), so applies need no GET first.
fn owned_watch(
    client: &Client,
    namespace: Option<&str>,
    ctx: &Context,
    kind: kube::api::ApiResource,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<DynamicObject>, watcher::Error>> + Send + 'static
{
    // Metadata only: owner references and labels are all it needs.
    let api = match namespace {
        Some(ns) => {
            Api::<PartialObjectMeta<DynamicObject>>::namespaced_with(client.clone(), ns, &kind)
        }
        None => Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &kind),
    };
    let writer = reflector::store::Writer::new(kind.clone());
    ctx.seen.add(kind, writer.as_reader());
    #[allow(deprecated)]
    reflector(writer, watcher(api, config).default_backoff()).touched_objects()
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

        assert_eq!(recorded.created_secrets.len(), 5);
        let string_data = |n: usize| recorded.created_secrets[n]["stringData"].clone();
        let db = string_data(0);
        let password = db["password"].as_str().unwrap();
        assert_eq!(password.len(), 32);
        assert_ne!(password, "generated-by-operator");
        // One generated password per role, each its own.
        let owner = string_data(1);
        let runtime = string_data(2);
        let owner_password = owner["password"].as_str().unwrap();
        let runtime_password = runtime["password"].as_str().unwrap();
        let admin_password = runtime["pgbouncer-admin-password"].as_str().unwrap();
        let all = [password, owner_password, runtime_password, admin_password];
        for (n, a) in all.iter().enumerate() {
            assert_eq!(a.len(), 32);
            assert!(all[n + 1..].iter().all(|b| a != b), "{all:?}");
        }
        assert_eq!(
            runtime["userlist.txt"],
            format!(
                "\"shortener_app\" \"{runtime_password}\"\n\"pgbouncer_admin\" \"{admin_password}\"\n"
            )
        );
        assert_eq!(string_data(3)["api-key"].as_str().unwrap().len(), 40);
        let redis = string_data(4);
        let redis_password = redis["password"].as_str().unwrap();
        assert_eq!(redis_password.len(), 32);
        assert_ne!(redis_password, password);
        assert_eq!(
            redis["auth.conf"],
            format!("requirepass {redis_password}\n")
        );

        assert_eq!(recorded.applied.len(), 28);
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
        assert!(second.deleted.is_empty(), "{:?}", second.deleted);
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
        s.spec.app.config.cache_ttl_seconds = Some(60);
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
        assert_eq!(last, crate::backoff::MAX);
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

    fn with_snippet(mut s: Shortener) -> Shortener {
        s.spec.ingress.annotations.insert(
            "nginx.ingress.kubernetes.io/server-snippet".into(),
            "location /x { return 200; }".into(),
        );
        s.metadata.generation = Some(2);
        s
    }

    #[tokio::test]
    async fn snippet_annotations_are_refused_before_any_write() {
        let s = with_snippet(reconciled_and_ready().await);
        let (result, recorded, _) = pass(&s, Scenario::Refused(s.clone())).await;
        assert_eq!(result.unwrap(), Action::await_change());
        assert!(recorded.applied.is_empty());
        assert_eq!(
            recorded.condition("Degraded"),
            ("True".into(), "SnippetAnnotationRefused".into())
        );
        let status = recorded.status.as_ref().unwrap();
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
        let message = &degraded.unwrap().message;
        assert!(message.contains("server-snippet"), "{message}");
        assert_eq!(recorded.event_reasons(), vec!["SnippetAnnotationRefused"]);
    }

    #[tokio::test]
    async fn snippet_annotations_are_applied_when_the_operator_allows_them() {
        let s = with_snippet(reconciled_and_ready().await);
        let (ctx, server) = Context::test_allowing_snippets(true);
        let script = server.run(Scenario::ExistingStack(s.clone(), Workloads::Ready));
        let result = reconcile(Arc::new(s.clone()), ctx).await;
        let recorded = finish(script).await;
        result.unwrap();
        let ingress = recorded.applied("Ingress", "links");
        assert!(
            ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/server-snippet"]
                .is_string()
        );
        assert_eq!(
            recorded.condition("Degraded"),
            ("False".into(), "ReconcileSucceeded".into())
        );
    }

    /// The ConfigMap `links-config` someone else made was left alone, everything else
    /// applied, and the status says why.
    fn assert_left_alone(recorded: &Recorded) {
        assert!(
            recorded
                .applied
                .iter()
                .all(|v| v["kind"] != "ConfigMap" || v["metadata"]["name"] != "links-config"),
            "the foreign ConfigMap was applied over"
        );
        assert!(recorded.applied("Deployment", "links").is_object());
        assert_eq!(
            recorded.condition("Degraded"),
            ("True".into(), "ObjectNotOwned".into())
        );
    }

    #[tokio::test]
    async fn an_object_of_a_childs_name_made_by_someone_else_is_not_taken_over() {
        let s = reconciled_and_ready().await;
        let scenario = Scenario::ForeignObject(s.clone(), "ConfigMap", "links-config");
        let (result, recorded, _) = pass(&s, scenario).await;
        result.unwrap();
        assert_left_alone(&recorded);
        let status = recorded.status.as_ref().unwrap();
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
        let message = &degraded.unwrap().message;
        assert!(message.contains("ConfigMap links-config"), "{message}");
    }

    /// Every pass after the first: the watches have seen the children, so each apply goes
    /// out without a read first (the script fails on any request it does not expect).
    #[tokio::test]
    async fn children_the_watches_have_seen_are_applied_without_a_read() {
        let s = reconciled_and_ready().await;
        let (ctx, server) = Context::test();
        crate::fixtures::seen_by_the_watches(&ctx, &s, None);
        let script = server.run(Scenario::Watched(s.clone(), None));
        let result = reconcile(Arc::new(s.clone()), ctx.clone()).await;
        let recorded = finish(script).await;
        assert_eq!(result.unwrap(), Action::requeue(STEADY_REQUEUE));
        assert!(recorded.applied("Deployment", "links").is_object());
        assert!(
            recorded.status.is_none(),
            "unchanged status must not be written"
        );
    }

    /// The watches know whose an object is too: one of a child's name made by someone
    /// else is refused without a read, as after one.
    #[tokio::test]
    async fn a_watched_object_made_by_someone_else_is_not_taken_over() {
        let s = reconciled_and_ready().await;
        let (ctx, server) = Context::test();
        let foreign = Some(("ConfigMap", "links-config"));
        crate::fixtures::seen_by_the_watches(&ctx, &s, foreign);
        let script = server.run(Scenario::Watched(s.clone(), foreign));
        let result = reconcile(Arc::new(s.clone()), ctx.clone()).await;
        let recorded = finish(script).await;
        result.unwrap();
        assert_left_alone(&recorded);
    }

    #[tokio::test]
    async fn a_refused_resize_is_reported_and_the_pass_goes_on() {
        let mut spec = ShortenerSpec::default();
        let mut pg = crate::crd::PostgresSpec::default();
        pg.storage.size.0 = "5Gi".into();
        spec.database.postgres = Some(pg);
        let s = shortener(spec);
        let scenario = Scenario::StorageGrowthRefused(s.clone(), "1Gi");
        let (result, recorded, _) = pass(&s, scenario).await;
        // Not an error: the pass pruned (the script asserts every list) and wrote readiness.
        assert_eq!(result.unwrap(), Action::requeue(PROGRESS_REQUEUE));
        assert_eq!(
            recorded.condition("Degraded"),
            ("True".into(), "VolumeResizeRefused".into())
        );
        assert_eq!(
            recorded.condition("Ready"),
            ("True".into(), "AllComponentsReady".into())
        );
        let status = recorded.status.as_ref().unwrap();
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
        let message = &degraded.unwrap().message;
        assert!(message.contains("data-links-postgres-0"), "{message}");
        assert!(recorded.event_reasons().contains(&"Degraded"));
    }

    /// An Ingress carrying the instance's labels, owned by the Shortener with `owner_uid`.
    fn ingress(name: &str, owner_uid: Option<&str>) -> serde_json::Value {
        let s = shortener(ShortenerSpec::default());
        let instance = Instance::new(&s).unwrap();
        let mut meta = instance.meta(name, children::Component::App);
        meta.owner_references = owner_uid.map(|uid| {
            let mut owner = instance.owner.clone();
            owner.uid = uid.into();
            vec![owner]
        });
        serde_json::json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta })
    }

    #[tokio::test]
    async fn turning_the_ingress_off_deletes_the_owned_ingress_and_nothing_else() {
        let before = reconciled_and_ready().await;
        let mut after = before.clone();
        after.spec.ingress.enabled = Some(false);
        after.metadata.generation = Some(2);
        let foreign = vec![
            ingress("links-by-hand", None),
            ingress(
                "links-of-another",
                Some("5b0e7f4e-0000-4000-8000-000000000002"),
            ),
        ];
        let scenario = Scenario::SpecShrunk(Box::new(before), after.clone(), foreign);
        let (result, recorded, _) = pass(&after, scenario).await;
        assert_eq!(result.unwrap(), Action::requeue(STEADY_REQUEUE));
        assert_eq!(
            recorded.deleted,
            vec!["Ingress/links", "Service/links-unrouted"]
        );
        assert!(recorded.applied.iter().all(|v| v["kind"] != "Ingress"));
        assert_eq!(recorded.event_reasons(), vec!["Applied", "Pruned"]);
        assert_eq!(
            recorded.condition("Ready"),
            ("True".into(), "AllComponentsReady".into())
        );
    }

    #[tokio::test]
    async fn moving_to_an_external_redis_and_dropping_monitoring_prunes_their_objects() {
        let before = reconciled_and_ready().await;
        let mut after = before.clone();
        after.spec.redis.external = Some(crate::crd::ExternalSecretRef {
            secret_name: "cache".into(),
            key: "url".into(),
        });
        after.spec.monitoring.service_monitor = false;
        after.spec.monitoring.grafana_dashboard = false;
        after.metadata.generation = Some(2);
        let scenario = Scenario::SpecShrunk(Box::new(before), after.clone(), Vec::new());
        let (result, recorded, _) = pass(&after, scenario).await;
        result.unwrap();
        assert_eq!(
            recorded.deleted,
            // In prune order: the reverse of the order children are applied.
            vec![
                "ServiceMonitor/links",
                "NetworkPolicy/links-redis",
                "PodDisruptionBudget/links-redis",
                "Deployment/links-redis",
                "Service/links-redis",
                "ConfigMap/links-redis",
                "ConfigMap/links-dashboard",
            ]
        );
        // The PrometheusRule is still wanted; the PostgreSQL StatefulSet (and so its data) stays.
        assert!(recorded.applied("PrometheusRule", "links").is_object());
        assert!(
            recorded
                .applied("StatefulSet", "links-postgres")
                .is_object()
        );
    }

    #[tokio::test]
    async fn a_refused_delete_marks_the_shortener_degraded() {
        let before = reconciled_and_ready().await;
        let mut after = before.clone();
        after.spec.ingress.enabled = Some(false);
        after.metadata.generation = Some(2);
        let scenario = Scenario::DeleteForbidden(Box::new(before), after.clone());
        let (result, recorded, _) = pass(&after, scenario).await;
        let error = result.unwrap_err();
        assert!(
            matches!(&error, Error::Prune { key, .. } if key == "Ingress/links"),
            "{error}"
        );
        assert_eq!(error.metric_label(), "prune");
        assert_eq!(
            recorded.condition("Degraded"),
            ("True".into(), "PruneFailed".into())
        );
        assert_eq!(
            recorded.events,
            vec![("PruneFailed".to_string(), "Warning".to_string())]
        );
    }

    fn routed(mut s: Shortener) -> Shortener {
        s.spec.http_route = Some(crate::crd::HttpRouteSpec {
            parent_refs: vec![crate::crd::GatewayParentRef {
                name: "public".into(),
                namespace: Some("infra".into()),
                section_name: Some("https".into()),
                port: None,
            }],
            hostnames: vec!["sho.rt".into()],
            scheme: crate::crd::PublicScheme::Https,
            annotations: Default::default(),
        });
        s
    }

    /// `status.parents` of the route as a Gateway controller writes it.
    fn answered(accepted: (&str, &str, &str), resolved: &str) -> serde_json::Value {
        let (status, reason, message) = accepted;
        serde_json::json!([{
            "parentRef": { "group": "gateway.networking.k8s.io", "kind": "Gateway",
                           "namespace": "infra", "name": "public", "sectionName": "https" },
            "controllerName": "example.net/gateway-controller",
            "conditions": [
                { "type": "Accepted", "status": status, "reason": reason, "message": message,
                  "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z" },
                { "type": "ResolvedRefs", "status": resolved, "reason": "ResolvedRefs",
                  "message": "", "observedGeneration": 1,
                  "lastTransitionTime": "2026-01-01T00:00:00Z" },
            ],
        }])
    }

    #[tokio::test]
    async fn a_route_the_gateway_accepts_is_reported_and_replaces_the_ingress() {
        let s = routed(shortener(ShortenerSpec::default()));
        let parents = answered(("True", "Accepted", "accepted"), "True");
        let (result, recorded, _) = pass(&s, Scenario::RouteAnswered(s.clone(), parents)).await;
        assert_eq!(result.unwrap(), Action::requeue(STEADY_REQUEUE));
        let route = recorded.applied("HTTPRoute", "links");
        assert_eq!(route["spec"]["hostnames"], serde_json::json!(["sho.rt"]));
        assert!(recorded.applied.iter().all(|v| v["kind"] != "Ingress"));
        assert_eq!(
            recorded.condition("RouteAccepted"),
            ("True".into(), "Accepted".into())
        );
        assert_eq!(
            recorded.condition("Degraded"),
            ("False".into(), "ReconcileSucceeded".into())
        );
        let status = recorded.status.as_ref().unwrap();
        assert_eq!(status.url.as_deref(), Some("https://sho.rt"));
        let config = recorded.applied("ConfigMap", "links-config");
        assert_eq!(config["data"]["PUBLIC_BASE_URL"], "https://sho.rt");
    }

    #[tokio::test]
    async fn a_route_the_gateway_refuses_degrades_with_the_gateways_words() {
        let s = routed(shortener(ShortenerSpec::default()));
        let parents = answered(
            (
                "False",
                "NotAllowedByListeners",
                "namespace web is not allowed",
            ),
            "True",
        );
        let (result, recorded, _) = pass(&s, Scenario::RouteAnswered(s.clone(), parents)).await;
        assert_eq!(result.unwrap(), Action::requeue(PROGRESS_REQUEUE));
        assert_eq!(
            recorded.condition("RouteAccepted"),
            ("False".into(), "NotAllowedByListeners".into())
        );
        assert_eq!(
            recorded.condition("Degraded"),
            ("True".into(), "RouteNotAccepted".into())
        );
        let status = recorded.status.as_ref().unwrap();
        let route = status
            .conditions
            .iter()
            .find(|c| c.type_ == "RouteAccepted");
        let message = &route.unwrap().message;
        assert!(
            message.contains("Gateway infra/public listener https")
                && message.contains("namespace web is not allowed"),
            "{message}"
        );
        assert!(recorded.event_reasons().contains(&"Degraded"));
    }

    #[tokio::test]
    async fn a_route_without_the_gateway_api_is_reported_and_the_rest_applied() {
        let s = routed(shortener(ShortenerSpec::default()));
        let (result, recorded, _) = pass(&s, Scenario::GatewayApiMissing(s.clone())).await;
        assert_eq!(result.unwrap(), Action::requeue(PROGRESS_REQUEUE));
        assert!(
            recorded
                .applied
                .iter()
                .all(|v| v["kind"] != "HTTPRoute" && v["kind"] != "Ingress")
        );
        assert!(recorded.applied("Deployment", "links").is_object());
        assert_eq!(
            recorded.condition("RouteAccepted"),
            ("False".into(), "GatewayAPINotInstalled".into())
        );
        assert_eq!(
            recorded.condition("Degraded"),
            ("True".into(), "GatewayAPINotInstalled".into())
        );
        assert_eq!(
            recorded.condition("Ready"),
            ("True".into(), "AllComponentsReady".into())
        );
    }

    #[tokio::test]
    async fn switching_to_a_route_prunes_the_ingress_and_back() {
        let before = reconciled_and_ready().await;
        let mut after = routed(before.clone());
        after.metadata.generation = Some(2);
        let scenario = Scenario::SpecShrunk(Box::new(before.clone()), after.clone(), Vec::new());
        let (result, recorded, _) = pass(&after, scenario).await;
        result.unwrap();
        assert_eq!(
            recorded.deleted,
            vec!["Ingress/links", "Service/links-unrouted"]
        );
        assert!(recorded.applied("HTTPRoute", "links").is_object());
        // No Gateway has answered yet.
        assert_eq!(
            recorded.condition("RouteAccepted"),
            ("Unknown".into(), "Pending".into())
        );

        let mut back = before.clone();
        back.metadata.generation = Some(3);
        let scenario = Scenario::SpecShrunk(Box::new(after), back.clone(), Vec::new());
        let (result, recorded, _) = pass(&back, scenario).await;
        result.unwrap();
        assert_eq!(recorded.deleted, vec!["HTTPRoute/links"]);
        assert!(recorded.applied("Ingress", "links").is_object());
        let status = recorded.status.unwrap();
        assert!(!status.conditions.iter().any(|c| c.type_ == "RouteAccepted"));
    }
}
