//! End-to-end suite: the operator on a real Kubernetes control plane.
//!
//! Runs against the cluster of `$KUBECONFIG` (an admin kubeconfig), with `kubectl` and
//! `helm` on PATH: `scripts/e2e.sh` brings a local control plane up for it, or use kind.
//!
//! ```text
//! cargo test -p shortener-operator --test e2e -- --ignored [NAME-FILTER...]
//! ```
//!
//! The suite installs the operator chart (CRDs included) with the chart's Deployment scaled
//! to 0, mints a token for the chart's ServiceAccount and runs the locally built
//! `shortener-operator run` as a child process with it, so the chart's RBAC is the only
//! authority the operator has. Tests run one after another, in the order below (the last
//! uninstalls the chart), each in its own namespace, which is deleted afterwards.
//!
//! Its own harness instead of libtest's: the tests share one installation and one operator
//! process that must be stopped at the end whatever happened, and they run in a fixed order.
//! Without `--ignored` it prints that it was skipped, so a plain `cargo test` needs no cluster.

mod changes;
mod chart;
mod cluster;
mod drift;
mod gateway;
mod harness;
mod install;
mod leader;
mod lifecycle;
mod links;
mod operator;
mod placement;
mod privilege;
mod pruning;
mod roles;
mod settings;
mod stack;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::cluster::{Result, TIMEOUT, eventually, kubectl, run};
use crate::harness::Args;
use crate::operator::{OperatorProcess, RELEASE};

/// Label on every namespace and PersistentVolume the suite creates (value: the namespace).
pub const SUITE_LABEL: &str = "shortener-e2e/namespace";
/// Where the chart is installed; the Lease lives here too.
pub const OPERATOR_NAMESPACE: &str = "shortener-e2e-system";
const SHORTENER_CRD: &str = "shorteners.shortener.dev";
const LINK_CRD: &str = "shortlinks.shortener.dev";
const MONITORING_CRDS: [&str; 2] = [
    "servicemonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
];

type TestFuture<'a> = Pin<Box<dyn Future<Output = Result> + 'a>>;

struct Test {
    name: &'static str,
    run: fn(&Ctx) -> TestFuture<'_>,
}

