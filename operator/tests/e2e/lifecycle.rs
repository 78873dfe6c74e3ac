//! Pause and resume; deleting the Shortener.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
use kube::Api;
use serde_json::json;

use crate::changes::ready_minimal;
use crate::cluster::{Result, TIMEOUT, at, delete, eventually, get_opt, kubectl, objects_labelled};
use crate::operator::metric_with;
use crate::stack::{
    apply, managed_by_operator, patch_spec, provide_volume, wait_condition, wait_deployment,
    wait_ready,
};
use crate::{Ctx, ensure};

/// Reconciles of `ns/links` the leading operator has finished so far.
async fn reconciles(ctx: &Ctx) -> Result<f64> {
    let operators = ctx.suite.operators.lock().await;
    let mut total = 0.0;
    for process in operators.iter() {
        if let Ok(metrics) = process.metrics().await {
            total += metric_with(
                &metrics,
                "shortener_operator_reconciliations_total",
                &[&format!("namespace=\"{}\"", ctx.ns), "name=\"links\""],
            );
        }
    }
    Ok(total)
}

/// Returns once a reconcile has started and finished after this call: two more completions,
/// since the controller runs one reconcile per object at a time and the first one may have
/// started earlier. Each wait is preceded by an annotation change, which always triggers one.
async fn reconciled_since_now(ctx: &Ctx) -> Result {
    let start = reconciles(ctx).await?;
    for round in 1..=2 {
        kubectl(&[
            "-n",
            &ctx.ns,
            "annotate",
            "--overwrite",
            "shortener/links",
            &format!("e2e/poke=p{round}-{start}"),
        ])?;
        eventually(
            &format!("reconcile {round} after the edits"),
            TIMEOUT,
            || async move {
                let now = reconciles(ctx).await.map_err(|e| e.to_string())?;
                if now >= start + f64::from(round) {
                    Ok(())
                } else {
                    Err(format!("{now} reconciles, from {start}"))
                }
            },
        )
        .await?;
    }
    Ok(())
}

pub async fn pause_leaves_children_alone_until_resumed(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let client = &ctx.client;
    let ns = ctx.ns.as_str();
    patch_spec(ns, "links", json!({ "paused": true }))?;
    wait_condition(client, ns, "links", "Paused", "True").await?;

    delete(client, ns, "Service", "links").await?;
    kubectl(&["-n", ns, "scale", "deployment/links", "--replicas=1"])?;
    patch_spec(
        ns,
        "links",
        json!({ "app": { "config": { "cacheTtlSeconds": 900 } } }),
    )?;
    reconciled_since_now(ctx).await?;
    wait_condition(client, ns, "links", "Paused", "True").await?;
    ensure!(
        get_opt(client, ns, "Service", "links").await?.is_none(),
        "paused, yet Service links was re-created"
    );
    let deployment = get_opt(client, ns, "Deployment", "links")
        .await?
        .ok_or("no Deployment")?;
    ensure!(
        at(&deployment.data, "/spec/replicas") == 1,
        "paused, yet the Deployment was scaled back"
    );
    let config = get_opt(client, ns, "ConfigMap", "links-config")
        .await?
        .ok_or("no ConfigMap")?;
    ensure!(
        at(&config.data, "/data/CACHE_TTL_SECONDS") == "300",
        "paused, yet the ConfigMap changed"
    );

    patch_spec(ns, "links", json!({ "paused": false }))?;
    wait_condition(client, ns, "links", "Paused", "False").await?;
    wait_deployment(client, ns, "links", 3).await?;
    eventually("Service links back after resume", TIMEOUT, || async move {
        get_opt(client, ns, "Service", "links")
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or("absent".to_string())
    })
    .await?;
    let config = get_opt(client, ns, "ConfigMap", "links-config")
        .await?
        .ok_or("no ConfigMap")?;
    ensure!(
        at(&config.data, "/data/CACHE_TTL_SECONDS") == "900",
        "the change made while paused was not applied"
    );
    wait_ready(client, ns, "links").await?;
    Ok(())
}

