use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::FutureExt;
use kube::api::ListParams;
use kube::{Api, Client, CustomResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use shortener_operator::controller::{self, Context};
use shortener_operator::crd::Shortener;
use shortener_operator::metrics::Metrics;
use shortener_operator::server::{self, ServerState};
use shortener_operator::shortlink::{self, ShortLink};
use shortener_operator::{Error, render};

#[derive(Parser)]
#[command(
    name = "shortener-operator",
    version,
    about = "Runs URL-shortener stacks from Shortener resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (with leader election) and its metrics/health server.
    Run(RunArgs),
    /// Print the CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the controller would apply for the Shortener in FILE.
    Render {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "shortener-system")]
    lease_namespace: String,
    /// Unique identity of this replica in the election.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Name of the Lease object.
    #[arg(long, env = "LEASE_NAME", default_value = "shortener-operator")]
    lease_name: String,
    /// Apply `spec.ingress.annotations` that inject raw ingress-controller configuration
    /// (`*-snippet`); refused by default, since whoever may edit a Shortener gets them.
    #[arg(long, env = "ALLOW_SNIPPET_ANNOTATIONS")]
    allow_snippet_annotations: bool,
    /// Reconcile only the Shorteners of these namespaces (comma-separated), for an install
    /// whose RBAC is a Role in each; empty: every namespace (a ClusterRole).
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crds() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("could not encode YAML: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Render { file } => match render_file(&file) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("render failed: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            init_tracing();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("could not start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    error!(%error, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Every CRD of the operator, as one YAML stream (the Shortener's first).
fn crds() -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "{}---\n{}",
        serde_yaml::to_string(&Shortener::crd())?,
        serde_yaml::to_string(&ShortLink::crd())?
    ))
}

fn render_file(path: &PathBuf) -> Result<String, Error> {
    let yaml = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    render::render(&render::load(&yaml)?)
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .init();
}

#[derive(thiserror::Error, Debug)]
enum RunError {
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "the Shortener CRD is not served ({0}); install it with `shortener-operator crd | kubectl apply -f -`"
    )]
    CrdMissing(kube::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("metrics server: {0}")]
    Server(#[from] std::io::Error),
}

async fn run(args: RunArgs) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new()?);
    let ready = Arc::new(AtomicBool::new(false));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        let _ = shutdown_tx.send(true);
    });

    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    let app = server::router(ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    let server_shutdown = wait_until(shutdown_rx.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(server_shutdown)
            .await
    });

    let client = Client::try_default().await?;
    let watched: Vec<String> = args
        .watch_namespaces
        .iter()
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
        .collect();
    let probe = match watched.first() {
        Some(ns) => Api::<Shortener>::namespaced(client.clone(), ns),
        None => Api::<Shortener>::all(client.clone()),
    };
    probe
        .list(&ListParams::default().limit(1))
        .await
        .map_err(RunError::CrdMissing)?;
    ready.store(true, Ordering::Relaxed);

    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("shortener-operator-{}", std::process::id()));
    let lease = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader_rx, lease_task) = lease.watch().await;
    let ctx = Context::new(client.clone(), metrics.clone(), Some(identity.clone()));
    let ctx = ctx
        .allowing_snippet_annotations(args.allow_snippet_annotations)
        .in_namespace(&args.lease_namespace);
    let ctx = Arc::new(ctx);

    loop {
        // Standby: wait to be elected or told to stop.
        let mut shutdown = shutdown_rx.clone();
        while !*leader_rx.borrow_and_update() {
            tokio::select! {
                changed = leader_rx.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        if *shutdown_rx.borrow() || !*leader_rx.borrow() {
            break;
        }
        info!(%identity, "acquired leadership; starting controller");
        metrics.leader.set(1);
        let mut lost = leader_rx.clone();
        let stop = wait_until(shutdown_rx.clone());
        let stop = async move {
            tokio::select! {
                _ = stop => {},
                _ = lost.wait_for(|leader| !*leader) => warn!("lost leadership; stopping controller"),
            }
        }
        .shared();
        let links = async {
            if links_served(&client, &watched, stop.clone()).await {
                shortlink::sync::run(client.clone(), metrics.clone(), &watched, stop.clone()).await;
            }
        };
        tokio::join!(
            controller::run(client.clone(), ctx.clone(), &watched, stop.clone()),
            links
        );
        metrics.leader.set(0);
        if *shutdown_rx.borrow() {
            break;
        }
    }

    // Dropping the receiver makes the lease task release the lock, so a standby replica takes
    // over at once instead of waiting for the lease to expire.
    drop(leader_rx);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Err(error))) => warn!(%error, "lease release failed"),
        Ok(Err(error)) => warn!(%error, "lease task failed"),
        Err(_) => warn!("lease release timed out"),
        Ok(Ok(Ok(_))) => info!("lease released"),
    }
    match server.await {
        Ok(result) => result?,
        Err(error) => warn!(%error, "metrics server task failed"),
    }
    Ok(())
}

/// Waits until the ShortLink CRD is served (an upgrade may apply the chart's crds/ after the
/// operator starts); false if `stop` comes first. The Shorteners are run meanwhile.
async fn links_served(client: &Client, watched: &[String], stop: impl Future<Output = ()>) -> bool {
    let probe = match watched.first() {
        Some(ns) => Api::<ShortLink>::namespaced(client.clone(), ns),
        None => Api::<ShortLink>::all(client.clone()),
    };
    tokio::pin!(stop);
    let mut warned = false;
    loop {
        match probe.list(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(error) if !warned => {
                warn!(%error, "the ShortLink CRD is not served: ShortLinks wait for it");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = &mut stop => return false,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

async fn wait_until(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
