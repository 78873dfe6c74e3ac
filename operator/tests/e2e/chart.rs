//! `helm upgrade` and `helm uninstall` of the operator chart.

use std::sync::atomic::Ordering;

use crate::cluster::{Result, TIMEOUT, api_warnings, eventually, kubectl, must, run};
use crate::operator::{LEASE, RELEASE, lease};
use crate::{Ctx, OPERATOR_NAMESPACE, ensure};

/// `kind/name` (with `-n namespace` when namespaced) of every object in the release.
fn release_objects() -> Result<Vec<(String, Option<String>)>> {
    let manifest = must(
        "helm",
        &["get", "manifest", RELEASE, "-n", OPERATOR_NAMESPACE],
        None,
    )?;
    let mut objects = Vec::new();
    for doc in manifest.split("\n---").filter(|d| !d.trim().is_empty()) {
        let value: serde_yaml::Value = serde_yaml::from_str(doc)?;
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().ok_or("object without kind")?;
        let name = value["metadata"]["name"]
            .as_str()
            .ok_or("object without name")?;
        let namespace = value["metadata"]["namespace"].as_str().map(str::to_string);
        objects.push((format!("{}/{name}", kind.to_lowercase()), namespace));
    }
    Ok(objects)
}

fn exists(object: &str, namespace: Option<&str>) -> Result<bool> {
    let mut args = vec!["get", object, "--ignore-not-found", "-o", "name"];
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    }
    Ok(!kubectl(&args)?.trim().is_empty())
}

pub async fn operator_chart_upgrade_and_uninstall_leave_no_operator_objects(ctx: &Ctx) -> Result {
    // SIGTERM: the operator finishes and releases the Lease (no holder left).
    for process in ctx.suite.operators.lock().await.iter_mut() {
        process.stop().await?;
    }
    let client = &ctx.client;
    eventually("the Lease released on SIGTERM", TIMEOUT, || async move {
        match lease(client, OPERATOR_NAMESPACE)
            .await
            .map_err(|e| e.to_string())?
        {
            Some((None, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;

    let chart = ctx.suite.root.join("charts/shortener-operator");
    let upgrade = run(
        "helm",
        &[
            "upgrade",
            RELEASE,
            &chart.to_string_lossy(),
            "-n",
            OPERATOR_NAMESPACE,
            "--set",
            "replicaCount=0",
            "--set",
            "logLevel=debug",
            "--wait",
            "--timeout",
            "2m",
        ],
        None,
    )?;
    ensure!(upgrade.success, "helm upgrade: {}", upgrade.stderr);
    let warnings = api_warnings(&upgrade.stderr);
    ensure!(warnings.is_empty(), "helm upgrade warned: {warnings:?}");
    let env = kubectl(&[
        "-n",
        OPERATOR_NAMESPACE,
        "get",
        "deployment/shortener-operator",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"RUST_LOG\")].value}",
    ])?;
    ensure!(
        env == "debug",
        "upgrade did not reach the Deployment: RUST_LOG={env}"
    );
    let status: serde_json::Value = serde_json::from_str(&must(
        "helm",
        &["status", RELEASE, "-n", OPERATOR_NAMESPACE, "-o", "json"],
        None,
    )?)?;
    ensure!(
        status["version"] == 2 && status["info"]["status"] == "deployed",
        "release after upgrade: {}",
        status["info"]
    );

    let objects = release_objects()?;
    ensure!(objects.len() >= 7, "the release lists only {objects:?}");
    for (object, namespace) in &objects {
        ensure!(
            exists(object, namespace.as_deref())?,
            "{object} of the release is missing after the upgrade"
        );
    }

    let uninstall = run(
        "helm",
        &["uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait"],
        None,
    )?;
    ensure!(uninstall.success, "helm uninstall: {}", uninstall.stderr);
    ctx.suite.chart_installed.store(false, Ordering::SeqCst);
    let objects = &objects;
    eventually(
        "every object of the release deleted",
        TIMEOUT,
        || async move {
            let mut left = Vec::new();
            for (object, namespace) in objects {
                if exists(object, namespace.as_deref()).map_err(|e| e.to_string())? {
                    left.push(object.clone());
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("left behind: {left:?}"))
            }
        },
    )
    .await?;
    let pods = kubectl(&[
        "-n",
        OPERATOR_NAMESPACE,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=shortener-operator",
        "-o",
        "name",
    ])?;
    ensure!(pods.trim().is_empty(), "operator pods left behind: {pods}");
    // Helm never deletes the CRDs of a chart's crds/ directory (documented Helm behaviour:
    // deleting a CRD deletes every custom resource of that kind): the CRD stays.
    ensure!(
        exists("crd/shorteners.shortener.dev", None)?,
        "the Shortener CRD was deleted by helm uninstall"
    );
    // The Lease is written by the operator at run time, not by Helm: it stays, released,
    // until the namespace is deleted.
    ensure!(
        exists(&format!("lease/{LEASE}"), Some(OPERATOR_NAMESPACE))?,
        "the Lease is gone"
    );
    Ok(())
}
