//! A Shortener and its children as the API server reports them.

use std::collections::BTreeSet;
use std::path::Path;

use kube::api::{Api, DynamicObject, PostParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::{
    Result, TIMEOUT, api_warnings, at, eventually, get_opt, kubectl, kubectl_stdin,
    objects_labelled, shortener_resource,
};
use crate::ensure;

/// Label selector of everything the operator manages for instance `name`.
pub fn managed_by_operator(name: &str) -> String {
    format!("app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=shortener-operator")
}

/// An example from `manifests/examples/`, moved into `ns`.
pub fn example(root: &Path, file: &str, ns: &str) -> Result<String> {
    let text = std::fs::read_to_string(root.join("manifests/examples").join(file))?;
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text)?;
    doc["metadata"]["namespace"] = serde_yaml::Value::String(ns.to_string());
    Ok(serde_yaml::to_string(&doc)?)
}

/// `kubectl apply -f -`; fails on a refusal and on any warning from the API server.
pub fn apply(yaml: &str) -> Result {
    let out = kubectl_stdin(&["apply", "-f", "-"], yaml)?;
    ensure!(out.success, "kubectl apply failed: {}", out.stderr);
    let warnings = api_warnings(&out.stderr);
    ensure!(warnings.is_empty(), "the API server warned: {warnings:?}");
    Ok(())
}

/// `Kind/name` of every object `shortener-operator render` prints for the manifest: what
/// the operator must create when the monitoring CRDs are installed.
pub fn rendered_children(yaml: &str, work: &Path) -> Result<BTreeSet<String>> {
    let file = work.join(format!("render-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml)?;
    let out = crate::cluster::must(
        env!("CARGO_BIN_EXE_shortener-operator"),
        &["render", "-f", &file.to_string_lossy()],
        None,
    )?;
    let mut children = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&out) {
        let value = serde_yaml::Value::deserialize(doc)?;
        let kind = value["kind"]
            .as_str()
            .ok_or("rendered object without kind")?;
        let name = value["metadata"]["name"]
            .as_str()
            .ok_or("rendered object without name")?;
        children.insert(format!("{kind}/{name}"));
    }
    Ok(children)
}

pub fn shorteners(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &shortener_resource())
}

pub async fn shortener(client: &Client, ns: &str, name: &str) -> Result<DynamicObject> {
    Ok(shorteners(client, ns).get(name).await?)
}

/// The status of condition `type_` if it describes the current generation.
pub fn condition(shortener: &DynamicObject, type_: &str) -> Option<(String, String)> {
    let generation = shortener.metadata.generation?;
    at(&shortener.data, "/status/conditions")
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["observedGeneration"].as_i64() == Some(generation))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// Waits until condition `type_` has `status` for the current generation.
pub async fn wait_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> Result<DynamicObject> {
    let api = &shorteners(client, ns);
    eventually(
        &format!("Shortener {ns}/{name} {type_}={status}"),
        TIMEOUT,
        || async move {
            let s = api.get(name).await.map_err(|e| e.to_string())?;
            match condition(&s, type_) {
                Some((got, _)) if got == status => Ok(s),
                other => Err(format!(
                    "{type_} is {other:?}; conditions {}",
                    at(&s.data, "/status/conditions")
                )),
            }
        },
    )
    .await
}

pub async fn wait_ready(client: &Client, ns: &str, name: &str) -> Result<DynamicObject> {
    wait_condition(client, ns, name, "Ready", "True").await
}

