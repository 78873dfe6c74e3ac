//! Pruning: children the spec no longer wants are deleted; objects the operator did not
//! create survive, even when they carry the same labels.

use std::collections::BTreeSet;

use kube::ResourceExt;
use kube::api::{DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::changes::ready_minimal;
use crate::cluster::{Result, TIMEOUT, api_of, eventually, get_opt, objects_labelled};
use crate::stack::{managed_by_operator, patch_spec, rendered_children, shortener, wait_ready};
use crate::{Ctx, ensure};

/// The labels the operator puts on its children, on an object it did not create.
async fn lookalike(
    ctx: &Ctx,
    kind: &str,
    name: &str,
    component: &str,
    body: Value,
) -> Result<String> {
    let api_version = crate::cluster::CHILD_KINDS
        .iter()
        .find(|(_, k, _)| *k == kind)
        .map(|(v, _, _)| *v)
        .ok_or("unknown kind")?;
    let mut object = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": ctx.ns,
            "labels": {
                "app.kubernetes.io/name": "shortener",
                "app.kubernetes.io/instance": "links",
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/managed-by": "shortener-operator",
                "app.kubernetes.io/part-of": "shortener",
            },
        },
    });
    if let (Some(target), Some(extra)) = (object.as_object_mut(), body.as_object()) {
        for (key, value) in extra {
            target.insert(key.clone(), value.clone());
        }
    }
    let object: DynamicObject = serde_json::from_value(object)?;
    let created = api_of(&ctx.client, &ctx.ns, kind)?
        .create(&PostParams::default(), &object)
        .await?;
    created.uid().ok_or_else(|| "created without uid".into())
}

/// Waits until the instance's labelled objects are exactly what `render` gives for the stored
/// spec, plus the look-alikes.
async fn wait_exactly(ctx: &Ctx, lookalikes: &BTreeSet<String>, step: &str) -> Result {
    let client = &ctx.client;
    let ns = ctx.ns.as_str();
    wait_ready(client, ns, "links").await?;
    let stored = shortener(client, ns, "links").await?;
    let mut expected = rendered_children(&serde_yaml::to_string(&stored)?, &ctx.suite.work)?;
    expected.extend(lookalikes.iter().cloned());
    let expected = &expected;
    let selector = managed_by_operator("links");
    let selector = selector.as_str();
    eventually(
        &format!("{step}: exactly the wanted children"),
        TIMEOUT,
        || async move {
            let found = objects_labelled(client, ns, selector)
                .await
                .map_err(|e| e.to_string())?;
            if &found == expected {
                Ok(())
            } else {
                Err(format!(
                    "still there {:?}, missing {:?}",
                    found.difference(expected).collect::<Vec<_>>(),
                    expected.difference(&found).collect::<Vec<_>>()
                ))
            }
        },
    )
    .await
}

pub async fn disabled_components_are_pruned_and_lookalikes_survive(ctx: &Ctx) -> Result {
    ready_minimal(ctx).await?;
    let ns = ctx.ns.as_str();
    let mut uids = Vec::new();
    uids.push(("Ingress", "links-lookalike", lookalike(ctx, "Ingress", "links-lookalike", "app", json!({
        "spec": { "defaultBackend": { "service": { "name": "links", "port": { "number": 80 } } } },
    })).await?));
    uids.push((
        "ConfigMap",
        "links-redis-lookalike",
        lookalike(
            ctx,
            "ConfigMap",
            "links-redis-lookalike",
            "redis",
            json!({
                "data": { "redis.conf": "maxmemory 1mb" },
            }),
        )
        .await?,
    ));
    uids.push((
        "ServiceMonitor",
        "links-lookalike",
        lookalike(
            ctx,
            "ServiceMonitor",
            "links-lookalike",
            "monitoring",
            json!({
                "spec": { "endpoints": [] },
            }),
        )
        .await?,
    ));
    let lookalikes: BTreeSet<String> = uids.iter().map(|(k, n, _)| format!("{k}/{n}")).collect();
    wait_exactly(ctx, &lookalikes, "before").await?;

    patch_spec(ns, "links", json!({ "ingress": { "enabled": false } }))?;
    wait_exactly(ctx, &lookalikes, "ingress disabled").await?;
    ensure!(
        get_opt(&ctx.client, ns, "Ingress", "links")
            .await?
            .is_none(),
        "Ingress links not pruned"
    );

    crate::cluster::kubectl(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "links-cache",
        "--from-literal=url=redis://cache.example.com:6379",
    ])?;
    patch_spec(
        ns,
        "links",
        json!({ "redis": { "external": { "secretName": "links-cache" } } }),
    )?;
    // The generated Redis password stays (credentials are created once and removed only with
    // the Shortener), so a return to the embedded Redis keeps it.
    let mut kept = lookalikes.clone();
    kept.insert("Secret/links-redis-auth".to_string());
    wait_exactly(ctx, &kept, "embedded Redis replaced by an external one").await?;
    for (kind, name) in [
        ("Deployment", "links-redis"),
        ("Service", "links-redis"),
        ("ConfigMap", "links-redis"),
    ] {
        ensure!(
            get_opt(&ctx.client, ns, kind, name).await?.is_none(),
            "{kind}/{name} not pruned"
        );
    }

    patch_spec(
        ns,
        "links",
        json!({ "monitoring": { "serviceMonitor": false, "prometheusRule": false, "grafanaDashboard": false } }),
    )?;
    wait_exactly(ctx, &kept, "monitoring off").await?;
    for (kind, name) in [
        ("ServiceMonitor", "links"),
        ("PrometheusRule", "links"),
        ("ConfigMap", "links-dashboard"),
    ] {
        ensure!(
            get_opt(&ctx.client, ns, kind, name).await?.is_none(),
            "{kind}/{name} not pruned"
        );
    }

    for (kind, name, uid) in &uids {
        let object = get_opt(&ctx.client, ns, kind, name).await?;
        ensure!(
            object.as_ref().and_then(|o| o.uid()).as_deref() == Some(uid.as_str()),
            "{kind}/{name}, not created by the operator, was deleted or replaced"
        );
    }
    Ok(())
}
