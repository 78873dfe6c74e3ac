//! Autoscaling on the real node: the HorizontalPodAutoscaler the operator makes for
//! `spec.app.autoscaling` reads the app pods' CPU from metrics-server (the resource metrics
//! API of scripts/cluster-monitoring.sh); load through the Ingress raises the replica count,
//! idle lowers it, and while pods come and go no redirect fails or goes uncounted.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Api;

use crate::cluster::{Result, eventually, kubectl};
use crate::faults::links;
use crate::stack::{RECOVERY, patch_links, wait_pods_ready};
use crate::traffic::{Seen, Stream};
use crate::{Real, ensure};

const MIN: i32 = 2;
const MAX: i32 = 4;
/// Clients sending redirects back to back: enough to keep the app pods far above their
/// CPU target (50 % of a 50m request) on this node's one shared CPU.
const LOAD_CLIENTS: usize = 16;
/// Scale-up and scale-down on this node take a metrics window (15 s), a sync of the
/// autoscaler (15 s), the scale-down window set below (30 s) and the pods' start or drain.
const SCALING: Duration = Duration::from_secs(300);

/// The autoscaler on, CPU target 50 %, 2 to 4 replicas, scale-down window 30 s (the
/// HorizontalPodAutoscaler's `behavior`, passed through; the default is 5 minutes).
const AUTOSCALING_ON: &str = r#"{"spec":{"app":{"autoscaling":{
    "minReplicas":2,"maxReplicas":4,"targetCpuUtilizationPercent":50,
    "behavior":{"scaleDown":{"stabilizationWindowSeconds":30,
        "policies":[{"type":"Percent","value":100,"periodSeconds":15}]}}}}}}"#;
const AUTOSCALING_OFF: &str = r#"{"spec":{"app":{"autoscaling":null}}}"#;

/// One look at the autoscaler and the Deployment it scales.
#[derive(Clone, PartialEq)]
struct Sample {
    /// The autoscaler's view: pods it counts, pods it wants, their CPU in % of the request.
    current: i32,
    desired: i32,
    cpu: Option<i32>,
    /// The Deployment's: replicas asked for, and Ready.
    replicas: i32,
    ready: i32,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = self.cpu.map_or("-".to_string(), |c| format!("{c}%"));
        write!(
            f,
            "autoscaler {}→{} (cpu {cpu}), deployment {} ready of {}",
            self.current, self.desired, self.ready, self.replicas
        )
    }
}

/// Replicas over time: a sample is kept when it differs from the one before.
struct Trace {
    started: Instant,
    hpas: Api<HorizontalPodAutoscaler>,
    deployments: Api<Deployment>,
    samples: Vec<(Duration, String, Sample)>,
}

impl Trace {
    async fn sample(&self) -> std::result::Result<Sample, String> {
        let hpa = self.hpas.get("links").await.map_err(|e| e.to_string())?;
        let deployment = self
            .deployments
            .get("links")
            .await
            .map_err(|e| e.to_string())?;
        let status = hpa.status.unwrap_or_default();
        let cpu = status
            .current_metrics
            .unwrap_or_default()
            .into_iter()
            .find_map(|m| m.resource.filter(|r| r.name == "cpu"))
            .and_then(|r| r.current.average_utilization);
        let ready = deployment.status.and_then(|s| s.ready_replicas);
        Ok(Sample {
            current: status.current_replicas.unwrap_or(0),
            desired: status.desired_replicas,
            cpu,
            replicas: deployment.spec.and_then(|s| s.replicas).unwrap_or(0),
            ready: ready.unwrap_or(0),
        })
    }

