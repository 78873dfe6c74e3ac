//! Faults and changes under a stream of redirects through the Ingress: every answered
//! redirect is a recorded click, and a rollout or a scale-out fails no request.

use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::cluster::{Result, eventually, kubectl};
use crate::stack::{RECOVERY, admin_key, is_ready, patch_links, pods, wait_pods_ready};
use crate::traffic::{Api, Link, Stream};
use crate::{Real, ensure};

/// The `default/links` API through the Ingress, and four new links of a new user.
pub async fn links(real: &Real, name: &str) -> Result<(Api, Vec<Link>)> {
    let key = admin_key(&real.client, "default", "links").await?;
    let api = Api::new(&real.ingress_url, None, &key)?;
    api.wait_serving().await?;
    let user = api.create_user(name).await?;
    let mut links = Vec::new();
    for i in 0..4 {
        links.push(
            api.create_link(user, &format!("https://example.com/{name}/{i}"))
                .await?,
        );
    }
    Ok((api, links))
}

/// Waits until the stream has answered `more` redirects beyond now.
pub async fn flowing(stream: &Stream, more: u64) -> Result {
    let from = stream.answered().await;
    eventually("redirects answered again", RECOVERY, || async {
        let now = stream.answered().await;
        if now >= from + more {
            Ok(())
        } else {
            Err(format!("{} answered since", now - from))
        }
    })
    .await
}

/// One pod of each component deleted in turn (the app, PgBouncer, Redis, PostgreSQL) while
/// four clients follow links through the Ingress: once everything is back, each link's
/// recorded redirects equal the 302s the clients received. Prints each component's time to
/// a Ready replacement and the requests that failed meanwhile.
pub async fn no_answered_redirect_loses_its_click_when_pods_die(real: &'static Real) -> Result {
    let (api, links) = links(real, "faults").await?;
    let stream = Stream::start(&api, &links, 4, Duration::from_millis(100));
    flowing(&stream, 50).await?;
    let mut report = Vec::new();
    for (component, count) in [("app", 3), ("pgbouncer", 1), ("redis", 1), ("postgres", 1)] {
        let victim = pods(&real.client, "default", "links", component)
            .await?
            .into_iter()
            .find(is_ready)
            .ok_or_else(|| format!("no Ready {component} pod"))?;
        let name = victim.name_any();
        let uid = victim.uid().unwrap_or_default();
        let failed_before = stream.failures().await;
        let at = Instant::now();
        kubectl(&["-n", "default", "delete", "pod", &name, "--wait=false"])?;
        // Back when the component has its count of Ready pods again, none of them the victim.
        eventually(&format!("{component} replaced"), RECOVERY, || async {
            let now = wait_pods_ready(
                &real.client,
                "default",
                "links",
                component,
                count,
                Duration::from_secs(1),
            )
            .await
            .map_err(|e| e.to_string())?;
            if now.iter().any(|p| p.uid().as_deref() == Some(uid.as_str())) {
                Err("the deleted pod is still there".into())
            } else {
                Ok(())
            }
        })
        .await?;
        let recovered = at.elapsed();
        flowing(&stream, 20).await?;
        let failed = stream.failures_since(failed_before).await;
        report.push(format!(
            "{component}: Ready replacement after {:.1}s, failed requests {failed:?}",
            recovered.as_secs_f64()
        ));
    }
    let seen = stream.stop().await?;
    api.expect_counts(&seen.answered, &links).await?;
    println!(
        "    {} redirects answered, all recorded; {} failed",
        seen.total(),
        seen.failures.len()
    );
    for line in report {
        println!("      {line}");
    }
    Ok(())
}

/// A setting changed (the Deployment rolls) and `kubectl scale shortener/links --replicas=5`
/// while the stream runs: no request fails, and every one is counted.
pub async fn rollout_and_scale_out_fail_no_request(real: &'static Real) -> Result {
    let (api, links) = links(real, "rollout").await?;
    let stream = Stream::start(&api, &links, 4, Duration::from_millis(100));
    flowing(&stream, 50).await?;
    let generation = kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
        real.client.clone(),
        "default",
    )
    .get("links")
    .await?
    .metadata
    .generation;
    let at = Instant::now();
    patch_links(r#"{"spec":{"app":{"config":{"accessLog":"all"}}}}"#)?;
    // The operator rewrites the Deployment a moment after the patch: wait for the new
    // generation before asking whether it rolled out.
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(real.client.clone(), "default");
    eventually("the app Deployment rolled out", RECOVERY, || async {
        let now = deployments.get("links").await.map_err(|e| e.to_string())?;
        let status = now.status.unwrap_or_default();
        if now.metadata.generation == generation {
            return Err("not changed yet".into());
        }
        if status.observed_generation != now.metadata.generation {
            return Err("not observed yet".into());
        }
        kubectl(&[
            "-n",
            "default",
            "rollout",
            "status",
            "deployment/links",
            "--timeout=5s",
        ])
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .await?;
    wait_pods_ready(&real.client, "default", "links", "app", 3, RECOVERY).await?;
    let rolled = at.elapsed();
    flowing(&stream, 20).await?;
    let rollout_failures = stream.failures_since(0).await;
    let before_scale = stream.failures().await;
    let at = Instant::now();
    kubectl(&["-n", "default", "scale", "shortener/links", "--replicas=5"])?;
    wait_pods_ready(&real.client, "default", "links", "app", 5, RECOVERY).await?;
    let scaled = at.elapsed();
    flowing(&stream, 20).await?;
    let scale_failures = stream.failures_since(before_scale).await;
    let seen = stream.stop().await?;
    ensure!(
        seen.failures.is_empty(),
        "{} of {} requests failed: during the rollout ({:.0}s) {rollout_failures:?}, during the scale-out ({:.0}s) {scale_failures:?}; first: {:?}",
        seen.failures.len(),
        seen.total() + seen.failures.len() as u64,
        rolled.as_secs_f64(),
        scaled.as_secs_f64(),
        seen.failures.iter().take(3).collect::<Vec<_>>()
    );
    api.expect_counts(&seen.answered, &links).await?;
    println!(
        "    rollout {:.0}s, scale-out to 5 {:.0}s, {} redirects, none failed, all counted",
        rolled.as_secs_f64(),
        scaled.as_secs_f64(),
        seen.total()
    );
    Ok(())
}
