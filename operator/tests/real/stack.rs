//! The stack as the real node runs it: pods, their probes and containers, the data stores
//! reached through `kubectl exec`, and what to print when something is not ready.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};

use crate::cluster::{Result, at, eventually, kubectl, run, shortener_resource};
use crate::ensure;

/// A Shortener's first start on an empty node: PostgreSQL's initdb, the role-setup Job, the
/// migrations and three app pods through their startup probes, on one shared CPU.
pub const FIRST_START: Duration = Duration::from_secs(600);
/// A pod replaced or a rollout, once the images are on the node.
pub const RECOVERY: Duration = Duration::from_secs(300);

pub fn selector(instance: &str, component: &str) -> String {
    format!(
        "app.kubernetes.io/name=shortener,app.kubernetes.io/instance={instance},app.kubernetes.io/component={component}"
    )
}

pub async fn pods(client: &Client, ns: &str, instance: &str, component: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().labels(&selector(instance, component)))
        .await?;
    Ok(list.items)
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone())
}

/// Waits until `count` pods of the component are Ready (and no other pod of it is left).
pub async fn wait_pods_ready(
    client: &Client,
    ns: &str,
    instance: &str,
    component: &str,
    count: usize,
    timeout: Duration,
) -> Result<Vec<Pod>> {
    eventually(
        &format!("{count} {component} pod(s) of {ns}/{instance} Ready"),
        timeout,
        || async {
            let pods = pods(client, ns, instance, component)
                .await
                .map_err(|e| e.to_string())?;
            let ready = pods.iter().filter(|p| is_ready(p)).count();
            if ready == count && pods.len() == count {
                Ok(pods)
            } else {
                Err(format!("{ready} Ready of {}", pods.len()))
            }
        },
    )
    .await
}

/// Waits until the Shortener's Ready condition is True for its current generation.
pub async fn wait_shortener_ready(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &shortener_resource());
    eventually(&format!("Shortener {ns}/{name} Ready"), timeout, || async {
        let s = api.get(name).await.map_err(|e| e.to_string())?;
        let generation = s.metadata.generation.unwrap_or_default();
        let conditions = at(&s.data, "/status/conditions");
        let ready = conditions.as_array().into_iter().flatten().any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"].as_i64().unwrap_or(generation) == generation
        });
        if ready {
            Ok(())
        } else {
            Err(format!("conditions {conditions}"))
        }
    })
    .await
}

/// The admin API key the operator generated.
pub async fn admin_key(client: &Client, ns: &str, name: &str) -> Result<String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api.get(&format!("{name}-admin")).await?;
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("api-key"))
        .ok_or("the admin Secret has no api-key")?;
    Ok(String::from_utf8(key.0.clone())?)
}

/// One SQL statement through `psql` in the PostgreSQL pod, as the superuser.
pub fn psql(ns: &str, instance: &str, sql: &str) -> Result<String> {
    let pod = format!("{instance}-postgres-0");
    let out = kubectl(&[
        "-n",
        ns,
        "exec",
        &pod,
        "-c",
        "postgres",
        "--",
        "psql",
        "-X",
        "-At",
        "-U",
        "shortener",
        "-d",
        "shortener",
        "-c",
        sql,
    ])?;
    Ok(out.trim().to_string())
}

