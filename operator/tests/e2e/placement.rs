//! Pod options (scheduling, pull secrets, labels, annotations) and autoscaling, on the real
//! API server: what its admission makes of them, and what the CEL rules refuse.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::changes::{ready_minimal, refused};
use crate::cluster::{Result, TIMEOUT, at, eventually, get_opt};
use crate::stack::{patch_spec, wait_deployment, wait_gone, wait_ready};
use crate::{Ctx, ensure};

const APP_PODS: &str = "app.kubernetes.io/instance=links,app.kubernetes.io/component=app";

async fn app_pods(ctx: &Ctx) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.ns);
    Ok(api
        .list(&ListParams::default().labels(APP_PODS))
        .await?
        .items)
}

pub async fn pod_options_reach_the_pods_and_the_cel_rules_guard_them(ctx: &Ctx) -> Result {
    let ns = ctx.ns.as_str();
    ready_minimal(ctx).await?;
    // Refused before anything is stored, with the CRD's own messages.
    let refusals = [
        (
            json!({ "pods": { "labels": { "app.kubernetes.io/name": "other" } } }),
            "labels may not set the operator's own keys",
        ),
        (
            json!({ "app": { "pods": { "annotations": { "shortener.dev/config-hash": "x" } } } }),
            "annotations under shortener.dev/ are the operator's",
        ),
        (
            json!({ "redis": { "pods": { "tolerations": [
                { "key": "dedicated", "operator": "Exists", "value": "edge" }
            ] } } }),
            "a toleration with operator Exists has no value",
        ),
        (
            json!({ "pods": { "topologySpreadConstraints": [
                { "maxSkew": 0, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule" }
            ] } }),
            "maxSkew is at least 1",
        ),
    ];
    for (spec, message) in refusals {
        refused(ns, "links", spec, message)?;
    }

    // A PriorityClass of the suite's (cluster-scoped), so the API server's priority admission
    // has something real to resolve.
    let classes: Api<PriorityClass> = Api::all(ctx.client.clone());
    let class = format!("{ns}-links");
    let priority: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": { "name": class, "labels": { crate::SUITE_LABEL: ns } },
        "value": 1000,
    }))?;
    classes.create(&PostParams::default(), &priority).await?;
    let outcome = pod_options_reach_the_pods(ctx, &class).await;
    classes.delete(&class, &DeleteParams::default()).await?;
    outcome
}

async fn pod_options_reach_the_pods(ctx: &Ctx, class: &str) -> Result {
    let ns = ctx.ns.as_str();
    patch_spec(
        ns,
        "links",
        json!({
            "pods": {
                "labels": { "team": "platform" },
                "priorityClassName": class,
                "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "links", "effect": "NoSchedule" }],
            },
            "app": { "pods": {
                "labels": { "tier": "edge" },
                "annotations": { "example.com/owner": "sre" },
            } },
        }),
    )?;
    let client = &ctx.client;
    eventually(
        "three app pods with the Shortener's pod options, admitted",
        TIMEOUT,
        || async move {
            let pods = app_pods(ctx).await.map_err(|e| e.to_string())?;
            let fitted = |pod: &Pod| {
                let labels = pod.labels();
                let spec = pod.spec.as_ref();
                labels.get("team").map(String::as_str) == Some("platform")
                    && labels.get("tier").map(String::as_str) == Some("edge")
                    && pod.annotations().get("example.com/owner").map(String::as_str)
                        == Some("sre")
                    && spec.and_then(|s| s.priority_class_name.as_deref()) == Some(class)
                    // Resolved by the API server's priority admission.
                    && spec.and_then(|s| s.priority) == Some(1000)
                    && spec
                        .and_then(|s| s.tolerations.as_ref())
                        .is_some_and(|t| t.iter().any(|t| t.key.as_deref() == Some("dedicated")))
                    && pod.metadata.deletion_timestamp.is_none()
            };
            let running = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none());
            let (fit, other): (Vec<&Pod>, Vec<&Pod>) = running.partition(|p| fitted(p));
            if fit.len() == 3 && other.is_empty() {
                Ok(())
            } else {
                Err(format!("{} fitted, {} not yet", fit.len(), other.len()))
            }
        },
    )
    .await?;
    // The Shortener-wide options reach the other components too (Redis here); the app's own
    // do not.
    let redis = get_opt(client, ns, "Deployment", "links-redis")
        .await?
        .ok_or("no links-redis Deployment")?;
    let template = at(&redis.data, "/spec/template");
    ensure!(
        at(template, "/metadata/labels/team") == "platform"
            && at(template, "/metadata/labels/tier").is_null()
            && at(template, "/spec/priorityClassName") == class,
        "links-redis pod template: {template}"
    );
    wait_ready(client, ns, "links").await?;
    Ok(())
}

