//! Spec changes: scaling, a setting that rolls the pods, and what the CEL rules refuse.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::cluster::{Result, TIMEOUT, at, eventually, get_opt, kubectl, kubectl_refused};
use crate::install::printed_shorteners;
use crate::stack::{
    apply, example, patch_spec, provide_volume, shortener, wait_deployment, wait_gone, wait_ready,
};
use crate::{Ctx, ensure};

/// The minimal example, Ready, in the test's namespace.
pub async fn ready_minimal(ctx: &Ctx) -> Result {
    provide_volume(&ctx.client, &ctx.ns, "data-links-postgres-0", "1Gi", None).await?;
    apply(&example(&ctx.suite.root, "minimal.yaml", &ctx.ns)?)?;
    wait_ready(&ctx.client, &ctx.ns, "links").await?;
    Ok(())
}

/// Status replicas and the scale subresource agree with the Deployment.
async fn wait_scaled(ctx: &Ctx, replicas: i64) -> Result {
    wait_deployment(&ctx.client, &ctx.ns, "links", replicas).await?;
    let ready = wait_ready(&ctx.client, &ctx.ns, "links").await?;
    let client = &ctx.client;
    let ns = ctx.ns.as_str();
    eventually(
        &format!("status.readyReplicas {replicas}"),
        TIMEOUT,
        || async move {
            let s = shortener(client, ns, "links")
                .await
                .map_err(|e| e.to_string())?;
            let status = at(&s.data, "/status");
            if status["readyReplicas"] == replicas && status["replicas"] == replicas {
                Ok(())
            } else {
                Err(status.to_string())
            }
        },
    )
    .await?;
    let scale: Value = serde_json::from_str(&kubectl(&[
        "-n",
        &ctx.ns,
        "get",
        "shortener",
        "links",
        "--subresource=scale",
        "-o",
        "json",
    ])?)?;
    ensure!(
        scale["spec"]["replicas"] == replicas && scale["status"]["replicas"] == replicas,
        "scale subresource: {scale}"
    );
    ensure!(
        at(&ready.data, "/status/selector")
            .as_str()
            .is_some_and(|s| !s.is_empty())
            && scale["status"]["selector"] == *at(&ready.data, "/status/selector"),
        "scale selector {} vs status.selector {}",
        scale["status"]["selector"],
        at(&ready.data, "/status/selector")
    );
    let rows = printed_shorteners(&ctx.ns)?;
    ensure!(
        rows.first()
            .and_then(|r| r.get("REPLICAS"))
            .map(String::as_str)
            == Some(replicas.to_string().as_str()),
        "kubectl get shorteners: {rows:?}"
    );
    Ok(())
}

pub async fn scale_through_the_subresource_and_the_spec(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    wait_scaled(ctx, 3).await?;
    kubectl(&["-n", &ctx.ns, "scale", "shortener/links", "--replicas=5"])?;
    let s = shortener(&ctx.client, &ctx.ns, "links").await?;
    ensure!(
        at(&s.data, "/spec/app/replicas") == 5,
        "kubectl scale did not set spec.app.replicas: {}",
        at(&s.data, "/spec/app")
    );
    wait_scaled(ctx, 5).await?;
    patch_spec(&ctx.ns, "links", json!({ "app": { "replicas": 4 } }))?;
    wait_scaled(ctx, 4).await
}