/// What the first start must have done, checked on the objects the node reports: the
/// volume bound, the role-setup Job completed, every app pod's `migrate` init container
/// exited 0, the app connected to PostgreSQL as the runtime role through PgBouncer only.
pub async fn check_first_start(
    client: &Client,
    ns: &str,
    instance: &str,
    replicas: usize,
) -> Result {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let bound: Vec<String> = claims
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={instance}")))
        .await?
        .items
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .map(|c| c.name_any())
        .collect();
    ensure!(
        !bound.is_empty(),
        "no bound PersistentVolumeClaim of {ns}/{instance}"
    );

    // The Job's name carries a hash of what it runs; it is found by its labels.
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let roles = jobs
        .list(&ListParams::default().labels(&selector(instance, "postgres-roles")))
        .await?
        .items;
    ensure!(!roles.is_empty(), "no role-setup Job of {ns}/{instance}");
    for job in &roles {
        let succeeded = job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
        ensure!(
            succeeded >= 1,
            "the role-setup Job {} has not completed: {:?}",
            job.name_any(),
            job.status
        );
    }

    let app = wait_pods_ready(client, ns, instance, "app", replicas, RECOVERY).await?;
    for pod in &app {
        let init = pod
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|s| s.iter().find(|c| c.name == "migrate"))
            .ok_or_else(|| format!("{} has no migrate init container", pod.name_any()))?;
        let exit = init
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code);
        ensure!(
            exit == Some(0),
            "{}: migrate ended {exit:?}",
            pod.name_any()
        );
    }

    // Through PgBouncer only: every server connection of the runtime role comes from the
    // PgBouncer pod. Connections open lazily; the readiness probes have made some.
    let bouncers: Vec<String> = pods(client, ns, instance, "pgbouncer")
        .await?
        .iter()
        .filter_map(pod_ip)
        .collect();
    eventually("the runtime role connected through PgBouncer", RECOVERY, || async {
        let clients = psql(
            ns,
            instance,
            "select coalesce(string_agg(distinct host(client_addr), ','), '') from pg_stat_activity where usename = 'shortener_app'",
        )
        .map_err(|e| e.to_string())?;
        let from: Vec<&str> = clients.split(',').filter(|s| !s.is_empty()).collect();
        if !from.is_empty() && from.iter().all(|ip| bouncers.iter().any(|b| b == ip)) {
            Ok(())
        } else {
            Err(format!("shortener_app connected from {from:?}; PgBouncer is {bouncers:?}"))
        }
    })
    .await?;
    let roles = psql(
        ns,
        instance,
        "select string_agg(rolname, ',' order by rolname) from pg_roles where rolname like 'shortener%'",
    )?;
    ensure!(
        roles == "shortener,shortener_app,shortener_owner",
        "PostgreSQL roles: {roles}"
    );
    Ok(())
}

/// The app pods' own count of redirects answered (from each pod's /metrics, through the API
/// server's proxy), by pod name.
pub async fn redirects_by_pod(
    client: &Client,
    ns: &str,
    instance: &str,
) -> Result<Vec<(String, f64)>> {
    let mut counts = Vec::new();
    for pod in pods(client, ns, instance, "app").await? {
        if !is_ready(&pod) {
            continue;
        }
        let name = pod.name_any();
        let text = kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{ns}/pods/{name}:8080/proxy/metrics"),
        ])?;
        let count: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("shortener_http_requests_total{")
                    && l.contains("route=\"/{short_code}\"")
                    && l.contains("status=\"302\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        counts.push((name, count));
    }
    Ok(counts)
}

/// Prints what a person would look at first: every pod, the last events, the logs of what
/// is not ready, and the operator's log.
pub fn diagnose() {
    let show = |args: &[&str]| match run("kubectl", args, None) {
        Ok(out) => eprintln!("$ kubectl {}\n{}{}", args.join(" "), out.stdout, out.stderr),
        Err(error) => eprintln!("kubectl {}: {error}", args.join(" ")),
    };
    show(&["get", "pods", "-A", "-o", "wide"]);
    show(&["get", "events", "-A", "--sort-by=.lastTimestamp"]);
    show(&[
        "-n",
        crate::OPERATOR_NAMESPACE,
        "logs",
        "deploy/shortener-operator",
        "--tail=30",
    ]);
}

pub async fn pods_labelled(client: &Client, ns: &str, selector: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

/// A namespace of the suite's own, new: one left by an earlier run (perhaps still
/// terminating) is deleted first and waited for.
/// Waits until the operator's Lease is held by a pod `accept` takes; that pod's name.
pub async fn operator_lease_holder(
    client: &Client,
    what: &str,
    timeout: Duration,
    accept: impl Fn(&str) -> bool,
) -> Result<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), crate::OPERATOR_NAMESPACE);
    eventually(what, timeout, || async {
        let lease = leases
            .get(crate::RELEASE)
            .await
            .map_err(|e| e.to_string())?;
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        if accept(&holder) {
            Ok(holder)
        } else {
            Err(format!("held by {holder:?}"))
        }
    })
    .await
}

/// Deletes the Shortener `default/links` (if there) and waits until it is gone: its owned
/// children go with it by garbage collection, what it keeps (claims, the superuser's Secret)
/// stays.
pub fn delete_links() -> Result {
    kubectl(&[
        "-n",
        "default",
        "delete",
        "shortener",
        "links",
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    ])
    .map(|_| ())
}

/// A JSON merge patch of the Shortener `default/links`, as `kubectl patch` sends it.
pub fn patch_links(body: &str) -> Result {
    kubectl(&[
        "-n",
        "default",
        "patch",
        "shortener",
        "links",
        "--type=merge",
        "-p",
        body,
    ])
    .map(|_| ())
}

pub fn fresh_namespace(name: &str) -> Result {
    kubectl(&[
        "delete",
        "namespace",
        name,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=180s",
    ])?;
    kubectl(&["create", "namespace", name])?;
    Ok(())
}