/// Every expected child exists, controller-owned by the Shortener (but the superuser's Secret
/// kept with the volume), and nothing else carries the operator's labels for this instance.
pub async fn assert_children(
    client: &Client,
    ns: &str,
    name: &str,
    expected: &BTreeSet<String>,
) -> Result {
    let owner = shortener(client, ns, name).await?;
    let uid = owner.uid().ok_or("Shortener without uid")?;
    // The backups' claim is created once, without an owner (it outlives the Shortener), and
    // claims are not among the listed child kinds: checked on its own.
    let (claims, expected): (BTreeSet<String>, BTreeSet<String>) = expected
        .iter()
        .cloned()
        .partition(|child| child.starts_with("PersistentVolumeClaim/"));
    let expected = &expected;
    let claims_api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), ns);
    for claim in &claims {
        let claim_name = claim.trim_start_matches("PersistentVolumeClaim/");
        let made = eventually(&format!("{claim} made"), TIMEOUT, || async {
            match claims_api.get_opt(claim_name).await {
                Ok(Some(made)) => Ok(made),
                Ok(None) => Err("not yet".to_string()),
                Err(error) => Err(error.to_string()),
            }
        })
        .await?;
        ensure!(
            made.metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty),
            "{claim} has owners: it would go with the Shortener"
        );
    }
    let selector = managed_by_operator(name);
    let found = eventually(&format!("children of {ns}/{name}"), TIMEOUT, || async {
        let found = objects_labelled(client, ns, &selector)
            .await
            .map_err(|e| e.to_string())?;
        if &found == expected {
            Ok(found)
        } else {
            Err(format!(
                "missing {:?}, unexpected {:?}",
                expected.difference(&found).collect::<Vec<_>>(),
                found.difference(expected).collect::<Vec<_>>()
            ))
        }
    })
    .await?;
    for child in &found {
        let (kind, child_name) = child.split_once('/').ok_or("bad child key")?;
        let object = get_opt(client, ns, kind, child_name)
            .await?
            .ok_or_else(|| format!("{child} vanished"))?;
        let refs = object.metadata.owner_references.clone().unwrap_or_default();
        // The superuser's Secret stays with a kept volume: unowned, annotated with its claim.
        let kept_with = object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("shortener.dev/kept-with-claim"));
        if *child == format!("Secret/{name}-db") && kept_with.is_some() {
            ensure!(
                refs.is_empty() && kept_with == Some(&format!("data-{name}-postgres-0")),
                "{child} is kept with {kept_with:?} but has owners {refs:?}"
            );
            continue;
        }
        ensure!(
            refs.iter().any(|r| r.kind == "Shortener"
                && r.api_version == "shortener.dev/v1alpha1"
                && r.name == name
                && r.uid == uid
                && r.controller == Some(true)
                && r.block_owner_deletion == Some(true)),
            "{child} is not controller-owned by Shortener {name} ({uid}): {refs:?}"
        );
    }
    Ok(())
}

/// A Deployment that has rolled out `replicas` ready pods of its current generation.
pub async fn wait_deployment(
    client: &Client,
    ns: &str,
    name: &str,
    replicas: i64,
) -> Result<Value> {
    let api = &crate::cluster::api_of(client, ns, "Deployment")?;
    eventually(
        &format!("Deployment {ns}/{name} rolled out with {replicas} replicas"),
        TIMEOUT,
        || async move {
            let d = api.get(name).await.map_err(|e| e.to_string())?;
            let data = serde_json::to_value(&d).map_err(|e| e.to_string())?;
            let n = |p: &str| at(&data, p).as_i64().unwrap_or(0);
            let ok = n("/spec/replicas") == replicas
                && n("/status/observedGeneration") >= d.metadata.generation.unwrap_or(0)
                && n("/status/updatedReplicas") == replicas
                && n("/status/readyReplicas") == replicas
                && n("/status/replicas") == replicas;
            if ok {
                Ok(data)
            } else {
                Err(format!(
                    "spec.replicas {}, status {}",
                    n("/spec/replicas"),
                    at(&data, "/status")
                ))
            }
        },
    )
    .await
}

/// Waits until the object `kind/name` is gone (pruned or deleted).
pub async fn wait_gone(client: &Client, ns: &str, kind: &str, name: &str) -> Result {
    eventually(&format!("{kind}/{name} gone"), TIMEOUT, || async move {
        match crate::cluster::get_opt(client, ns, kind, name).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// kwok provisions no volumes: a PersistentVolume bound in advance to the claim stands in
/// for a provisioner, so the PostgreSQL pod can be scheduled. Labelled for the suite's
/// cleanup (volumes are cluster-scoped).
pub async fn provide_volume(
    client: &Client,
    ns: &str,
    claim: &str,
    size: &str,
    class: Option<&str>,
) -> Result {
    let api: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    let pv = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": format!("{ns}-{claim}"),
            "labels": { crate::SUITE_LABEL: ns },
        },
        "spec": {
            "capacity": { "storage": size },
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class.unwrap_or(""),
            "hostPath": { "path": format!("/tmp/shortener-e2e/{ns}/{claim}") },
            "claimRef": { "namespace": ns, "name": claim },
        },
    }))?;
    api.create(&PostParams::default(), &pv).await?;
    Ok(())
}

/// `kubectl patch shortener NAME --type=merge` with the given spec fragment.
pub fn patch_spec(ns: &str, name: &str, spec: Value) -> Result {
    let patch = json!({ "spec": spec }).to_string();
    kubectl(&[
        "-n",
        ns,
        "patch",
        "shortener",
        name,
        "--type=merge",
        "-p",
        &patch,
    ])?;
    Ok(())
}