fn template_hash(deployment: &Value) -> String {
    at(
        deployment,
        "/spec/template/metadata/annotations/shortener.dev~1config-hash",
    )
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn replica_sets(ns: &str) -> Result<BTreeSet<String>> {
    Ok(kubectl(&[
        "-n",
        ns,
        "get",
        "replicasets",
        "-l",
        "app.kubernetes.io/instance=links,app.kubernetes.io/component=app",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])?
    .split_whitespace()
    .map(str::to_string)
    .collect())
}

pub async fn app_setting_change_rolls_the_deployment(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let before = wait_deployment(&ctx.client, &ctx.ns, "links", 3).await?;
    let hash_before = template_hash(&before);
    ensure!(
        !hash_before.is_empty(),
        "no config-hash annotation on the pod template"
    );
    let sets_before = replica_sets(&ctx.ns)?;

    patch_spec(
        &ctx.ns,
        "links",
        json!({ "app": { "config": { "cacheTtlSeconds": 600 } } }),
    )?;
    let client = &ctx.client;
    let ns = ctx.ns.as_str();
    eventually(
        "CACHE_TTL_SECONDS=600 in links-config",
        TIMEOUT,
        || async move {
            let cm = get_opt(client, ns, "ConfigMap", "links-config")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no links-config")?;
            match at(&cm.data, "/data/CACHE_TTL_SECONDS").as_str() {
                Some("600") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let hash_before = &hash_before;
    eventually(
        "a new config hash on the pod template",
        TIMEOUT,
        || async move {
            let d = get_opt(client, ns, "Deployment", "links")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no Deployment")?;
            let hash = template_hash(&serde_json::to_value(&d).map_err(|e| e.to_string())?);
            if &hash != hash_before && !hash.is_empty() {
                Ok(())
            } else {
                Err(hash)
            }
        },
    )
    .await?;
    wait_deployment(&ctx.client, &ctx.ns, "links", 3).await?;
    let sets_after = replica_sets(&ctx.ns)?;
    ensure!(
        sets_after.difference(&sets_before).count() == 1,
        "expected one new ReplicaSet: before {sets_before:?}, after {sets_after:?}"
    );
    wait_ready(&ctx.client, &ctx.ns, "links").await?;
    Ok(())
}

/// Each patch must be refused by the API server with the CRD's own message.
pub fn refused(ns: &str, name: &str, spec: Value, message: &str) -> Result {
    let patch = json!({ "spec": spec }).to_string();
    let stderr = kubectl_refused(&[
        "-n",
        ns,
        "patch",
        "shortener",
        name,
        "--type=merge",
        "-p",
        &patch,
    ])?;
    ensure!(
        stderr.contains(message) && stderr.contains("Invalid value"),
        "patch {patch}: expected the API server to answer {message:?}, got: {stderr}"
    );
    Ok(())
}

pub async fn cel_rules_reject_shrink_and_immutable_changes(ctx: &Ctx) -> Result {
    let ns = ctx.ns.as_str();
    // Explicit size and class (the full example).
    apply(&example(&ctx.suite.root, "full.yaml", ns)?)?;
    let storage = |storage: Value| json!({ "database": { "postgres": { "storage": storage } } });
    refused(
        ns,
        "links",
        storage(json!({ "size": "1Gi" })),
        "storage.size may grow but not shrink",
    )?;
    refused(
        ns,
        "links",
        storage(json!({ "storageClassName": "fast" })),
        "storage.storageClassName is immutable",
    )?;
    refused(
        ns,
        "links",
        json!({ "database": { "postgres": { "version": "16" } } }),
        "postgres.version is immutable",
    )?;
    refused(
        ns,
        "links",
        json!({ "database": { "postgres": null, "external": { "secretName": "db" } } }),
        "switching between the embedded, a CloudNativePG and an external database is not supported",
    )?;
    // Growing is allowed.
    patch_spec(ns, "links", storage(json!({ "size": "3Gi" })))?;

    // Defaults count too: `spec: {}` means 1Gi of the default class, so 500Mi is a shrink.
    let mut minimal: serde_yaml::Value =
        serde_yaml::from_str(&example(&ctx.suite.root, "minimal.yaml", ns)?)?;
    minimal["metadata"]["name"] = "defaults".into();
    apply(&serde_yaml::to_string(&minimal)?)?;
    refused(
        ns,
        "defaults",
        storage(json!({ "size": "500Mi" })),
        "storage.size may grow but not shrink",
    )?;
    refused(
        ns,
        "defaults",
        storage(json!({ "storageClassName": "fast" })),
        "storage.storageClassName is immutable",
    )?;
    // Redis's maxmemory against the default memory limit (what the operator gives the pod).
    refused(
        ns,
        "defaults",
        json!({ "redis": { "maxMemory": "1gb" } }),
        "redis.maxMemory may be at most 80%",
    )?;
    patch_spec(ns, "defaults", json!({ "redis": { "maxMemory": "64mb" } }))?;

    // Both at once is refused at creation.
    let both = json!({
        "apiVersion": "shortener.dev/v1alpha1", "kind": "Shortener",
        "metadata": { "name": "both", "namespace": ns },
        "spec": { "database": { "postgres": {}, "external": { "secretName": "db" } } },
    });
    let out = crate::cluster::kubectl_stdin(&["apply", "-f", "-"], &both.to_string())?;
    ensure!(
        !out.success
            && out.stderr.contains(
                "set at most one of database.postgres, database.cloudNativePG and database.external"
            ),
        "a Shortener with both databases: {}{}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// kwok has no volume provisioner, so the suite's volumes are static and cannot be expanded:
/// the API server refuses the claim's resize. The operator must say so in the status (Degraded,
/// naming the claim) and still finish the pass: the Ingress turned off in the same change is
/// pruned and readiness is reported for the new generation.
pub async fn volume_growth_the_cluster_refuses_is_reported(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    ensure!(
        get_opt(&ctx.client, &ctx.ns, "Ingress", "links")
            .await?
            .is_some(),
        "the minimal example has an Ingress"
    );
    patch_spec(
        &ctx.ns,
        "links",
        json!({
            "database": { "postgres": { "storage": { "size": "2Gi" } } },
            "ingress": { "enabled": false },
        }),
    )?;
    let degraded =
        crate::stack::wait_condition(&ctx.client, &ctx.ns, "links", "Degraded", "True").await?;
    let condition = at(&degraded.data, "/status/conditions")
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        condition["reason"] == "VolumeResizeRefused"
            && condition["message"]
                .as_str()
                .is_some_and(|m| m.contains("data-links-postgres-0")),
        "Degraded does not name the claim: {condition}"
    );
    // The rest of the pass happened: readiness for this generation, and the pruning.
    let ready = wait_ready(&ctx.client, &ctx.ns, "links").await?;
    ensure!(
        at(&ready.data, "/status/observedGeneration").as_i64() == ready.metadata.generation,
        "status.observedGeneration lags: {}",
        at(&ready.data, "/status")
    );
    wait_gone(&ctx.client, &ctx.ns, "Ingress", "links").await
}
