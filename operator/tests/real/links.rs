//! ShortLinks on the running stack: declared as a GitOps tool declares them (200 objects in
//! one apply), synced into the service by the operator in its pod, through the app's Service
//! and its NetworkPolicy, followed through the Ingress. Re-applying them unchanged costs no
//! request; a changed declaration costs at most two per link; a code made through the API is
//! left alone; a deleted ShortLink's link stops redirecting.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use reqwest::StatusCode;
use serde_json::json;
use shortener_operator::shortlink::ShortLink;

use crate::cluster::{Result, eventually, kubectl, kubectl_stdin};
use crate::stack::{admin_key, pods_labelled};
use crate::traffic::Api as Service;
use crate::{OPERATOR_NAMESPACE, Real, ensure};

const NS: &str = "default";
const SHORTENER: &str = "links";
const COUNT: usize = 200;
/// The label every ShortLink of this test carries, to list and delete them together.
const LABEL: &str = "real-test=shortlinks";
/// Long enough for 200 links on a busy two-core node; the measured time is printed.
const CONVERGE: Duration = Duration::from_secs(240);
/// The counter of 429 answers, kept apart from the operator's families.
const PACED: &str = "429";

fn name(i: usize) -> String {
    format!("gitops-{i:03}")
}

fn target(i: usize, version: u32) -> String {
    format!("https://example.com/gitops/{i:03}?v={version}")
}

/// The 200 ShortLinks as one YAML stream, as a repository of manifests holds them.
fn manifests(version: u32) -> String {
    (0..COUNT)
        .map(|i| {
            format!(
                "apiVersion: shortener.dev/v1alpha1\nkind: ShortLink\nmetadata:\n  name: {n}\n  \
                 namespace: {NS}\n  labels:\n    real-test: shortlinks\nspec:\n  shortener: \
                 {SHORTENER}\n  code: {n}\n  target: \"{t}\"\n  owner: real-tier\n",
                n = name(i),
                t = target(i, version),
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn apply(yaml: &str) -> Result {
    let out = kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=gitops",
            "-f",
            "-",
        ],
        yaml,
    )?;
    ensure!(out.success, "kubectl apply: {}", out.stderr);
    Ok(())
}

/// The operator's ShortLink counters, read from its pod through the API server's proxy.
async fn operator_counters(real: &Real) -> Result<BTreeMap<String, f64>> {
    let pods = pods_labelled(
        &real.client,
        OPERATOR_NAMESPACE,
        "app.kubernetes.io/name=shortener-operator",
    )
    .await?;
    let mut sums = BTreeMap::new();
    for pod in pods {
        let path = format!(
            "/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods/{}:8080/proxy/metrics",
            pod.name_any()
        );
        let text = kubectl(&["get", "--raw", &path])?;
        for line in text.lines() {
            // The 429s the sync waited out, apart: the service's rate limits pacing it.
            if line.starts_with("shortener_operator_link_requests_total")
                && line.contains("status=\"429\"")
                && let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
            {
                *sums.entry(PACED.to_string()).or_insert(0.0) += value;
            }
            for family in [
                "shortener_operator_link_requests_total",
                "shortener_operator_link_status_writes_total",
                "shortener_operator_link_reconciliations_total",
            ] {
                if let Some(rest) = line.strip_prefix(family)
                    && let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
                {
                    *sums.entry(family.to_string()).or_insert(0.0) += value;
                }
            }
        }
    }
    Ok(sums)
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, family: &str) -> f64 {
    after.get(family).copied().unwrap_or(0.0) - before.get(family).copied().unwrap_or(0.0)
}

/// Waits until every labelled ShortLink is `Synced` for its current generation.
async fn all_synced(links: &Api<ShortLink>, expected: usize) -> Result<Duration> {
    let started = Instant::now();
    eventually("every ShortLink Synced", CONVERGE, || async {
        let list = links
            .list(&ListParams::default().labels(LABEL))
            .await
            .map_err(|e| e.to_string())?;
        let synced = list
            .items
            .iter()
            .filter(|l| {
                let status = l.status.as_ref();
                status.and_then(|s| s.observed_generation) == l.metadata.generation
                    && status.is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Synced" && c.status == "True")
                    })
            })
            .count();
        if synced == expected {
            Ok(())
        } else {
            Err(format!("{synced} of {expected} synced"))
        }
    })
    .await?;
    Ok(started.elapsed())
}

pub async fn shortlinks_sync_through_the_operator(real: &'static Real) -> Result {
    let outcome = shortlinks(real).await;
    // Removed whatever happened: a ShortLink left behind would hold its finalizer past the
    // operator's uninstall.
    let cleanup = kubectl(&[
        "-n",
        NS,
        "delete",
        "shortlinks",
        "-l",
        LABEL,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=180s",
    ]);
    outcome?;
    cleanup.map(|_| ())
}

