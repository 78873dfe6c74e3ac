//! The locally built operator, run as a child process with the chart's ServiceAccount.
//!
//! It never gets the admin credentials: its kubeconfig carries a token minted for the
//! ServiceAccount the chart installs (TokenRequest, `kubectl create token`), so every call
//! it makes is authorised by exactly the chart's RBAC.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::{Result, kubectl, must};
use crate::ensure;

pub const RELEASE: &str = "shortener-operator";
/// The chart's ServiceAccount and the Lease the replicas compete for.
pub const SERVICE_ACCOUNT: &str = "shortener-operator";
pub const LEASE: &str = "shortener-operator";

/// Writes a kubeconfig for the chart's ServiceAccount: the admin kubeconfig's server and CA,
/// and a fresh token from the TokenRequest API.
pub fn service_account_kubeconfig(namespace: &str, path: &Path) -> Result {
    let token = kubectl(&[
        "create",
        "token",
        SERVICE_ACCOUNT,
        "-n",
        namespace,
        "--duration=3h",
    ])?;
    let admin: serde_json::Value = serde_json::from_str(&must(
        "kubectl",
        &[
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            "json",
        ],
        None,
    )?)?;
    let cluster = admin
        .pointer("/clusters/0/cluster")
        .ok_or("the admin kubeconfig has no cluster")?;
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "e2e", "cluster": cluster }],
        "users": [{ "name": SERVICE_ACCOUNT, "user": { "token": token.trim() } }],
        "contexts": [{ "name": "e2e", "context": { "cluster": "e2e", "user": SERVICE_ACCOUNT } }],
        "current-context": "e2e",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

/// One `shortener-operator run` process.
pub struct OperatorProcess {
    pub identity: String,
    pub metrics_port: u16,
    pub log: PathBuf,
    child: Child,
}

impl OperatorProcess {
    pub fn start(
        identity: &str,
        kubeconfig: &Path,
        lease_namespace: &str,
        logs: &Path,
    ) -> Result<Self> {
        Self::start_with(identity, kubeconfig, lease_namespace, logs, &[])
    }

    /// As `start`, with more arguments for `run`.
    pub fn start_with(
        identity: &str,
        kubeconfig: &Path,
        lease_namespace: &str,
        logs: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        let metrics_port = free_port()?;
        let log = logs.join(format!("operator-{identity}.log"));
        let out = File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_shortener-operator"))
            .args([
                "run",
                "--metrics-addr",
                &format!("127.0.0.1:{metrics_port}"),
                "--lease-namespace",
                lease_namespace,
                "--lease-name",
                LEASE,
                "--identity",
                identity,
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,shortener_operator=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Self {
            identity: identity.to_string(),
            metrics_port,
            log,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }

    /// SIGKILL: no lease release, as when a node dies.
    pub fn kill(&mut self) -> Result {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 20 s.
    pub async fn stop(&mut self) -> Result {
        if self.exited()? {
            return Ok(());
        }
        // The shell's own `kill`: std has no way to send SIGTERM, and /bin/kill may be absent.
        let _ = must(
            "sh",
            &["-c", "kill -TERM \"$1\"", "sh", &self.pid().to_string()],
            None,
        );
        for _ in 0..200 {
            if self.exited()? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The body of its `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or("malformed HTTP response")?;
        ensure!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "GET /metrics: {head}"
        );
        Ok(body.to_string())
    }

    /// The value of the `shortener_operator_leader` gauge.
    pub async fn is_leader(&self) -> Result<bool> {
        let metrics = self.metrics().await?;
        let value = metric(&metrics, "shortener_operator_leader")
            .ok_or("no shortener_operator_leader in /metrics")?;
        Ok(value == 1.0)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A sample's value: the line `name value` or the sum of `name{labels} value` lines.
pub fn metric(metrics: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if series == name || series.starts_with(&format!("{name}{{")) {
            let value: f64 = value.parse().ok()?;
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total
}

/// The sample of `name` whose labels contain every `label="value"` given.
pub fn metric_with(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Holder and duration of the leader-election Lease, if it exists.
pub async fn lease(client: &Client, namespace: &str) -> Result<Option<(Option<String>, i32)>> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(LEASE).await?.map(|lease| {
        let spec = lease.spec.unwrap_or_default();
        (
            spec.holder_identity.filter(|h| !h.is_empty()),
            spec.lease_duration_seconds.unwrap_or_default(),
        )
    }))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
