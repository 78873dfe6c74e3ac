//! Upgrades on the real node: a new operator version leaves a running stack untouched when
//! what it renders is the same, and the service starts on a schema newer than its build (an
//! image rolled back after an upgrade migrated the database).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::cluster::{Result, eventually, kubectl, must};
use crate::stack::{
    RECOVERY, is_ready, operator_lease_holder, pods, pods_labelled, psql, wait_pods_ready,
};
use crate::{OPERATOR_NAMESPACE, RELEASE, Real, ensure};

/// The operator's image as scripts/images.sh loads it, and the "next version" the test
/// tags from it: a new reference, so `helm upgrade` rolls the operator as a release does.
const OPERATOR_IMAGE: &str = "docker.io/library/shortener-operator:0.1.0";
const NEXT_TAG: &str = "0.1.0-next";

/// Every pod of `default/links` with its uid and its containers' restart counts, and the
/// generation of each of its Deployments and its StatefulSet.
async fn stack_state(real: &Real) -> Result<(BTreeMap<String, String>, BTreeMap<String, i64>)> {
    let pods: Api<Pod> = Api::namespaced(real.client.clone(), "default");
    let instance = ListParams::default().labels("app.kubernetes.io/instance=links");
    let mut running = BTreeMap::new();
    for pod in pods.list(&instance).await?.items {
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded") {
            continue; // the role-setup Job's finished pod
        }
        let restarts: Vec<String> = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|c| format!("{}={}", c.name, c.restart_count))
            .collect();
        running.insert(
            pod.name_any(),
            format!("{} {}", pod.uid().unwrap_or_default(), restarts.join(",")),
        );
    }
    let mut generations = BTreeMap::new();
    let deployments: Api<Deployment> = Api::namespaced(real.client.clone(), "default");
    for d in deployments.list(&instance).await?.items {
        generations.insert(
            format!("Deployment/{}", d.name_any()),
            d.metadata.generation.unwrap_or(0),
        );
    }
    let sets: Api<StatefulSet> = Api::namespaced(real.client.clone(), "default");
    for s in sets.list(&instance).await?.items {
        generations.insert(
            format!("StatefulSet/{}", s.name_any()),
            s.metadata.generation.unwrap_or(0),
        );
    }
    Ok((running, generations))
}

