//! The real tier of the end-to-end suite: the stack on a node that runs containers.
//!
//! Runs against the real node of `scripts/cluster.sh up --real-node` (`$KUBECONFIG`, with
//! `kubectl` and `helm` on PATH, and `SHORTENER_INGRESS_URL` / `SHORTENER_GATEWAY_URL`, the
//! node's Ingress controller on loopback ports): `scripts/e2e.sh --real-node` brings it up,
//! loads our images (`scripts/images.sh load`) and runs this.
//!
//! ```text
//! cargo test -p shortener-operator --test real -- --ignored [NAME-FILTER...]
//! ```
//!
//! Unlike the kwok tier, nothing here is simulated: the operator chart is installed as a
//! newcomer installs it and the operator runs in the cluster from its image, the examples are
//! applied as they are written, every pod becomes Ready through its real probes, and every
//! request goes through the Ingress controller's pod to the app's pods. The tests run in the
//! order below and share the installation; the last ones delete what the first created.

mod autoscaling;
mod backup;
mod cloudnative_pg;
#[path = "../e2e/cluster.rs"]
#[allow(dead_code)] // shared with the kwok tier, which uses all of it
mod cluster;
mod faults;
mod gateway;
#[path = "../e2e/harness.rs"]
mod harness;
mod install;
mod links;
mod monitoring;
mod network;
mod stack;
mod traffic;
mod upgrade;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Instant;

use kube::Client;

use crate::cluster::{Result, run};
use crate::harness::Args;

/// Where the operator chart is installed, as its README says.
pub const OPERATOR_NAMESPACE: &str = "shortener-system";
pub const RELEASE: &str = "shortener-operator";

type TestFuture<'a> = Pin<Box<dyn Future<Output = Result> + 'a>>;

struct Test {
    name: &'static str,
    run: fn(&'static Real) -> TestFuture<'static>,
}

macro_rules! test {
    ($module:ident :: $name:ident) => {{
        fn run(real: &'static Real) -> TestFuture<'static> {
            Box::pin($module::$name(real))
        }
        Test {
            name: concat!(stringify!($module), "::", stringify!($name)),
            run,
        }
    }};
}

/// Every test, in the order they run.
fn tests() -> Vec<Test> {
    vec![
        test!(install::the_operator_runs_in_the_cluster_from_its_image),
        test!(install::the_minimal_example_serves_through_the_ingress),
        test!(upgrade::a_helm_upgrade_of_the_operator_restarts_no_pod_of_the_stack),
        test!(upgrade::an_app_build_older_than_the_schema_still_starts),
        test!(links::shortlinks_sync_through_the_operator),
        test!(monitoring::the_stack_is_scraped_as_its_service_monitors_say),
        test!(monitoring::every_rule_loads_and_selects_series),
        test!(network::network_policies_are_enforced),
        test!(faults::no_answered_redirect_loses_its_click_when_pods_die),
        test!(faults::rollout_and_scale_out_fail_no_request),
        test!(autoscaling::load_raises_the_replicas_and_idle_lowers_them),
        test!(backup::a_backup_restores_every_row_after_the_data_is_lost),
        test!(install::deleting_the_shortener_keeps_the_volume),
        test!(install::the_full_example_serves_through_the_ingress),
        test!(cloudnative_pg::a_cloud_native_pg_database_fails_over_without_losing_a_click),
        test!(gateway::an_httproute_serves_through_the_gateway),
    ]
}

/// What the tests share.
pub struct Real {
    pub client: Client,
    /// Repository root (charts/, manifests/).
    pub root: PathBuf,
    /// The Ingress controller's entry point for Ingresses of class nginx.
    pub ingress_url: String,
    /// Its entry point for the shared Gateway's HTTP listener.
    pub gateway_url: Option<String>,
    /// Its HTTPS entry point, for Ingresses with a `tls` section.
    pub ingress_tls_url: Option<String>,
    /// The node's Prometheus (scripts/cluster-monitoring.sh).
    pub prometheus_url: Option<String>,
}

impl Real {
    async fn set_up(root: PathBuf) -> Result<Self> {
        let client = Client::try_default().await.map_err(|e| {
            format!("no cluster: {e}; run scripts/e2e.sh --real-node, or set KUBECONFIG")
        })?;
        let ingress_url = std::env::var("SHORTENER_INGRESS_URL").map_err(|_| {
            "SHORTENER_INGRESS_URL is not set: eval \"$(scripts/cluster.sh env)\" with the real node up"
        })?;
        // A CRD left by an earlier installation is not upgraded by `helm upgrade` (Helm
        // installs crds/ once): apply the chart's, as the upgrade notes tell users to.
        let crds = root.join("charts/shortener-operator/crds");
        crate::cluster::kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &crds.to_string_lossy(),
        ])?;
        Ok(Self {
            client,
            root,
            ingress_url,
            gateway_url: std::env::var("SHORTENER_GATEWAY_URL").ok(),
            prometheus_url: std::env::var("SHORTENER_PROMETHEUS_URL").ok(),
            ingress_tls_url: std::env::var("SHORTENER_INGRESS_TLS_URL").ok(),
        })
    }

