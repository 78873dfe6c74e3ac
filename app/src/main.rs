use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shortener::config::{DatabaseConfig, LogFormat, ServeConfig};
use shortener::service::{self, Service};
use shortener::{seed, telemetry};

/// The service allocates a little per request (headers, the click, the
/// batch); mimalloc's per-thread free lists make that cheaper than glibc's
/// malloc (see docs/decisions.md for the measurement).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "shortener",
    version,
    about = "A URL shortener for platform teams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(Box<ServeConfig>),
    /// Seed data in the platform's CSV format.
    #[command(subcommand)]
    Seed(SeedCommand),
}

#[derive(Subcommand)]
enum SeedCommand {
    /// Write deterministic users.csv, urls.csv and events.csv.
    Generate {
        #[arg(long, default_value = "seed_data")]
        out: PathBuf,
    },
    /// Load users.csv, urls.csv and events.csv from DIR (idempotent).
    Load {
        dir: PathBuf,
        #[command(flatten)]
        database: DatabaseConfig,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            if let Err(problem) = config.validate() {
                eprintln!("error: {problem}");
                std::process::exit(2);
            }
            let telemetry = match telemetry::init(config.log_format, Some(&config.traces)) {
                Ok(telemetry) => telemetry,
                Err(err) => {
                    eprintln!("error: {err:#}");
                    std::process::exit(2);
                }
            };
            if let Some(url) = config.traces.traces_url() {
                tracing::info!(
                    url = %url,
                    sampler = ?config.traces.otel_traces_sampler,
                    ratio = config.traces.otel_traces_sampler_arg,
                    "exporting traces"
                );
            }
            let exporting = telemetry.exporting();
            let result = serve(*config, exporting).await;
            // Also after a failed start: the spans of what went wrong.
            telemetry.shutdown().await;
            result
        }
        Command::Seed(SeedCommand::Generate { out }) => {
            seed::generate::write_dir(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote users.csv, urls.csv and events.csv to {}",
                out.display()
            );
            Ok(())
        }
        Command::Seed(SeedCommand::Load { dir, database }) => {
            let _logs = telemetry::init(LogFormat::Text, None)?;
            let store = service::connect(&database).await?;
            let outcome = seed::load_dir(store.as_ref(), &dir).await?;
            println!(
                "loaded {} users, {} urls, {} events from {} (rows already present were skipped)",
                outcome.users,
                outcome.urls,
                outcome.events,
                dir.display()
            );
            Ok(())
        }
    }
}

async fn serve(config: ServeConfig, traces: bool) -> anyhow::Result<()> {
    let addr = config.listen_addr;
    let service = Service::start(config, traces).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    service.serve(listener, wait_for_signal()).await
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
