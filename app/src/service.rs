//! The service as `shortener serve` runs it, and as the tests run it: one
//! road from configuration to a listening socket and back to a clean stop.
//!
//! [`Service::start`] connects (waiting for a database that is still
//! starting), migrates (or checks that `shortener migrate` did), builds the parts and warms the caches;
//! [`Service::serve`] answers on a listener until shutdown, then finishes
//! in-flight requests and flushes queued clicks within the grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::clicks::ClickRecorder;
use crate::config::{AuthMode, DatabaseConfig, MigrateConfig, ServeConfig};
use crate::domain::TargetPolicy;
use crate::http::{self, AppState, TrustedProxies};
use crate::keys::{KeyCheck, Revocations};
use crate::limits::RateLimit;
use crate::links::Links;
use crate::metrics::Metrics;
use crate::shared_redis::SharedRedis;
use crate::store::{self, DynStore, MigrationReport, Schema, StoreError};

/// How long start-up waits for the database (it may start after us).
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);
/// How long start-up may spend warming the caches.
const WARM_PATIENCE: Duration = Duration::from_secs(10);

pub struct Service {
    state: AppState,
    /// Ends once the click recorder is dropped (with the router), after
    /// writing what was queued.
    click_writer: tokio::task::JoinHandle<()>,
    config: ServeConfig,
    traces: bool,
}

