//! The service as `shortener serve` runs it, and as the tests run it: one
//! road from configuration to a listening socket and back to a clean stop.
//!
//! [`Service::start`] connects (waiting for a database that is still
//! starting), migrates, builds the parts and warms the caches;
//! [`Service::serve`] answers on a listener until shutdown, then finishes
//! in-flight requests and flushes queued clicks within the grace period.

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::clicks::ClickRecorder;
use crate::config::{AuthMode, DatabaseConfig, ServeConfig};
use crate::domain::TargetPolicy;
use crate::http::{self, AppState, Auth, RateLimit};
use crate::links::Links;
use crate::metrics::Metrics;
use crate::store::{self, DynStore, StoreError};

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
        let store = connect(&config.database).await?;
        let metrics = Arc::new(Metrics::new()?);
        let links = Arc::new(Links::new(
            store.clone(),
            &config.cache,
            config.redis_url.as_deref(),
            metrics.clone(),
        )?);
        let warm = links.warm(config.cache.cache_warm_entries);
        match tokio::time::timeout(WARM_PATIENCE, warm).await {
            Ok(Ok(count)) => tracing::info!(entries = count, "cache warmed"),
            Ok(Err(err)) => tracing::warn!(error = %err, "cache warm-up failed; starting cold"),
            Err(_) => tracing::warn!("cache warm-up took too long; starting cold"),
        }
        crate::metrics::spawn_sampler(&store, &links, metrics.clone());
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
        let state = AppState::new(http::Shared {
            store,
            links,
            clicks,
            auth: Auth::new(config.auth_mode, config.admin_api_key.as_deref()),
            rate_limit: RateLimit::new(
                config.rate_limit_per_minute,
                config.rate_limit_burst,
                config.trust_proxy_headers,
            ),
            metrics,
            public_base_url: config.public_base_url.clone(),
            target_policy: TargetPolicy {
                allow_private: config.allow_private_targets,
                denied_domains: config.denied_target_domains.clone(),
            },
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
        let router = http::router(state, &config, traces);
        tracing::info!(
            addr = %listener.local_addr()?,
            auth_mode = ?config.auth_mode,
            "listening"
        );
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopping_tx.send(());
        };
        // The peer address goes with every request: the rate limiter keys
        // on it when no trusted proxy names the client.
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let mut server = Box::pin(
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .into_future(),
        );
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

/// Connects, retrying while the database is unreachable (it may still be
/// starting), and applies migrations.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<DynStore> {
    let url = config.resolve().context("creating the data directory")?;
    let migration_url = config.migration_database_url.as_deref();
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    loop {
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
