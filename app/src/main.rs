use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shortener::cache::CacheConfig;
use shortener::config::{AuthMode, DatabaseConfig, LogFormat, ServeConfig};
use shortener::events::BatchConfig;
use shortener::http::{self, Auth};
use shortener::store::{self, DynStore, StoreError};
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

async fn serve(config: ServeConfig, traces: bool) -> anyhow::Result<()> {
    if config.auth_mode == AuthMode::ApiKey && config.admin_api_key.is_none() {
        tracing::warn!(
            "AUTH_MODE=api-key without ADMIN_API_KEY: every management request will be refused"
        );
    }
    let store = connect(&config.database).await?;
    let auth = Auth::new(config.auth_mode, config.admin_api_key.as_deref());
    let app = shortener::build(store, options(&config, auth))?;
    match tokio::time::timeout(WARM_PATIENCE, app.warm(config.cache.cache_warm_entries)).await {
        Ok(Ok(count)) => tracing::info!(entries = count, "cache warmed"),
        Ok(Err(err)) => tracing::warn!(error = %err, "cache warm-up failed; starting cold"),
        Err(_) => tracing::warn!("cache warm-up took too long; starting cold"),
    }
    let shortener::App {
        state,
        click_writer,
    } = app;
    let http_options = http::HttpOptions {
        request_timeout: config.request_timeout(),
        access_log: config.access_log,
        traces,
    };
    let router = http::router(state, http_options);
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
    let server = tokio::spawn(http::serve(listener, router, shutdown));
    // After the signal, in-flight requests and queued clicks get `grace`
    // to finish.
    let deadline = async {
        let _ = stopping_rx.await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(deadline);
    tokio::select! {
        result = server => result.context("server task failed")?.context("server error")?,
        () = &mut deadline => {
            tracing::warn!("grace period over; exiting with requests still in flight");
            return Ok(());
        }
    }
    // The router (and with it the last handle to the click recorder) is
    // gone: the writer flushes what is queued and ends.
    tokio::select! {
        _ = click_writer => tracing::info!("clicks flushed"),
        () = &mut deadline => tracing::warn!("grace period over before clicks were flushed"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long start-up may spend warming the caches.
const WARM_PATIENCE: Duration = Duration::from_secs(10);

fn options(config: &ServeConfig, auth: Auth) -> shortener::AppOptions {
    let cache = &config.cache;
    let clicks = &config.clicks;
    let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    shortener::AppOptions {
        auth,
        rate_limit: http::RateLimit::new(
            config.rate_limit_per_minute,
            config.rate_limit_burst,
            config.trust_proxy_headers,
        ),
        public_base_url: config.public_base_url.clone(),
        cache: CacheConfig {
            capacity: cache.cache_capacity,
            local_ttl: Duration::from_secs(cache.local_cache_ttl_seconds),
            negative_ttl: Duration::from_secs(cache.negative_cache_ttl_seconds),
            shared_ttl: Duration::from_secs(cache.cache_ttl_seconds),
        },
        redis_url: config.redis_url.clone(),
        redis_key_prefix: cache.redis_key_prefix.clone(),
        redis_timeout: Duration::from_millis(cache.redis_timeout_ms),
        clicks: BatchConfig {
            max_batch: as_usize(clicks.click_batch_max),
            queue_capacity: as_usize(clicks.click_queue_capacity),
            spill_capacity: as_usize(clicks.click_spill_capacity),
            writers: as_usize(clicks.click_writers),
        },
    }
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