async fn shortlinks(real: &'static Real) -> Result {
    let key = admin_key(&real.client, NS, SHORTENER).await?;
    let service = Service::new(&real.ingress_url, None, &key)?;
    service.wait_serving().await?;
    let links: Api<ShortLink> = Api::namespaced(real.client.clone(), NS);

    // A code someone took through the API first.
    let user = service.create_user("real-shortlinks").await?;
    let theirs = "https://example.com/made-through-the-api";
    service
        .post_json(
            "/urls",
            json!({ "original_url": theirs, "short_code": "taken-code", "user_id": user }),
        )
        .await?;
    let before = operator_counters(real).await?;
    apply(&format!("{}---\n{}", manifests(1), taken_manifest()))?;
    let took = all_synced(&links, COUNT).await;
    let created = operator_counters(real).await?;
    let took = took?;
    println!(
        "    {COUNT} ShortLinks synced {:.1}s after one apply: {} requests to the service ({} \
         of them answered 429 and sent again), {} status writes, {} passes",
        took.as_secs_f64(),
        delta(&before, &created, "shortener_operator_link_requests_total"),
        delta(&before, &created, PACED),
        delta(
            &before,
            &created,
            "shortener_operator_link_status_writes_total"
        ),
        delta(
            &before,
            &created,
            "shortener_operator_link_reconciliations_total"
        ),
    );

    let taken = eventually(
        "the ShortLink of a taken code says so",
        CONVERGE,
        || async {
            let link = links.get("taken").await.map_err(|e| e.to_string())?;
            let synced = link
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced").cloned());
            match synced {
                Some(c) if c.status == "False" && c.reason == "CodeTaken" => Ok(c.message),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let (status, location) = service.follow("taken-code").await?;
    ensure!(
        status == StatusCode::FOUND && location.as_deref() == Some(theirs),
        "the API's link was overwritten: {status} {location:?} ({taken})"
    );

    // Every declared code answers through the Ingress; a few are followed for the clicks.
    for i in [0, 57, COUNT - 1] {
        let (status, location) = service.follow(&name(i)).await?;
        ensure!(
            status == StatusCode::FOUND && location.as_deref() == Some(target(i, 1).as_str()),
            "GET /{} answered {status} {location:?}",
            name(i)
        );
    }
    for _ in 0..2 {
        service.follow(&name(0)).await?;
    }

    // The same manifests again, as a GitOps controller re-applies them every few minutes:
    // nothing changes, so nothing is asked of the service or written back.
    let quiet = operator_counters(real).await?;
    apply(&format!("{}---\n{}", manifests(1), taken_manifest()))?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after_reapply = operator_counters(real).await?;
    let requests = delta(
        &quiet,
        &after_reapply,
        "shortener_operator_link_requests_total",
    );
    let writes = delta(
        &quiet,
        &after_reapply,
        "shortener_operator_link_status_writes_total",
    );
    println!("    unchanged re-apply of {COUNT}: {requests} requests, {writes} status writes");
    ensure!(
        requests == 0.0 && writes == 0.0,
        "an unchanged re-apply cost {requests} requests and {writes} status writes"
    );

    // Every target changed: one GET and one PUT per link at most.
    apply(&format!("{}---\n{}", manifests(2), taken_manifest()))?;
    let took = all_synced(&links, COUNT).await?;
    let changed = operator_counters(real).await?;
    let all = delta(
        &after_reapply,
        &changed,
        "shortener_operator_link_requests_total",
    );
    let paced = delta(&after_reapply, &changed, PACED);
    let requests = all - paced;
    println!(
        "    {COUNT} targets changed, synced {:.1}s after the apply: {requests} requests ({:.2} a \
         link), and {paced} answered 429 and sent again",
        took.as_secs_f64(),
        requests / COUNT as f64
    );
    // A GET and a PUT per link; the service's rate limit may answer some 429 first (waited
    // out and sent again), never more often than the requests themselves.
    let at_most = 2 * COUNT;
    ensure!(
        (requests as usize) <= at_most && paced <= requests,
        "{requests} requests and {paced} 429s for {COUNT} changed links (at most {at_most})"
    );
    for i in [0, 123] {
        let (status, location) = service.follow(&name(i)).await?;
        ensure!(
            location.as_deref() == Some(target(i, 2).as_str()),
            "GET /{} answered {status} {location:?} after the change",
            name(i)
        );
    }
    // The clicks so far, read back with the change.
    let first = links.get(&name(0)).await?;
    let clicks = first.status.as_ref().and_then(|s| s.clicks).unwrap_or(0);
    ensure!(
        clicks >= 3,
        "{} says {clicks} clicks, 3 were answered",
        name(0)
    );

    // Deleting a ShortLink deactivates its link; the finalizer then lets the object go.
    links.delete(&name(7), &DeleteParams::default()).await?;
    eventually(
        "the deleted ShortLink's link deactivated",
        CONVERGE,
        || async {
            let (status, _) = service.follow(&name(7)).await.map_err(|e| e.to_string())?;
            let gone = links.get_opt(&name(7)).await.map_err(|e| e.to_string())?;
            if status == StatusCode::NOT_FOUND && gone.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "GET /{} answered {status}; object present: {}",
                    name(7),
                    gone.is_some()
                ))
            }
        },
    )
    .await?;
    println!("    a deleted ShortLink's code answers 404 and the object is gone");
    Ok(())
}

fn taken_manifest() -> String {
    "apiVersion: shortener.dev/v1alpha1\nkind: ShortLink\nmetadata:\n  name: taken\n  \
     namespace: default\n  labels:\n    real-test: shortlinks\nspec:\n  shortener: links\n  \
     code: taken-code\n  target: https://example.com/ours\n"
        .to_string()
}
