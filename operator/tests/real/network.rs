//! NetworkPolicies enforced by the node (kube-router), not only admitted by the API server.

use std::time::Duration;

use crate::cluster::{Result, eventually, kubectl, run};
use crate::{Real, ensure};

/// A pod that can open TCP connections: the PostgreSQL image's perl, as its own user.
fn prober(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: prober
  namespace: {ns}
spec:
  terminationGracePeriodSeconds: 0
  securityContext: {{ runAsNonRoot: true, runAsUser: 999 }}
  containers:
  - name: prober
    image: postgres:17
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    resources: {{ requests: {{ cpu: 10m, memory: 16Mi }}, limits: {{ memory: 64Mi }} }}
    securityContext: {{ allowPrivilegeEscalation: false, capabilities: {{ drop: [ALL] }} }}
"#
    )
}

/// Whether the prober in `ns` opens a TCP connection to `target` (host:port) within 3 s.
fn connects(ns: &str, target: &str) -> Result<bool> {
    let out = run(
        "kubectl",
        &[
            "-n",
            ns,
            "exec",
            "prober",
            "--",
            "perl",
            "-MIO::Socket::INET",
            "-e",
            "exit(IO::Socket::INET->new(PeerAddr => $ARGV[0], Timeout => 3) ? 0 : 7)",
            target,
        ],
        None,
    )?;
    match (out.success, out.stderr.contains("exit code 7")) {
        (true, _) => Ok(true),
        (false, true) => Ok(false),
        (false, false) => {
            Err(format!("the probe to {target} failed to run: {}", out.stderr).into())
        }
    }
}

fn start_prober(ns: &str) -> Result {
    let created = run("kubectl", &["create", "namespace", ns], None)?;
    ensure!(
        created.success || created.stderr.contains("AlreadyExists"),
        "kubectl create namespace {ns}: {}",
        created.stderr
    );
    let out = crate::cluster::kubectl_stdin(&["apply", "-f", "-"], &prober(ns))?;
    ensure!(out.success, "creating the prober in {ns}: {}", out.stderr);
    kubectl(&[
        "-n",
        ns,
        "wait",
        "pod/prober",
        "--for=condition=Ready",
        "--timeout=120s",
    ])?;
    Ok(())
}

/// From a namespace outside the stack, nothing of it answers; from the Ingress controller's
/// namespace only the app's HTTP port does. Both probes can succeed (the second proves it),
/// so a refusal is the policy's, not the probe's.
pub async fn network_policies_are_enforced(_real: &'static Real) -> Result {
    let svc = |name: &str, port: u16| format!("{name}.default.svc.cluster.local:{port}");
    let stores = [
        ("PostgreSQL", svc("links-postgres", 5432)),
        ("PgBouncer", svc("links-pgbouncer", 6432)),
        ("Redis", svc("links-redis", 6379)),
    ];
    // The app's Service listens on 80 and sends to the pods' 8080 (HTTP and /metrics).
    let app = svc("links", 80);

    start_prober("network-check")?;
    start_prober("ingress-nginx")?;
    // The policies may take a moment to reach the node's rules after the pod appears.
    eventually(
        "the app's port reachable from the Ingress controller's namespace",
        Duration::from_secs(60),
        || async {
            match connects("ingress-nginx", &app) {
                Ok(true) => Ok(()),
                Ok(false) => Err("refused".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    let mut reached = Vec::new();
    for (what, target) in stores
        .iter()
        .chain([&("the app (HTTP and /metrics)", app.clone())])
    {
        if connects("network-check", target)? {
            reached.push(format!("{what} ({target})"));
        }
    }
    for (what, target) in &stores {
        if connects("ingress-nginx", target)? {
            reached.push(format!(
                "{what} ({target}) from the Ingress controller's namespace"
            ));
        }
    }
    kubectl(&[
        "-n",
        "ingress-nginx",
        "delete",
        "pod",
        "prober",
        "--wait=false",
    ])?;
    kubectl(&["delete", "namespace", "network-check", "--wait=false"])?;
    ensure!(
        reached.is_empty(),
        "reached from outside the stack: {reached:?}"
    );
    println!(
        "    outside the stack: PostgreSQL, PgBouncer, Redis and the app refused; the app admitted from ingress-nginx"
    );
    Ok(())
}