    /// Samples until `done` holds for one, within `timeout`; returns that sample.
    async fn until(
        &mut self,
        phase: &str,
        timeout: Duration,
        done: impl Fn(&Sample) -> bool,
    ) -> Result<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            let sample = self.sample().await;
            if let Ok(sample) = &sample {
                if self
                    .samples
                    .last()
                    .is_none_or(|(_, _, last)| last != sample)
                {
                    self.samples
                        .push((self.started.elapsed(), phase.to_string(), sample.clone()));
                }
                if done(sample) {
                    return Ok(sample.clone());
                }
            }
            if Instant::now() >= deadline {
                let last = match sample {
                    Ok(sample) => sample.to_string(),
                    Err(error) => error,
                };
                return Err(format!(
                    "{phase}: not reached after {timeout:?}; last: {last}\n{self}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, phase, sample) in &self.samples {
            writeln!(f, "      {:>5.0}s  {phase:<6} {sample}", at.as_secs_f64())?;
        }
        Ok(())
    }
}

fn merge(into: &mut BTreeMap<String, u64>, seen: &Seen) {
    for (code, n) in &seen.answered {
        *into.entry(code.clone()).or_default() += n;
    }
}

/// Autoscaling switched on for the running `default/links`: idle brings the app to the
/// minimum, a stream of redirects as fast as the node answers raises it, idle lowers it
/// again, and switching it off returns to `spec.app.replicas`. A trickle of redirects runs
/// throughout and the load on top of it: none fails, every one is counted. Prints the trace.
pub async fn load_raises_the_replicas_and_idle_lowers_them(real: &'static Real) -> Result {
    let (api, links) = links(real, "autoscale").await?;
    let deployments: Api<Deployment> = Api::namespaced(real.client.clone(), "default");
    let fixed = deployments
        .get("links")
        .await?
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or(0);
    let trickle = Stream::start(&api, &links, 1, Duration::from_millis(200));
    patch_links(AUTOSCALING_ON)?;
    let mut trace = Trace {
        started: Instant::now(),
        hpas: Api::namespaced(real.client.clone(), "default"),
        deployments: deployments.clone(),
        samples: Vec::new(),
    };
    // metrics-server answers for every pod: the autoscaler has a CPU figure.
    trace.until("start", RECOVERY, |s| s.cpu.is_some()).await?;
    let idle = trace
        .until("idle", SCALING, |s| {
            s.current == MIN && s.replicas == MIN && s.ready == MIN
        })
        .await?;
    let load = Stream::start(&api, &links, LOAD_CLIENTS, Duration::ZERO);
    let raised = trace
        .until("load", SCALING, |s| s.desired > MIN && s.ready == s.desired)
        .await;
    let under_load = load.stop().await?;
    let raised = raised?;
    let lowered = trace
        .until("idle", SCALING, |s| {
            s.current == MIN && s.replicas == MIN && s.ready == MIN
        })
        .await?;
    let trickled = trickle.stop().await?;
    patch_links(AUTOSCALING_OFF)?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(real.client.clone(), "default");
    eventually("the autoscaler removed", RECOVERY, || async {
        match hpas.get_opt("links").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await?;
    crate::stack::wait_pods_ready(
        &real.client,
        "default",
        "links",
        "app",
        usize::try_from(fixed)?,
        RECOVERY,
    )
    .await?;
    ensure!(
        under_load.failures.is_empty() && trickled.failures.is_empty(),
        "redirects failed while the app scaled: {:?}",
        under_load
            .failures
            .iter()
            .chain(&trickled.failures)
            .take(5)
            .collect::<Vec<_>>()
    );
    ensure!(
        raised.desired <= MAX,
        "the autoscaler wanted {} replicas, above maxReplicas {MAX}",
        raised.desired
    );
    let mut answered = BTreeMap::new();
    merge(&mut answered, &under_load);
    merge(&mut answered, &trickled);
    api.expect_counts(&answered, &links).await?;
    println!(
        "    idle at {} replicas (cpu {:?}%), load raised to {} ({} redirects under load, cpu {:?}%), idle lowered to {}; off: back to {fixed}; {} redirects, none failed, all counted",
        idle.ready,
        idle.cpu,
        raised.ready,
        under_load.total(),
        raised.cpu,
        lowered.ready,
        under_load.total() + trickled.total()
    );
    print!("{trace}");
    // The Shortener's default count again for the tests after this one: the node's 1 GiB
    // holds five app pods beside the add-ons, but not a backup Job's pod as well.
    kubectl(&[
        "-n",
        "default",
        "scale",
        "shortener",
        "links",
        "--replicas=3",
    ])?;
    wait_pods_ready(&real.client, "default", "links", "app", 3, RECOVERY).await?;
    Ok(())
}
