//! Installation: the operator chart, each example, and the Shortener chart.

use std::collections::BTreeMap;

use kube::api::{Api, DynamicObject, ListParams};

use crate::cluster::{
    Result, TIMEOUT, api_warnings, at, crd, eventually, kubectl, must, printer_columns, resource,
};
use crate::operator::{self, RELEASE};
use crate::stack::{
    apply, assert_children, example, provide_volume, rendered_children, wait_condition, wait_ready,
};
use crate::{Ctx, OPERATOR_NAMESPACE, ensure};

/// The chart installs without a warning from the API server, with its RBAC objects and the
/// CRD (printer columns, scale subresource), and the operator under test holds the Lease.
pub async fn operator_chart_installs_without_warnings(ctx: &Ctx) -> Result {
    let warnings = api_warnings(&ctx.suite.install_stderr);
    ensure!(
        warnings.is_empty(),
        "helm install: the API server warned: {warnings:?}"
    );
    for object in [
        "serviceaccount/shortener-operator",
        "role/shortener-operator-leader-election",
        "rolebinding/shortener-operator-leader-election",
        "deployment/shortener-operator",
        "service/shortener-operator-metrics",
    ] {
        kubectl(&["-n", OPERATOR_NAMESPACE, "get", object])?;
    }
    kubectl(&[
        "get",
        "clusterrole/shortener-operator",
        "clusterrolebinding/shortener-operator",
    ])?;
    let crd = crd("shorteners.shortener.dev")?;
    let columns = printer_columns(&crd);
    ensure!(
        columns
            == [
                "Ready",
                "Replicas",
                "URL",
                "Route",
                "Last Backup",
                "Primary",
                "Age"
            ],
        "printer columns: {columns:?}"
    );
    ensure!(
        at(&crd, "/spec/versions/0/subresources/scale/specReplicasPath") == ".spec.app.replicas",
        "scale subresource: {}",
        at(&crd, "/spec/versions/0/subresources")
    );
    let installed = must(
        "helm",
        &["status", RELEASE, "-n", OPERATOR_NAMESPACE, "-o", "json"],
        None,
    )?;
    let installed: serde_json::Value = serde_json::from_str(&installed)?;
    ensure!(
        at(&installed, "/info/status") == "deployed",
        "release status {}",
        at(&installed, "/info/status")
    );
    // The operator identifies as the chart's ServiceAccount, not as an admin.
    let whoami = must(
        "kubectl",
        &[
            "--kubeconfig",
            &ctx.suite.operator_kubeconfig.to_string_lossy(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    )?;
    ensure!(
        whoami
            == format!(
                "system:serviceaccount:{OPERATOR_NAMESPACE}:{}",
                operator::SERVICE_ACCOUNT
            ),
        "operator credentials are {whoami}"
    );
    // What docs/operator.md promises the role cannot do (the rest is exercised by the tests).
    let account = format!(
        "system:serviceaccount:{OPERATOR_NAMESPACE}:{}",
        operator::SERVICE_ACCOUNT
    );
    for (verb, resource) in [
        ("list", "secrets"),
        ("watch", "secrets"),
        ("delete", "secrets"),
        ("update", "secrets"),
        ("delete", "persistentvolumeclaims"),
        ("delete", "shorteners.shortener.dev"),
        ("update", "shorteners.shortener.dev"),
        ("create", "pods"),
        ("delete", "leases.coordination.k8s.io"),
    ] {
        let answer = crate::cluster::run(
            "kubectl",
            &["auth", "can-i", verb, resource, "-A", "--as", &account],
            None,
        )?;
        ensure!(
            answer.stdout.trim() == "no",
            "the operator's role may {verb} {resource}: {}",
            answer.stdout.trim()
        );
    }
    let client = &ctx.client;
    eventually("the operator to hold the Lease", TIMEOUT, || async move {
        match operator::lease(client, OPERATOR_NAMESPACE).await {
            Ok(Some((Some(holder), _))) if holder == "e2e-0" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// `kubectl get shorteners` as a user reads it: one map of column to value per row.
pub fn printed_shorteners(ns: &str) -> Result<Vec<BTreeMap<String, String>>> {
    let out = kubectl(&["-n", ns, "get", "shorteners"])?;
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("no header")?
        .split_whitespace()
        .collect();
    Ok(lines
        .map(|line| {
            header
                .iter()
                .zip(line.split_whitespace())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect())
}

/// Applies an example (moved into the test's namespace) and checks the whole stack.
async fn example_becomes_ready(ctx: &Ctx, file: &str, replicas: &str) -> Result {
    let yaml = example(&ctx.suite.root, file, &ctx.ns)?;
    apply(&yaml)?;
    let expected = rendered_children(&yaml, &ctx.suite.work)?;
    assert_children(&ctx.client, &ctx.ns, "links", &expected).await?;
    let ready = wait_ready(&ctx.client, &ctx.ns, "links").await?;
    let url = at(&ready.data, "/status/url")
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(!url.is_empty(), "no status.url");
    let url = &url;
    let ns = ctx.ns.as_str();
    eventually(
        "the printer columns to show the ready Shortener",
        TIMEOUT,
        || async move {
            let rows = printed_shorteners(ns).map_err(|e| e.to_string())?;
            match rows.as_slice() {
                [row]
                    if row.get("NAME").map(String::as_str) == Some("links")
                        && row.get("READY").map(String::as_str) == Some("True")
                        && row.get("REPLICAS").map(String::as_str) == Some(replicas)
                        && row.get("URL") == Some(url) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    // The operator's events (events.k8s.io, its own RBAC) reach the Shortener.
    let events: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &ctx.ns,
        &resource("events.k8s.io/v1", "Event", "events"),
    );
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|e| at(&e.data, "/regarding/kind") == "Shortener")
        .filter_map(|e| at(&e.data, "/reason").as_str().map(str::to_string))
        .collect();
    for reason in ["Applied", "Ready"] {
        ensure!(
            reasons.iter().any(|r| r == reason),
            "no {reason} event on the Shortener; events: {reasons:?}"
        );
    }
    Ok(())
}

pub async fn minimal_example_becomes_ready(ctx: &Ctx) -> Result {
    provide_volume(&ctx.client, &ctx.ns, "data-links-postgres-0", "1Gi", None).await?;
    example_becomes_ready(ctx, "minimal.yaml", "3").await
}

pub async fn full_example_becomes_ready(ctx: &Ctx) -> Result {
    provide_volume(
        &ctx.client,
        &ctx.ns,
        "data-links-postgres-0",
        "2Gi",
        Some("standard"),
    )
    .await?;
    example_becomes_ready(ctx, "full.yaml", "3").await?;
    let monitor = crate::cluster::get_opt(&ctx.client, &ctx.ns, "ServiceMonitor", "links")
        .await?
        .ok_or("no ServiceMonitor")?;
    ensure!(
        monitor
            .metadata
            .labels
            .unwrap_or_default()
            .get("release")
            .map(String::as_str)
            == Some("kube-prometheus-stack"),
        "ServiceMonitor lacks monitoring.labels"
    );
    Ok(())
}

pub async fn external_database_example_becomes_ready(ctx: &Ctx) -> Result {
    kubectl(&[
        "-n",
        &ctx.ns,
        "create",
        "secret",
        "generic",
        "links-database",
        "--from-literal=url=postgres://u:p@db.example.com:5432/shortener",
    ])?;
    kubectl(&[
        "-n",
        &ctx.ns,
        "create",
        "secret",
        "generic",
        "links-cache",
        "--from-literal=url=redis://cache.example.com:6379",
    ])?;
    example_becomes_ready(ctx, "external-database.yaml", "2").await?;
    for absent in [
        ("StatefulSet", "links-postgres"),
        ("Deployment", "links-pgbouncer"),
        ("Deployment", "links-redis"),
    ] {
        ensure!(
            crate::cluster::get_opt(&ctx.client, &ctx.ns, absent.0, absent.1)
                .await?
                .is_none(),
            "{}/{} exists with an external database and cache",
            absent.0,
            absent.1
        );
    }
    Ok(())
}

/// The CloudNativePG example on a cluster without CloudNativePG's operator (this one serves
/// no `postgresql.cnpg.io`): the Shortener is Degraded (CloudNativePGNotInstalled) and not
/// Ready, names what is missing, and the rest of the stack is applied; no embedded database
/// is made in its stead.
pub async fn cloud_native_pg_example_without_its_operator_is_reported(ctx: &Ctx) -> Result {
    if crate::cluster::run(
        "kubectl",
        &["get", "crd", "clusters.postgresql.cnpg.io"],
        None,
    )?
    .success
    {
        eprintln!("    skipped: this cluster serves CloudNativePG (installed outside the suite)");
        return Ok(());
    }
    apply(&example(&ctx.suite.root, "cloudnative-pg.yaml", &ctx.ns)?)?;
    let degraded = wait_condition(&ctx.client, &ctx.ns, "links", "Degraded", "True").await?;
    let conditions = at(&degraded.data, "/status/conditions");
    let of = |type_: &str| {
        let all = conditions.as_array().into_iter().flatten();
        let found = all.into_iter().find(|c| c["type"] == type_);
        let text =
            |c: &serde_json::Value, key: &str| c[key].as_str().unwrap_or_default().to_string();
        found
            .map(|c| (text(c, "status"), text(c, "reason"), text(c, "message")))
            .unwrap_or_default()
    };
    let (_, reason, message) = of("Degraded");
    ensure!(
        reason == "CloudNativePGNotInstalled" && message.contains("postgresql.cnpg.io"),
        "Degraded: {reason}: {message}"
    );
    let (status, _, message) = of("Ready");
    ensure!(
        status == "False" && message.contains("postgres 0/3"),
        "Ready {status}: {message}"
    );
    for (kind, name, present) in [
        ("Deployment", "links", true),
        ("Deployment", "links-redis", true),
        ("StatefulSet", "links-postgres", false),
        ("Deployment", "links-pgbouncer", false),
    ] {
        let found = crate::cluster::get_opt(&ctx.client, &ctx.ns, kind, name).await?;
        ensure!(
            found.is_some() == present,
            "{kind}/{name}: present {}",
            found.is_some()
        );
    }
    Ok(())
}

/// `helm install links charts/shortener`: the release's Shortener becomes Ready.
pub async fn shortener_chart_becomes_ready(ctx: &Ctx) -> Result {
    provide_volume(&ctx.client, &ctx.ns, "data-links-postgres-0", "1Gi", None).await?;
    let chart = ctx.suite.root.join("charts/shortener");
    let chart = chart.to_string_lossy();
    let install = crate::cluster::run(
        "helm",
        &["install", "links", &chart, "-n", &ctx.ns, "--wait"],
        None,
    )?;
    ensure!(install.success, "helm install: {}", install.stderr);
    let warnings = api_warnings(&install.stderr);
    ensure!(warnings.is_empty(), "helm install warned: {warnings:?}");
    let manifest = must("helm", &["get", "manifest", "links", "-n", &ctx.ns], None)?;
    let expected = rendered_children(&manifest, &ctx.suite.work)?;
    assert_children(&ctx.client, &ctx.ns, "links", &expected).await?;
    let ready = wait_ready(&ctx.client, &ctx.ns, "links").await?;
    let labels = ready.metadata.labels.unwrap_or_default();
    ensure!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some("Helm"),
        "the Shortener is not the release's: {labels:?}"
    );
    let uninstall = crate::cluster::run(
        "helm",
        &["uninstall", "links", "-n", &ctx.ns, "--wait"],
        None,
    )?;
    ensure!(uninstall.success, "helm uninstall: {}", uninstall.stderr);
    Ok(())
}