macro_rules! test {
    ($module:ident :: $name:ident) => {{
        fn run(ctx: &Ctx) -> TestFuture<'_> {
            Box::pin($module::$name(ctx))
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
        test!(install::operator_chart_installs_without_warnings),
        test!(install::minimal_example_becomes_ready),
        test!(install::full_example_becomes_ready),
        test!(install::external_database_example_becomes_ready),
        test!(install::cloud_native_pg_example_without_its_operator_is_reported),
        test!(install::shortener_chart_becomes_ready),
        test!(changes::scale_through_the_subresource_and_the_spec),
        test!(changes::app_setting_change_rolls_the_deployment),
        test!(changes::cel_rules_reject_shrink_and_immutable_changes),
        test!(placement::pod_options_reach_the_pods_and_the_cel_rules_guard_them),
        test!(placement::autoscaling_takes_over_the_replica_count_without_a_reset),
        test!(settings::the_api_server_admits_exactly_the_described_ranges),
        test!(links::a_shortlink_is_admitted_as_the_service_would_and_waits_for_its_shortener),
        test!(changes::volume_growth_the_cluster_refuses_is_reported),
        // Before the Gateway API is installed (by the next ones, for the rest of the suite).
        test!(gateway::a_route_without_the_gateway_api_is_reported),
        test!(gateway::the_api_server_refuses_an_ingress_and_a_route_together),
        test!(gateway::the_route_attaches_to_the_gateway_and_reports_its_answer),
        test!(gateway::switching_between_ingress_and_route_prunes_the_other),
        test!(privilege::redis_requires_the_generated_password),
        test!(privilege::metrics_are_not_routed_and_the_examples_require_the_api_key),
        test!(privilege::network_policies_admit_only_the_stack_flows),
        test!(privilege::snippet_annotations_are_refused),
        test!(privilege::an_object_it_did_not_create_is_left_alone),
        test!(privilege::namespaced_install_grants_nothing_outside_its_namespaces),
        test!(roles::each_database_role_has_its_own_credentials_and_the_setup_job_runs_the_sql),
        test!(roles::a_failed_role_setup_job_is_reported_until_it_succeeds),
        test!(roles::postgres_eviction_waits_for_a_maintenance_window),
        test!(drift::deleted_service_and_edited_deployment_are_restored),
        test!(pruning::disabled_components_are_pruned_and_lookalikes_survive),
        test!(lifecycle::pause_leaves_children_alone_until_resumed),
        test!(lifecycle::deleting_the_shortener_collects_children_and_keeps_the_volume),
        test!(leader::standby_takes_over_when_the_leader_dies),
        test!(chart::operator_chart_upgrade_and_uninstall_leave_no_operator_objects),
    ]
}

/// What the tests share: the installation and the operator processes.
pub struct Suite {
    pub client: Client,
    /// Repository root (charts/, manifests/).
    pub root: PathBuf,
    /// Logs, kubeconfig and scratch files: target/e2e.
    pub work: PathBuf,
    pub operator_kubeconfig: PathBuf,
    /// stderr of `helm install` of the operator chart (API server warnings).
    pub install_stderr: String,
    pub operators: tokio::sync::Mutex<Vec<OperatorProcess>>,
    pub chart_installed: AtomicBool,
    monitoring_crds_installed_here: bool,
    /// The suite installed the Gateway API CRDs (`scripts/gateway-api.sh install`), so it
    /// removes them at the end.
    pub gateway_api_installed_here: AtomicBool,
}

/// One test's view: the suite and its own namespace.
pub struct Ctx {
    pub suite: &'static Suite,
    pub client: Client,
    pub ns: String,
}

impl Suite {
    async fn set_up(root: PathBuf) -> Result<Self> {
        let work = root.join("target/e2e");
        std::fs::create_dir_all(&work)?;
        let client = Client::try_default().await.map_err(|e| {
            format!("no cluster: {e}; set KUBECONFIG to an admin kubeconfig (scripts/e2e.sh does)")
        })?;

        // A release left by an interrupted run would make the install fail.
        if run("helm", &["status", RELEASE, "-n", OPERATOR_NAMESPACE], None)?.success {
            eprintln!("e2e: uninstalling the release left by an earlier run");
            run(
                "helm",
                &["uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait"],
                None,
            )?;
        }

        // ServiceMonitor and PrometheusRule are created only where their CRDs are served.
        let mut monitoring_crds_installed_here = false;
        if !run("kubectl", &["get", "crd", MONITORING_CRDS[0]], None)?.success {
            kubectl(&[
                "apply",
                "-f",
                &root
                    .join("operator/tests/e2e/monitoring-crds.yaml")
                    .to_string_lossy(),
            ])?;
            monitoring_crds_installed_here = true;
        }
        for crd in MONITORING_CRDS {
            kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}"),
            ])?;
        }

        // The chart's own Deployment is scaled to 0: under kwok its pod would run nothing
        // anyway, but on a cluster with the image loaded (kind) a second operator would
        // compete for the Lease with the process under test.
        let chart = root.join("charts/shortener-operator");
        let install = run(
            "helm",
            &[
                "install",
                RELEASE,
                &chart.to_string_lossy(),
                "-n",
                OPERATOR_NAMESPACE,
                "--create-namespace",
                "--set",
                "replicaCount=0",
                "--wait",
                "--timeout",
                "2m",
            ],
            None,
        )?;
        if !install.success {
            return Err(format!("helm install failed: {}", install.stderr).into());
        }
        kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{SHORTENER_CRD}"),
            &format!("crd/{LINK_CRD}"),
        ])?;

        let operator_kubeconfig = work.join("operator.kubeconfig");
        operator::service_account_kubeconfig(OPERATOR_NAMESPACE, &operator_kubeconfig)?;
        let suite = Self {
            client,
            root,
            work,
            operator_kubeconfig,
            install_stderr: install.stderr,
            operators: tokio::sync::Mutex::new(Vec::new()),
            chart_installed: AtomicBool::new(true),
            monitoring_crds_installed_here,
            gateway_api_installed_here: AtomicBool::new(false),
        };
        Ok(suite)
    }

    /// Starts one more replica and waits until it serves /metrics.
    pub async fn start_operator(&self, identity: &str) -> Result {
        let process = OperatorProcess::start(
            identity,
            &self.operator_kubeconfig,
            OPERATOR_NAMESPACE,
            &self.work,
        )?;
        let serving = eventually(
            &format!("operator {identity} serving /metrics"),
            TIMEOUT,
            || {
                let process = &process;
                async move {
                    process
                        .metrics()
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("{e}; log:\n{}", process.log_tail(5)))
                }
            },
        )
        .await;
        self.operators.lock().await.push(process);
        serving
    }

    async fn tear_down(&self) {
        for process in self.operators.lock().await.iter_mut() {
            if let Err(error) = process.stop().await {
                eprintln!("e2e: stopping operator {}: {error}", process.identity);
            }
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let suite_objects = ListParams::default().labels(SUITE_LABEL);
        if let Ok(list) = namespaces.list(&suite_objects).await {
            for ns in list.items {
                let _ = namespaces
                    .delete(
                        &ns.metadata.name.unwrap_or_default(),
                        &DeleteParams::default(),
                    )
                    .await;
            }
        }
        if self.chart_installed.load(Ordering::SeqCst) {
            report(run(
                "helm",
                &["uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait"],
                None,
            ));
        }
        // Helm leaves the CRDs of crds/ in place (see the chart test); the suite installed
        // this one, so it removes it, and with it any Shortener left.
        report(run(
            "kubectl",
            &[
                "delete",
                "crd",
                SHORTENER_CRD,
                LINK_CRD,
                "--ignore-not-found",
            ],
            None,
        ));
        if self.monitoring_crds_installed_here {
            for crd in MONITORING_CRDS {
                report(run(
                    "kubectl",
                    &["delete", "crd", crd, "--ignore-not-found"],
                    None,
                ));
            }
        }
        if self.gateway_api_installed_here.load(Ordering::SeqCst) {
            for crd in gateway::GATEWAY_API_CRDS {
                report(run(
                    "kubectl",
                    &["delete", "crd", crd, "--ignore-not-found", "--wait=false"],
                    None,
                ));
            }
        }
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let _ = volumes
            .delete_collection(&DeleteParams::default(), &suite_objects)
            .await;
        report(run(
            "kubectl",
            &[
                "delete",
                "namespace",
                OPERATOR_NAMESPACE,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        ));
        // Leave the cluster as found: wait (bounded) for the namespaces to be finalised.
        let gone = eventually("the suite's namespaces to be deleted", TIMEOUT, || async {
            let left = namespaces
                .list(&suite_objects)
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} left"))
            }
        })
        .await;
        if let Err(error) = gone {
            eprintln!("e2e: {error}");
        }
    }

    async fn create_namespace(&self, name: &str) -> Result {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": { SUITE_LABEL: name } },
        }))?;
        api.create(&PostParams::default(), &ns).await?;
        Ok(())
    }

    async fn delete_namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let _ = api.delete(name, &DeleteParams::default()).await;
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let _ = volumes
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&format!("{SUITE_LABEL}={name}")),
            )
            .await;
    }
}