/// `helm upgrade` of the operator chart to a new image reference (the same build, tagged
/// anew in the node's runtime, as a new release would be): the new operator pod takes the
/// Lease and reconciles `default/links`, and not one pod of that stack was replaced or
/// restarted, nor any of its workloads' generations moved.
pub async fn a_helm_upgrade_of_the_operator_restarts_no_pod_of_the_stack(
    real: &'static Real,
) -> Result {
    let before = stack_state(real).await?;
    ensure!(!before.0.is_empty(), "no pod of default/links to watch");
    let address = std::env::var("CONTAINERD_ADDRESS")
        .map_err(|_| "CONTAINERD_ADDRESS is not set: eval \"$(scripts/cluster.sh env)\"")?;
    let next = format!(
        "{}:{NEXT_TAG}",
        OPERATOR_IMAGE.rsplit_once(':').unwrap_or_default().0
    );
    must(
        "ctr",
        &[
            "--address",
            &address,
            "--namespace",
            "k8s.io",
            "images",
            "tag",
            "--force",
            OPERATOR_IMAGE,
            &next,
        ],
        None,
    )?;
    let old_pods: Vec<String> = pods_labelled(
        &real.client,
        OPERATOR_NAMESPACE,
        "app.kubernetes.io/name=shortener-operator",
    )
    .await?
    .iter()
    .map(|p| p.name_any())
    .collect();
    let at = Instant::now();
    let chart = real.root.join("charts/shortener-operator");
    must(
        "helm",
        &[
            "upgrade",
            RELEASE,
            &chart.to_string_lossy(),
            "-n",
            OPERATOR_NAMESPACE,
            "--reuse-values",
            "--set",
            &format!("image.tag={NEXT_TAG}"),
            "--wait",
            "--timeout",
            "5m",
        ],
        None,
    )?;
    let holder = operator_lease_holder(
        &real.client,
        "the new operator pod holding the Lease",
        RECOVERY,
        |holder| !holder.is_empty() && !old_pods.iter().any(|p| p == holder),
    )
    .await?;
    let took_over = at.elapsed();
    let operator_pods: Api<Pod> = Api::namespaced(real.client.clone(), OPERATOR_NAMESPACE);
    let pod = operator_pods.get(&holder).await?;
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    ensure!(
        image.ends_with(NEXT_TAG) && is_ready(&pod),
        "the new operator pod {holder} runs {image}"
    );
    // Its first pass over every Shortener: then whatever it would change, it has changed.
    eventually(
        "the new operator reconciled default/links",
        RECOVERY,
        || async {
            let logs =
                kubectl(&["-n", OPERATOR_NAMESPACE, "logs", &holder]).map_err(|e| e.to_string())?;
            let reconciled = logs
                .lines()
                .any(|l| l.contains("\"reconciled\"") && l.contains("default/links"));
            if reconciled {
                Ok(())
            } else {
                Err("no pass yet".to_string())
            }
        },
    )
    .await?;
    let after = stack_state(real).await?;
    ensure!(
        after.1 == before.1,
        "workload generations moved: before {:?}, after {:?}",
        before.1,
        after.1
    );
    ensure!(
        after.0 == before.0,
        "pods replaced or restarted: before {:?}, after {:?}",
        before.0,
        after.0
    );
    println!(
        "    operator upgraded to {image}: {holder} took the Lease {:.0}s after `helm upgrade`, reconciled; the {} pods of default/links untouched (same uids, no restart), generations {:?}",
        took_over.as_secs_f64(),
        before.0.len(),
        before.1
    );
    Ok(())
}

/// A migration from a newer build (a row in `_sqlx_migrations` this build does not have, as
/// after an upgrade rolled back), then the app rolled: every new pod's `migrate` init
/// container reports it and leaves it, the serving containers start and turn Ready.
pub async fn an_app_build_older_than_the_schema_still_starts(real: &'static Real) -> Result {
    psql(
        "default",
        "links",
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (99999, 'from a newer build (test)', now(), true, '\\x00', 0)",
    )?;
    let outcome = rolled_onto_the_newer_schema(real).await;
    let cleanup = psql(
        "default",
        "links",
        "DELETE FROM _sqlx_migrations WHERE version = 99999",
    );
    outcome.and(cleanup.map(|_| ()))
}

async fn rolled_onto_the_newer_schema(real: &'static Real) -> Result {
    let old: Vec<String> = pods(&real.client, "default", "links", "app")
        .await?
        .iter()
        .map(|p| p.name_any())
        .collect();
    let at = Instant::now();
    kubectl(&["-n", "default", "rollout", "restart", "deployment/links"])?;
    let new = eventually("every app pod replaced", RECOVERY, || async {
        let now = wait_pods_ready(
            &real.client,
            "default",
            "links",
            "app",
            3,
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| e.to_string())?;
        if now.iter().any(|p| old.contains(&p.name_any())) {
            return Err("old pods still there".to_string());
        }
        Ok(now)
    })
    .await?;
    for pod in &new {
        let log = kubectl(&["-n", "default", "logs", &pod.name_any(), "-c", "migrate"])?;
        ensure!(
            log.contains("99999") && log.contains("newer build"),
            "{}'s migrate init container did not report the newer migration: {log}",
            pod.name_any()
        );
    }
    println!(
        "    with a migration of a newer build in the schema, 3 new app pods Ready {:.0}s after the restart; each `migrate` reported it and left it",
        at.elapsed().as_secs_f64()
    );
    Ok(())
}
