use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shortener::config::{AuthMode, DatabaseConfig, LogFormat, ServeConfig};
use shortener::http::{self, Auth};
use shortener::store::{self, DynStore, StoreError};
use shortener::{seed, telemetry};

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

/// How long start-up waits for the database (it may start after us).
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            if let Err(problem) = config.validate() {
                eprintln!("error: {problem}");
                std::process::exit(2);
            }
            telemetry::init(config.log_format);
            serve(*config).await
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
            telemetry::init(LogFormat::Text);
            let store = connect(&database).await?;
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

/// Connects, retrying while the database is unreachable (it may still be
/// starting), and applies migrations.
async fn connect(config: &DatabaseConfig) -> anyhow::Result<DynStore> {
    let url = config.resolve().context("creating the data directory")?;
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    loop {
        let migration_url = config.migration_database_url.as_deref();
        match store::connect(&url, config.pool_size, migration_url).await {
            Ok(store) => return Ok(store),
            Err(StoreError::Unavailable(err)) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err).context("opening the database"),
        }
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    if config.auth_mode == AuthMode::ApiKey && config.admin_api_key.is_none() {
        tracing::warn!(
            "AUTH_MODE=api-key without ADMIN_API_KEY: every management request will be refused"
        );
    }
    if config.redis_url.is_some() {
        tracing::info!("REDIS_URL is set; this version does not use a shared cache yet");
    }
    let store = connect(&config.database).await?;
    let auth = Auth::new(config.auth_mode, config.admin_api_key.as_deref());
    let state = shortener::app_state(store, auth, config.public_base_url.clone())?;
    let app = http::router(state, config.request_timeout());
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    tracing::info!(addr = %config.listen_addr, auth_mode = ?config.auth_mode, "listening");

    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stopping_tx.send(());
    };
    let server = tokio::spawn(http::serve(listener, app, shutdown));
    // After the signal, in-flight requests get `grace` to finish.
    tokio::select! {
        result = server => result.context("server task failed")?.context("server error")?,
        () = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("grace period over; exiting with requests still in flight"),
    }
    tracing::info!("stopped");
    Ok(())
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
