//! Talking to the cluster: `kubectl` and `helm` as a user runs them, the kube client for
//! typed reads, and polling with a deadline.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T = ()> = std::result::Result<T, Error>;

/// Fails the test with a message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// How often a condition is polled; never an assertion, only the pace of the loop.
const POLL: Duration = Duration::from_millis(500);
/// Long enough for a rollout on a busy two-core machine; tests fail well before a hang.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `probe` until it returns `Ok`, or fails with its last answer after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= deadline => {
                return Err(format!("{what}: still not true after {timeout:?}: {why}").into());
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Output of a command that ran to completion.
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    Ok(Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs a command that must succeed; returns its stdout.
pub fn must(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let out = run(program, args, stdin)?;
    ensure!(
        out.success,
        "`{program} {}` failed:\n{}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    Ok(out.stdout)
}

pub fn kubectl(args: &[&str]) -> Result<String> {
    must("kubectl", args, None)
}

pub fn kubectl_stdin(args: &[&str], stdin: &str) -> Result<Output> {
    run("kubectl", args, Some(stdin))
}

/// A command the API server must refuse; returns its error output.
pub fn kubectl_refused(args: &[&str]) -> Result<String> {
    let out = run("kubectl", args, None)?;
    ensure!(
        !out.success,
        "`kubectl {}` was accepted, expected a refusal:\n{}",
        args.join(" "),
        out.stdout
    );
    Ok(out.stderr)
}

/// `Warning:` lines the API server sent back (kubectl and helm print them on stderr).
pub fn api_warnings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|line| line.contains("Warning:") || line.contains("warnings.go"))
        .map(str::to_string)
        .collect()
}

pub fn resource(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn shortener_resource() -> ApiResource {
    resource("shortener.dev/v1alpha1", "Shortener", "shorteners")
}

/// Every kind the operator creates for a Shortener (apiVersion, kind, plural).
pub const CHILD_KINDS: &[(&str, &str, &str)] = &[
    ("v1", "Secret", "secrets"),
    ("v1", "ServiceAccount", "serviceaccounts"),
    ("v1", "ConfigMap", "configmaps"),
    ("v1", "Service", "services"),
    ("apps/v1", "StatefulSet", "statefulsets"),
    ("apps/v1", "Deployment", "deployments"),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    ),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("batch/v1", "Job", "jobs"),
    ("batch/v1", "CronJob", "cronjobs"),
    ("networking.k8s.io/v1", "Ingress", "ingresses"),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
    (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        "servicemonitors",
    ),
    (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        "prometheusrules",
    ),
];

pub fn api_of(client: &Client, ns: &str, kind: &str) -> Result<Api<DynamicObject>> {
    let (api_version, _, plural) = CHILD_KINDS
        .iter()
        .find(|(_, k, _)| *k == kind)
        .ok_or_else(|| format!("no child kind {kind}"))?;
    Ok(Api::namespaced_with(
        client.clone(),
        ns,
        &resource(api_version, kind, plural),
    ))
}

/// `Kind/name` of every object of the child kinds in `ns` matching `selector` (a kind the
/// cluster does not serve, such as HTTPRoute before the Gateway API is installed, has none).
pub async fn objects_labelled(
    client: &Client,
    ns: &str,
    selector: &str,
) -> Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    for (_, kind, _) in CHILD_KINDS {
        let api = api_of(client, ns, kind)?;
        let listed = match api.list(&ListParams::default().labels(selector)).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
            Err(error) => return Err(error.into()),
        };
        for object in listed {
            found.insert(format!("{kind}/{}", object.name_any()));
        }
    }
    Ok(found)
}

pub async fn get_opt(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Option<DynamicObject>> {
    Ok(api_of(client, ns, kind)?.get_opt(name).await?)
}

pub async fn delete(client: &Client, ns: &str, kind: &str, name: &str) -> Result {
    api_of(client, ns, kind)?
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// A value by JSON pointer, `Null` when absent.
pub fn at<'a>(value: &'a Value, pointer: &str) -> &'a Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

/// A CRD as the API server serves it.
pub fn crd(name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&kubectl(&[
        "get", "crd", name, "-o", "json",
    ])?)?)
}

/// The names of a served CRD's printer columns, in order.
pub fn printer_columns(crd: &Value) -> Vec<String> {
    at(crd, "/spec/versions/0/additionalPrinterColumns")
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