    /// Leaves the cluster as found: what the tests created, then the chart.
    async fn tear_down(&self) {
        if let Err(error) = install::remove_links_and_its_volume() {
            eprintln!("real: cleanup: {error}");
        }
        report(run(
            "kubectl",
            &[
                "-n",
                "shortener",
                "delete",
                "shortener/links",
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ],
            None,
        ));
        report(run(
            "kubectl",
            &[
                "delete",
                "namespace",
                "shortener",
                "network-check",
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        ));
        // Before the operator goes: a ShortLink's finalizer needs it.
        report(run(
            "kubectl",
            &[
                "delete",
                "shortlinks",
                "--all",
                "--all-namespaces",
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ],
            None,
        ));
        report(run(
            "helm",
            &[
                "uninstall",
                RELEASE,
                "-n",
                OPERATOR_NAMESPACE,
                "--wait",
                "--ignore-not-found",
            ],
            None,
        ));
        // Helm leaves crds/ in place; the suite applied it, so it removes it.
        report(run(
            "kubectl",
            &[
                "delete",
                "crd",
                "shorteners.shortener.dev",
                "shortlinks.shortener.dev",
                "--ignore-not-found",
            ],
            None,
        ));
    }
}

fn report(result: Result<cluster::Output>) {
    match result {
        Ok(out) if !out.success => eprintln!("real: cleanup: {}", out.stderr.trim()),
        Ok(_) => {}
        Err(error) => eprintln!("real: cleanup: {error}"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let selected: Vec<Test> = tests()
        .into_iter()
        .filter(|t| args.selects(t.name))
        .collect();
    let names: Vec<&str> = selected.iter().map(|t| t.name).collect();
    let skipped = "they need the real node. Run scripts/e2e.sh --real-node.";
    let runtime = match harness::prepare("real", &args, &names, skipped) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    runtime.block_on(run_suite(root, selected))
}

async fn run_suite(root: PathBuf, tests: Vec<Test>) -> ExitCode {
    let started = Instant::now();
    println!("running {} tests", tests.len());
    let real: &'static Real = match Real::set_up(root).await {
        Ok(real) => Box::leak(Box::new(real)),
        Err(error) => {
            eprintln!("real: setting up failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = Vec::new();
    for test in &tests {
        let test_started = Instant::now();
        let outcome = harness::outcome((test.run)(real)).await;
        let elapsed = test_started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => println!("test {} ... ok ({elapsed:.1}s)", test.name),
            Err(error) => {
                println!("test {} ... FAILED ({elapsed:.1}s)\n    {error}", test.name);
                stack::diagnose();
                failed.push(test.name);
            }
        }
    }
    if std::env::var_os("REAL_KEEP").is_none() {
        real.tear_down().await;
    }
    harness::summary(started, tests.len(), &failed)
}