/// The garbage collector removes every child through its owner reference; the PostgreSQL
/// PVC has no owner (the StatefulSet's `whenDeleted: Retain`) and stays, with its volume.
pub async fn deleting_the_shortener_collects_children_and_keeps_the_volume(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let client = &ctx.client;
    let ns = ctx.ns.as_str();
    kubectl(&[
        "-n",
        ns,
        "delete",
        "shortener",
        "links",
        "--wait=true",
        "--timeout=60s",
    ])?;
    let kept_secret = client_secret(client, ns, "links-db").await?;
    let selector = managed_by_operator("links");
    let selector = selector.as_str();
    // Every child but the superuser's Secret, which stays with the volume.
    eventually("every child garbage-collected", TIMEOUT, || async move {
        let mut left = objects_labelled(client, ns, selector)
            .await
            .map_err(|e| e.to_string())?;
        left.remove("Secret/links-db");
        let pods = kubectl(&[
            "-n",
            ns,
            "get",
            "pods,replicasets",
            "-l",
            "app.kubernetes.io/instance=links",
            "-o",
            "name",
        ])
        .map_err(|e| e.to_string())?;
        if left.is_empty() && pods.trim().is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?} {pods}"))
        }
    })
    .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = claims.get("data-links-postgres-0").await?;
    // Not necessarily the suite's volume: where a provisioner exists (kind), it binds its own.
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .ok_or("the retained claim has no volume")?;
    ensure!(
        claim
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
            && claim.status.and_then(|s| s.phase).as_deref() == Some("Bound"),
        "the PostgreSQL claim should stay, unowned and Bound"
    );
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume = volumes.get(&volume_name).await?;
    ensure!(
        volume.status.and_then(|s| s.phase).as_deref() == Some("Bound"),
        "the volume should stay Bound to the retained claim"
    );
    let secret = client_secret(client, ns, "links-db").await?;
    ensure!(
        secret.metadata.uid == kept_secret.metadata.uid
            && secret
                .metadata
                .owner_references
                .unwrap_or_default()
                .is_empty(),
        "the superuser's Secret should stay, unowned, with the volume"
    );

    // A Shortener of the same name made again on the kept volume takes that Secret as it is
    // (the database there was initialised with its password): Ready, nothing refused.
    apply(&format!(
        "apiVersion: shortener.dev/v1alpha1\nkind: Shortener\nmetadata: {{name: links, namespace: {ns}}}\nspec: {{}}\n"
    ))?;
    let shortener = wait_ready(client, ns, "links").await?;
    let again = client_secret(client, ns, "links-db").await?;
    ensure!(
        again.metadata.uid == kept_secret.metadata.uid && again.data == kept_secret.data,
        "the Shortener made again should reuse the kept superuser Secret unchanged"
    );
    let conditions = at(&shortener.data, "/status/conditions").to_string();
    ensure!(
        !conditions.contains("ObjectNotOwned"),
        "the kept Secret was refused: {conditions}"
    );

    // With `deleteOnRemoval: true` the StatefulSet owns its claim (`whenDeleted: Delete`),
    // so the garbage collector takes the claim, and the data, with the Shortener.
    provide_volume(client, ns, "data-scratch-postgres-0", "1Gi", None).await?;
    apply(&format!(
        "apiVersion: shortener.dev/v1alpha1\nkind: Shortener\nmetadata: {{name: scratch, namespace: {ns}}}\nspec:\n  database:\n    postgres:\n      storage: {{deleteOnRemoval: true}}\n"
    ))?;
    wait_ready(client, ns, "scratch").await?;
    claims.get("data-scratch-postgres-0").await?;
    kubectl(&[
        "-n",
        ns,
        "delete",
        "shortener",
        "scratch",
        "--wait=true",
        "--timeout=60s",
    ])?;
    let claims = &claims;
    eventually(
        "the scratch claim deleted with its Shortener",
        TIMEOUT,
        || async move {
            match claims
                .get_opt("data-scratch-postgres-0")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(claim) => Err(format!(
                    "still there, owners {:?}",
                    claim.metadata.owner_references
                )),
            }
        },
    )
    .await?;
    ensure!(
        claims.get_opt("data-links-postgres-0").await?.is_some(),
        "deleting one Shortener removed another's retained claim"
    );
    // Its superuser's Secret went with it: nothing outlives a volume deleted on removal.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    ensure!(
        secrets.get_opt("scratch-db").await?.is_none(),
        "scratch-db outlived a Shortener whose volume was deleted with it"
    );
    Ok(())
}

async fn client_secret(client: &kube::Client, ns: &str, name: &str) -> Result<Secret> {
    Ok(Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await?)
}
