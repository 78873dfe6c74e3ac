//! A URL shortener for platform teams: the HTTP service.
//!
//! Layers, outside in: [`http`] (routing, extractors, the one error type),
//! [`events`] (click recording), [`store`] (the storage trait and its SQL
//! backends), [`domain`] (values valid by construction).

pub mod cache;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod metrics;
pub mod seed;
pub mod store;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CacheConfig, RedirectCache, SharedCache};
use crate::events::{BatchConfig, BatchRecorder};
use crate::http::{AppState, Auth, RateLimit};
use crate::metrics::Metrics;
use crate::store::DynStore;

/// Everything that shapes a running service, beyond its store.
pub struct AppOptions {
    pub auth: Auth,
    pub rate_limit: RateLimit,
    pub public_base_url: Option<String>,
    pub cache: CacheConfig,
    pub redis_url: Option<String>,
    pub redis_key_prefix: String,
    pub redis_timeout: Duration,
    pub clicks: BatchConfig,
}

impl AppOptions {
    /// Defaults for everything but access control.
    pub fn new(auth: Auth) -> Self {
        Self {
            auth,
            rate_limit: RateLimit::off(),
            public_base_url: None,
            cache: CacheConfig {
                capacity: 100_000,
                local_ttl: Duration::from_secs(30),
                negative_ttl: Duration::from_secs(5),
                shared_ttl: Duration::from_secs(300),
            },
            redis_url: None,
            redis_key_prefix: "shortener".into(),
            redis_timeout: Duration::from_millis(50),
            clicks: BatchConfig::default(),
        }
    }
}

/// A service ready to be routed, and its background tasks.
pub struct App {
    pub state: AppState,
    /// Ends once every handle to the click recorder is dropped, after
    /// writing what was queued: await it on shutdown.
    pub click_writer: tokio::task::JoinHandle<()>,
}

pub fn build(store: DynStore, options: AppOptions) -> anyhow::Result<App> {
    let metrics = Arc::new(Metrics::new()?);
    let shared = options
        .redis_url
        .as_deref()
        .map(|url| {
            SharedCache::new(
                url,
                &options.redis_key_prefix,
                options.cache.shared_ttl,
                options.redis_timeout,
                metrics.clone(),
            )
        })
        .transpose()?;
    let cache = RedirectCache::new(&options.cache, shared, metrics.clone());
    cache.spawn_invalidation_listener();
    spawn_active_urls_gauge(store.clone(), metrics.clone());
    spawn_database_probe(store.clone(), metrics.clone());
    let (clicks, click_writer) =
        BatchRecorder::start(store.clone(), options.clicks, metrics.clone());
    let state = AppState::new(http::Shared {
        store,
        cache,
        clicks: Arc::new(clicks),
        auth: Arc::new(options.auth),
        rate_limit: Arc::new(options.rate_limit),
        metrics,
        public_base_url: options.public_base_url,
    });
    Ok(App {
        state,
        click_writer,
    })
}

impl App {
    /// Loads up to `entries` of the most recent active URLs into the caches.
    pub async fn warm(&self, entries: i64) -> store::StoreResult<usize> {
        if entries == 0 {
            return Ok(0);
        }
        let targets = self.state.store.recent_active_targets(entries).await?;
        let count = targets.len();
        self.state.cache.warm(targets).await;
        Ok(count)
    }
}

/// How often the active-URL gauge is refreshed.
const ACTIVE_URLS_EVERY: Duration = Duration::from_secs(60);
/// How often each replica pings the database for `shortener_database_up`.
const DATABASE_PROBE_EVERY: Duration = Duration::from_secs(5);

/// Keeps `shortener_urls_active` current. Counting is a list query (exact
/// up to 100 000 rows, estimated beyond), never a full scan.
fn spawn_active_urls_gauge(store: DynStore, metrics: Arc<Metrics>) {
    let filter = store::UrlFilter {
        is_active: Some(true),
        ..Default::default()
    };
    let page = store::Page {
        per_page: 1,
        ..Default::default()
    };
    every(ACTIVE_URLS_EVERY, store, move |store| {
        let (filter, metrics) = (filter.clone(), metrics.clone());
        async move {
            match store.list_urls(filter, page).await {
                Ok(listing) => metrics.urls_active.set(listing.total),
                Err(err) => tracing::debug!(error = %err, "could not count active URLs"),
            }
        }
    });
}

/// Keeps `shortener_database_up` current without depending on traffic, so
/// an outage at a quiet hour is still seen.
fn spawn_database_probe(store: DynStore, metrics: Arc<Metrics>) {
    every(DATABASE_PROBE_EVERY, store, move |store| {
        let metrics = metrics.clone();
        async move {
            let ping = tokio::time::timeout(Duration::from_secs(2), store.ping()).await;
            metrics
                .database_up
                .set(i64::from(matches!(ping, Ok(Ok(())))));
        }
    });
}

/// Runs `task` now and then every `period` for as long as the store lives
/// (the task holds it only while it runs, so shutdown is not delayed).
fn every<F, Fut>(period: Duration, store: DynStore, task: F)
where
    F: Fn(DynStore) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let store = Arc::downgrade(&store);
    tokio::spawn(async move {
        loop {
            let Some(store) = store.upgrade() else { return };
            task(store).await;
            tokio::time::sleep(period).await;
        }
    });
}
