//! The database on CloudNativePG (installed on the node by scripts/cluster.sh): a Shortener
//! with `database.cloudNativePG` becomes Ready behind its NetworkPolicies and serves through
//! the Ingress; its primary's pod is deleted while clients follow links, the Cluster fails
//! over, and every answered redirect is a recorded click.

use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use serde_json::Value;
use shortener_operator::children::cloudnative_pg::{HEALTHY_PHASE, cluster_resource};

use crate::cluster::{Result, eventually, kubectl, kubectl_stdin, shortener_resource};
use crate::faults::flowing;
use crate::stack::{FIRST_START, RECOVERY, admin_key, fresh_namespace, wait_shortener_ready};
use crate::traffic::{Api as Service, Stream};
use crate::{Real, ensure};

const NAMESPACE: &str = "cnpg";
const HOST: &str = "cnpg.test";

/// The API server's address and port as pods reach it (the `kubernetes` Service's
/// endpoints), for the policies of the instances and the Pooler.
async fn api_server(real: &Real) -> Result<(String, i32)> {
    let slices: Api<EndpointSlice> = Api::namespaced(real.client.clone(), "default");
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await?;
    let slice = list
        .items
        .first()
        .ok_or("no EndpointSlice of the kubernetes Service")?;
    let address = slice
        .endpoints
        .first()
        .and_then(|e| e.addresses.first())
        .ok_or("the kubernetes Service has no endpoint")?;
    let port = slice
        .ports
        .iter()
        .flatten()
        .find_map(|p| p.port)
        .ok_or("the kubernetes Service's endpoints have no port")?;
    Ok((address.clone(), port))
}

/// The Cluster's status: (phase, current primary, ready instances).
async fn cluster_state(clusters: &Api<DynamicObject>) -> Result<(String, String, i64)> {
    let cluster = clusters.get("links-postgres").await?;
    let status = &cluster.data["status"];
    let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
    Ok((
        text(&status["phase"]),
        text(&status["currentPrimary"]),
        status["readyInstances"].as_i64().unwrap_or(0),
    ))
}

pub async fn a_cloud_native_pg_database_fails_over_without_losing_a_click(
    real: &'static Real,
) -> Result {
    let outcome = failover(real).await;
    // The node has room for one stack at a time: removed whatever happened.
    let removed = kubectl(&[
        "delete",
        "namespace",
        NAMESPACE,
        "--wait=true",
        "--timeout=300s",
    ]);
    outcome.and(removed.map(|_| ()))
}

async fn failover(real: &'static Real) -> Result {
    fresh_namespace(NAMESPACE)?;
    let (address, port) = api_server(real).await?;
    // Two instances and one PgBouncer, sized for the node's 1 GiB.
    let manifest = format!(
        r#"apiVersion: shortener.dev/v1alpha1
kind: Shortener
metadata:
  name: links
  namespace: {NAMESPACE}
spec:
  app:
    replicas: 2
  ingress:
    host: {HOST}
  database:
    cloudNativePG:
      instances: 2
      storage:
        size: 1Gi
        storageClassName: local
      resources:
        requests: {{ cpu: 50m, memory: 96Mi }}
        limits: {{ memory: 256Mi }}
      parameters:
        shared_buffers: 32MB
        max_connections: "60"
      poolerInstances: 1
  networkPolicy:
    apiServer:
      cidrs: ["{address}/32"]
      ports: [{port}]
"#
    );
    let started = Instant::now();
    let applied = kubectl_stdin(&["apply", "-f", "-"], &manifest)?;
    ensure!(applied.success, "kubectl apply: {}", applied.stderr);
    wait_shortener_ready(&real.client, NAMESPACE, "links", FIRST_START).await?;
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(real.client.clone(), NAMESPACE, &cluster_resource());
    let (phase, first_primary, ready) = cluster_state(&clusters).await?;
    ensure!(
        phase == HEALTHY_PHASE && ready == 2,
        "a Ready Shortener on a Cluster in phase {phase:?} with {ready} ready instances"
    );
    println!(
        "    Ready {:.0}s after the apply (Cluster of 2, primary {first_primary})",
        started.elapsed().as_secs_f64()
    );

    let key = admin_key(&real.client, NAMESPACE, "links").await?;
    let api = Service::new(&real.ingress_url, Some(HOST), &key)?;
    api.wait_serving().await?;
    let user = api.create_user("failover").await?;
    let mut links = Vec::new();
    for i in 0..4 {
        let target = format!("https://example.com/failover/{i}");
        links.push(api.create_link(user, &target).await?);
    }
    let stream = Stream::start(&api, &links, 4, Duration::from_millis(100));
    flowing(&stream, 50).await?;

    // The primary's pod deleted: CloudNativePG promotes the replica and moves `-rw` to it.
    let failed_before = stream.failures().await;
    let at = Instant::now();
    kubectl(&[
        "-n",
        NAMESPACE,
        "delete",
        "pod",
        &first_primary,
        "--wait=false",
    ])?;
    let promoted = eventually("a new primary", RECOVERY, || async {
        let (_, primary, _) = cluster_state(&clusters).await.map_err(|e| e.to_string())?;
        if !primary.is_empty() && primary != first_primary {
            Ok((primary, at.elapsed()))
        } else {
            Err(format!("primary {primary:?}"))
        }
    })
    .await?;
    // A write through the Pooler to the new primary.
    let written = Instant::now();
    let after = eventually("a link created on the new primary", RECOVERY, || async {
        api.create_link(user, "https://example.com/failover/after")
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let write_wait = written.elapsed();
    let healthy = eventually("the Cluster healthy again", RECOVERY, || async {
        let (phase, _, ready) = cluster_state(&clusters).await.map_err(|e| e.to_string())?;
        if phase == HEALTHY_PHASE && ready == 2 {
            Ok(at.elapsed())
        } else {
            Err(format!("{phase}, {ready} ready"))
        }
    })
    .await?;
    // The Shortener reports the new primary (`kubectl get shortener -o wide`).
    let shorteners: Api<DynamicObject> =
        Api::namespaced_with(real.client.clone(), NAMESPACE, &shortener_resource());
    let named = eventually(
        "the Shortener's status to name the new primary",
        RECOVERY,
        || async {
            let s = shorteners.get("links").await.map_err(|e| e.to_string())?;
            let reported = s.data["status"]["database"]["primary"].clone();
            if reported.as_str() == Some(promoted.0.as_str()) {
                Ok(at.elapsed())
            } else {
                Err(format!("status.database.primary {reported}"))
            }
        },
    )
    .await?;
    flowing(&stream, 50).await?;
    let failed = stream.failures_since(failed_before).await;
    let seen = stream.stop().await?;
    api.expect_counts(&seen.answered, &links).await?;
    let (status, location) = api.follow(&after.code).await?;
    ensure!(
        location.as_deref() == Some(after.target.as_str()),
        "the link made after the failover answers {status} {location:?}"
    );
    println!(
        "    primary {first_primary} deleted: {} promoted after {:.1}s, a write through the \
         Pooler {:.1}s later, Cluster healthy (2 ready) after {:.1}s, in the Shortener's status \
         after {:.1}s",
        promoted.0,
        promoted.1.as_secs_f64(),
        write_wait.as_secs_f64(),
        healthy.as_secs_f64(),
        named.as_secs_f64()
    );
    println!(
        "    {} redirects answered, all recorded; failed meanwhile: {failed:?}",
        seen.total()
    );
    Ok(())
}