impl Service {
    /// Connects to the configured database, builds the service on it and
    /// warms its caches. `traces`: give every request a server span (only
    /// worth its cost when spans are exported).
    pub async fn start(config: ServeConfig, traces: bool) -> anyhow::Result<Self> {
        if config.auth_mode == AuthMode::ApiKey && config.admin_api_key.is_none() {
            tracing::warn!(
                "AUTH_MODE=api-key without ADMIN_API_KEY: every management request will be refused"
            );
        }
        let schema = if config.migrate_on_start {
            Schema::Migrate
        } else {
            Schema::RequireMigrated
        };
        let store = connect(&config.database, schema).await?;
        let metrics = Arc::new(Metrics::new()?);
        crate::metrics::start_top_links(&metrics);
        let visitors = Arc::new(crate::analytics::Visitors::new());
        crate::analytics::keep_salt_fresh(&visitors, store.clone()).await;
        // One connection to the shared Redis for the cache, the limits and
        // revocations (nothing is dialled until the first call).
        let redis = config
            .redis_url
            .as_deref()
            .map(|url| {
                SharedRedis::open(
                    url,
                    &config.cache.redis_key_prefix,
                    config.cache.redis_timeout_ms,
                    Some(metrics.clone()),
                )
            })
            .transpose()
            .context("REDIS_URL")?;
        let links = Arc::new(Links::new(
            store.clone(),
            &config.cache,
            redis.clone(),
            metrics.clone(),
        ));
        let warm = links.warm(config.cache.cache_warm_entries);
        match tokio::time::timeout(WARM_PATIENCE, warm).await {
            Ok(Ok(count)) => tracing::info!(entries = count, "cache warmed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "cache warm-up failed; starting cold"),
            Err(_) => tracing::warn!("cache warm-up took too long; starting cold"),
        }
        let sized = Arc::downgrade(&links);
        let health = crate::metrics::start_sampler(&store, metrics.clone(), move || {
            let links = sized.upgrade();
            Box::pin(async move {
                let Some(links) = links else { return false };
                links.sample_size().await;
                true
            })
        })
        .await;
        let (clicks, click_writer) = ClickRecorder::start(
            store.clone(),
            &config.clicks,
            &config.database.data_dir,
            metrics.clone(),
        )
        .with_context(|| {
            format!(
                "opening the click spill in DATA_DIR {}",
                config.database.data_dir.display()
            )
        })?;
        let revocations = redis.clone().map(Revocations::new);
        let keys = KeyCheck::new(
            config.auth_mode,
            config.admin_api_key.as_deref(),
            store.clone(),
            config.key_trust_secs,
            revocations,
        )
        .await
        .context("registering ADMIN_API_KEY")?;
        let state = AppState::new(http::Shared {
            store,
            links,
            clicks,
            keys,
            rate_limit: RateLimit::new(&config.limits, redis.clone(), metrics.clone()),
            redis,
            proxies: TrustedProxies::new(config.limits.trusted_proxies.clone()),
            metrics,
            health,
            public_base_url: config.public_base_url.clone(),
            target_policy: TargetPolicy {
                allow_private: config.allow_private_targets,
                denied_domains: config.denied_target_domains.clone(),
            },
            request_timeout: config.request_timeout_secs,
            bots: crate::bots::Bots::new(config.count_bots),
            visitors,
            draining: Arc::default(),
            password_work: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        });
        Ok(Self {
            state,
            click_writer,
            config,
            traces,
        })
    }

    /// Serves on `listener` until `shutdown` resolves; then in-flight
    /// requests and queued clicks get the grace period to finish.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            state,
            click_writer,
            config,
            traces,
        } = self;
        let draining = state.draining.clone();
        let router = http::router(state, &config, traces);
        tracing::info!(
            addr = %listener.local_addr()?,
            auth_mode = ?config.auth_mode,
            "listening"
        );
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let drain = config.shutdown_drain_secs;
        let shutdown = async move {
            shutdown.await;
            if !drain.is_zero() {
                // Still accepting: load balancers that keep sending to a terminating
                // replica see `/readyz` fail and take it out first.
                tracing::info!(
                    seconds = drain.as_secs(),
                    "draining: not ready, still serving"
                );
                draining.store(true, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(drain).await;
            }
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopping_tx.send(());
        };
        let mut server = Box::pin(serve_http1(
            listener,
            router,
            shutdown,
            config.header_read_timeout_secs,
        ));
        let grace = config.shutdown_grace_secs;
        let deadline = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(deadline);
        tokio::select! {
            result = &mut server => result.context("server error")?,
            () = &mut deadline => {
                tracing::warn!("grace period over; exiting with requests still in flight");
                return Ok(());
            }
        }
        // Dropping the server drops the router and with it the click
        // recorder: the writer flushes what is queued and ends.
        drop(server);
        tokio::select! {
            _ = click_writer => tracing::info!("clicks flushed"),
            () = &mut deadline => tracing::warn!("grace period over before clicks were flushed"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Answers HTTP/1.1 on `listener` until `shutdown`, then lets open
/// connections finish their requests. Every request carries the peer's
/// address (`ConnectInfo`: the rate limiter keys on it when no trusted proxy
/// names the client), and a client that does not send its headers within
/// `header_timeout` is disconnected (slow-header clients would otherwise
/// hold sockets forever when nothing buffers in front of the service).
/// HTTP/1.1 only: the service sits behind an ingress or load balancer.
/// Public for the redirect floor (`examples/redirect_floor.rs`), which
/// measures this loop with nothing behind it.
pub async fn serve_http1(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
    header_timeout: Duration,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: the listener itself is fine.
                    tracing::warn!(error = %err, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "TCP_NODELAY not set");
        }
        let service = router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(service);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

/// Connects, retrying while the database is unreachable (it may still be
/// starting), and applies pending migrations or checks them (`schema`).
pub async fn connect(config: &DatabaseConfig, schema: Schema) -> anyhow::Result<DynStore> {
    let url = config.resolve().context("creating the data directory")?;
    let migration_url = config.migration_database_url.as_deref();
    if schema == Schema::RequireMigrated && migration_url.is_some() {
        tracing::info!("MIGRATE_ON_START=false: MIGRATION_DATABASE_URL is not used");
    }
    let connect = || store::connect(&url, config.pool_size, migration_url, schema);
    patiently(CONNECT_PATIENCE, Waiting::ForServer, connect)
        .await
        .context("opening the database")
}

/// `shortener migrate`: applies the pending migrations, waiting (as [`connect`] does, and
/// also for the role when asked) for a database that cannot be used yet.
pub async fn migrate(config: &MigrateConfig) -> anyhow::Result<MigrationReport> {
    let url = config.url().context("creating the data directory")?;
    let waiting = if config.wait_for_role {
        Waiting::ForServerAndRole
    } else {
        Waiting::ForServer
    };
    patiently(config.wait_secs, waiting, || store::migrate(&url))
        .await
        .context("migrating the database")
}

/// What start-up waits out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// A database that cannot be reached yet, or is starting or overloaded.
    ForServer,
    /// That, and a refused login: the role does not exist yet (the operator's role-setup Job
    /// creates it while the app's migrations start).
    ForServerAndRole,
}

impl Waiting {
    fn covers(self, err: &StoreError) -> bool {
        matches!(err, StoreError::Unavailable(_))
            || (self == Waiting::ForServerAndRole && err.is_login_refused())
    }
}

/// Runs `attempt` until it succeeds, fails with an error `waiting` does not cover, or
/// `patience` has passed, a second between attempts.
async fn patiently<T, F, Fut>(
    patience: Duration,
    waiting: Waiting,
    mut attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if waiting.covers(&err) && tokio::time::Instant::now() < deadline => {
                if err.is_login_refused() {
                    tracing::warn!(error = %err, "login refused (the role may not exist yet); retrying");
                } else {
                    tracing::warn!(error = %err, "database not reachable yet; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err),
        }
    }
}