fn report(result: Result<cluster::Output>) {
    match result {
        Ok(out) if !out.success => eprintln!("e2e: cleanup: {}", out.stderr.trim()),
        Ok(_) => {}
        Err(error) => eprintln!("e2e: cleanup: {error}"),
    }
}

/// Namespace of a test: `e2e-` and its function name, as a DNS label.
fn namespace_for(test: &str) -> String {
    let function = test.rsplit("::").next().unwrap_or(test);
    let mut name = format!("e2e-{}", function.replace('_', "-"));
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let selected: Vec<Test> = tests()
        .into_iter()
        .filter(|t| args.selects(t.name))
        .collect();
    let names: Vec<&str> = selected.iter().map(|t| t.name).collect();
    let skipped = "they need a cluster. Run scripts/e2e.sh, or `cargo test -p shortener-operator --test e2e -- --ignored` with KUBECONFIG set.";
    let runtime = match harness::prepare("e2e", &args, &names, skipped) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    runtime.block_on(run_suite(root, selected))
}

async fn run_suite(root: PathBuf, tests: Vec<Test>) -> ExitCode {
    let started = Instant::now();
    println!("running {} tests", tests.len());
    let suite: &'static Suite = match Suite::set_up(root).await {
        Ok(suite) => Box::leak(Box::new(suite)),
        Err(error) => {
            eprintln!("e2e: setting up the suite failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = suite.start_operator("e2e-0").await {
        eprintln!("e2e: starting the operator failed: {error}");
        suite.tear_down().await;
        return ExitCode::FAILURE;
    }
    let mut failed = Vec::new();
    for test in &tests {
        let ns = namespace_for(test.name);
        let test_started = Instant::now();
        let outcome = match suite.create_namespace(&ns).await {
            Err(error) => Err(format!("creating namespace {ns}: {error}")),
            Ok(()) => {
                let ctx = Ctx {
                    suite,
                    client: suite.client.clone(),
                    ns: ns.clone(),
                };
                harness::outcome((test.run)(&ctx)).await
            }
        };
        let elapsed = test_started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => println!("test {} ... ok ({elapsed:.1}s)", test.name),
            Err(error) => {
                println!("test {} ... FAILED ({elapsed:.1}s)\n    {error}", test.name);
                for process in suite.operators.lock().await.iter() {
                    println!(
                        "    operator {} log (last lines):\n{}",
                        process.identity,
                        process.log_tail(15)
                    );
                }
                failed.push(test.name);
            }
        }
        if std::env::var_os("E2E_KEEP_NAMESPACES").is_none() {
            suite.delete_namespace(&ns).await;
        }
    }
    suite.tear_down().await;
    harness::summary(started, tests.len(), &failed)
}