/// The managers that own the app Deployment's `spec.replicas`.
fn replica_owners(deployment: &Value) -> BTreeSet<String> {
    at(deployment, "/metadata/managedFields")
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| !at(entry, "/fieldsV1/f:spec/f:replicas").is_null())
        .filter_map(|entry| entry["manager"].as_str().map(str::to_string))
        .collect()
}

pub async fn autoscaling_takes_over_the_replica_count_without_a_reset(ctx: &Ctx) -> Result {
    let ns = ctx.ns.as_str();
    ready_minimal(ctx).await?;
    refused(
        ns,
        "links",
        json!({ "app": { "autoscaling": { "minReplicas": 5, "maxReplicas": 2 } } }),
        "autoscaling.minReplicas must not exceed maxReplicas",
    )?;
    refused(
        ns,
        "links",
        json!({ "app": {
            "autoscaling": { "maxReplicas": 4 },
            "resources": { "requests": { "memory": "64Mi" } },
        } }),
        "resources.requests.cpu must be set",
    )?;

    let client = &ctx.client;
    wait_deployment(client, ns, "links", 3).await?;
    let before: BTreeSet<String> = app_pods(ctx).await?.iter().map(|p| p.name_any()).collect();

    // Between the bounds: the autoscaler (without a metrics API here) keeps the count, and
    // the switch must not reset it to 1 on the way (which would replace the pods).
    patch_spec(
        ns,
        "links",
        json!({ "app": { "autoscaling": { "minReplicas": 2, "maxReplicas": 5 } } }),
    )?;
    eventually(
        "the autoscaler's HorizontalPodAutoscaler and the operator's share of replicas released",
        TIMEOUT,
        || async move {
            let hpa = get_opt(client, ns, "HorizontalPodAutoscaler", "links")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no HorizontalPodAutoscaler yet")?;
            if at(&hpa.data, "/spec/scaleTargetRef/name") != "links" {
                return Err(format!("{}", at(&hpa.data, "/spec")));
            }
            let d = get_opt(client, ns, "Deployment", "links")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no Deployment")?;
            let owners = replica_owners(&serde_json::to_value(&d).map_err(|e| e.to_string())?);
            if owners.contains("shortener-operator") {
                Err(format!("replicas still owned by {owners:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await?;
    // Long enough for a reset to have reached the pods (the deployment controller acts in
    // well under a second here).
    tokio::time::sleep(Duration::from_secs(5)).await;
    wait_deployment(client, ns, "links", 3).await?;
    let after: BTreeSet<String> = app_pods(ctx).await?.iter().map(|p| p.name_any()).collect();
    ensure!(
        before == after,
        "the app's pods were replaced while the autoscaler took over: before {before:?}, after {after:?}"
    );

    // The autoscaler owns the count now: a higher minimum scales the app up, and the
    // operator's passes (one per change of the Deployment) leave it there.
    patch_spec(
        ns,
        "links",
        json!({ "app": { "autoscaling": { "minReplicas": 4 } } }),
    )?;
    wait_deployment(client, ns, "links", 4).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_deployment(client, ns, "links", 4).await?;

    // Autoscaling off: the autoscaler is pruned and `replicas` applies again.
    patch_spec(ns, "links", json!({ "app": { "autoscaling": null } }))?;
    wait_gone(client, ns, "HorizontalPodAutoscaler", "links").await?;
    wait_deployment(client, ns, "links", 3).await?;
    wait_ready(client, ns, "links").await?;
    Ok(())
}
