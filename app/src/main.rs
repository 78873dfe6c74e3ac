use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use shortener::config::{DatabaseConfig, LogFormat, MigrateConfig, RevocationFeed, ServeConfig};
use shortener::domain::timestamp;
use shortener::service::{self, Service};
use shortener::store::{KeyScope, Page, Schema};
use shortener::{keys, seed, telemetry};

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
    /// Apply the database migrations, print what was applied, and exit (idempotent; runs
    /// started together apply each migration once).
    Migrate(MigrateConfig),
    /// Seed data in the platform's CSV format.
    #[command(subcommand)]
    Seed(SeedCommand),
    /// API keys, straight on the database (no running service needed).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key and print it (on stdout, alone): it is shown only once.
    Create {
        /// What the key is for, e.g. the team or job.
        #[arg(long)]
        name: String,
        /// `admin`, `user` (needs --user-id) or `read-only`.
        #[arg(long, value_parser = KeyScope::parse)]
        scope: KeyScope,
        /// The user a `user` key (or a bound `read-only` key) is limited to.
        #[arg(long)]
        user_id: Option<i64>,
        /// Days until the key stops working; never when absent.
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// List every key (never the keys themselves).
    List {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Revoke a key: running replicas refuse it at once when told through
    /// their Redis (`REDIS_URL`), within `KEY_TRUST_SECS` otherwise.
    Revoke {
        id: i64,
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        feed: RevocationFeed,
    },
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
    // The settings' variables, defaults and help come from their description.
    let cli = shortener::config::described(Cli::command())
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .unwrap_or_else(|err| err.exit());
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
        Command::Migrate(config) => {
            let _logs = telemetry::init(LogFormat::Text, None)?;
            let report = service::migrate(&config).await?;
            for migration in &report.applied {
                println!("applied migration {migration}");
            }
            if report.applied.is_empty() {
                println!(
                    "nothing to apply: the {} migrations of this build were already applied",
                    report.already
                );
            } else {
                println!(
                    "applied {} migration(s); {} were already applied",
                    report.applied.len(),
                    report.already
                );
            }
            if !report.unknown.is_empty() {
                let versions: Vec<String> =
                    report.unknown.iter().map(ToString::to_string).collect();
                println!(
                    "the database also has migration(s) {} of a newer build (left as they are)",
                    versions.join(", ")
                );
            }
            Ok(())
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
            let store = service::connect(&database, Schema::Migrate).await?;
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
        Command::Keys(command) => {
            let _logs = telemetry::init(LogFormat::Text, None)?;
            manage_keys(command).await
        }
    }
}

async fn manage_keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            scope,
            user_id,
            expires_in_days,
            database,
        } => {
            let request = keys::KeyRequest {
                name,
                scope,
                user_id,
                expires_in_days,
                created_by: None,
            };
            if let Err((field, problem)) = request.check() {
                anyhow::bail!("--{}: {problem}", field.replace('_', "-"));
            }
            let store = service::connect(&database, Schema::Migrate).await?;
            let issued = keys::issue(store.as_ref(), request).await?;
            eprintln!(
                "issued key {} ({}, scope {}); it is shown only this once:",
                issued.key.id, issued.key.name, issued.key.scope
            );
            println!("{}", issued.secret);
        }
        KeysCommand::List { database } => {
            let store = service::connect(&database, Schema::Migrate).await?;
            println!("id\tscope\tuser\tprefix\tcreated\texpires\trevoked\tlast used\tname");
            let show = |t: Option<timestamp::Timestamp>| {
                t.map_or_else(
                    || "-".to_owned(),
                    |t| t.format(timestamp::API_FORMAT).to_string(),
                )
            };
            let mut page = Page {
                per_page: Page::MAX_PER_PAGE,
                ..Page::default()
            };
            loop {
                let listing = store.list_api_keys(page).await?;
                let Some(last) = listing.items.last().map(|k| k.id) else {
                    break;
                };
                for key in listing.items {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        key.id,
                        key.scope,
                        key.user_id
                            .map_or_else(|| "-".to_owned(), |u| u.to_string()),
                        key.prefix,
                        show(Some(key.created_at)),
                        show(key.expires_at),
                        show(key.revoked_at),
                        show(key.last_used_at),
                        key.name
                    );
                }
                page.after_id = Some(last);
            }
        }
        KeysCommand::Revoke { id, database, feed } => {
            let store = service::connect(&database, Schema::Migrate).await?;
            let key = keys::revoke(store.as_ref(), id).await?;
            println!("revoked key {} ({})", key.id, key.name);
            let told = match &feed.redis_url {
                Some(url) => match keys::Revocations::open(url, &feed.redis_key_prefix) {
                    Ok(revocations) => revocations.announce(&[key.id]).await,
                    Err(err) => Err(err.to_string()),
                },
                None => Err("no REDIS_URL".to_owned()),
            };
            match told {
                Ok(()) => println!("running replicas told through Redis"),
                Err(err) => eprintln!(
                    "running replicas not told ({err}): they refuse the key within KEY_TRUST_SECS"
                ),
            }
        }
    }
    Ok(())
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
