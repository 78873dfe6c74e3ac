//! Prometheus metrics. Names are prefixed `shortener_`; labels use route
//! templates (`/urls/{id}`), never raw paths, so cardinality stays bounded.
//!
//! Two models, one per kind of number: counters, histograms and the gauges
//! of things that change as work happens (click queue, spill, Redis) are
//! pushed by the code that does the work; gauges that describe state
//! nobody changes on the spot (cache size, pool, database reachability,
//! active links) are sampled by one task ([`spawn_sampler`]). A scrape only
//! renders: it never waits on the database.

use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::links::Links;
use crate::store::{DynStore, Store};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub redirects: IntCounterVec,
    pub urls_created: IntCounter,
    pub clicks_dropped: IntCounter,
    pub click_queue: IntGauge,
    pub clicks_spilled: IntGauge,
    pub click_writes_in_flight: IntGauge,
    pub click_writers: IntGauge,
    pub click_batch_size: Histogram,
    pub click_flush_seconds: Histogram,
    pub cache_lookups: IntCounterVec,
    pub cache_entries: IntGauge,
    pub redis_up: IntGauge,
    pub db_connections: IntGaugeVec,
    pub urls_active: IntGauge,
    pub rate_limited: IntCounter,
    pub database_up: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("shortener_http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "shortener_http_request_duration_seconds",
                "Time from request to response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route"],
        )?;
        let redirects = IntCounterVec::new(
            Opts::new("shortener_redirects_total", "Redirect lookups by outcome"),
            &["outcome"],
        )?;
        let urls_created = IntCounter::new("shortener_urls_created_total", "Short URLs created")?;
        let clicks_dropped = IntCounter::new(
            "shortener_clicks_dropped_total",
            "Redirects answered whose click could not be recorded",
        )?;
        let click_queue = IntGauge::new(
            "shortener_click_queue_depth",
            "Clicks waiting for the writer",
        )?;
        let click_writes_in_flight = IntGauge::new(
            "shortener_click_writes_in_flight",
            "Click batches being written now",
        )?;
        let click_writers = IntGauge::new(
            "shortener_click_writers",
            "Click batches this replica writes at most at once",
        )?;
        let clicks_spilled = IntGauge::new(
            "shortener_clicks_spilled",
            "Clicks held in memory while the database is unavailable",
        )?;
        let click_batch_size = Histogram::with_opts(
            HistogramOpts::new("shortener_click_batch_size", "Clicks per INSERT").buckets(vec![
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
            ]),
        )?;
        let click_flush_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "shortener_click_flush_seconds",
                "Time to write one batch of clicks",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "shortener_cache_lookups_total",
                "Redirect cache lookups by tier and result",
            ),
            &["tier", "result"],
        )?;
        let cache_entries = IntGauge::new(
            "shortener_cache_local_entries",
            "Entries in the in-process cache",
        )?;
        let redis_up = IntGauge::new(
            "shortener_redis_up",
            "1 when the last Redis call succeeded, 0 after a failure",
        )?;
        let db_connections = IntGaugeVec::new(
            Opts::new(
                "shortener_db_pool_connections",
                "Database pool connections: in_use, idle, and the configured max",
            ),
            &["state"],
        )?;
        let urls_active = IntGauge::new(
            "shortener_urls_active",
            "Active short URLs (sampled every minute; estimated above 10,000)",
        )?;
        let rate_limited = IntCounter::new(
            "shortener_rate_limited_total",
            "Management requests refused with 429",
        )?;
        let database_up = IntGauge::new(
            "shortener_database_up",
            "1 when the last periodic database ping (every 5 s) succeeded",
        )?;
        let build_info = IntGauge::with_opts(
            Opts::new("shortener_build_info", "Build information")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build_info.set(1);
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn Collector>,
            Box::new(http_duration.clone()),
            Box::new(redirects.clone()),
            Box::new(urls_created.clone()),
            Box::new(clicks_dropped.clone()),
            Box::new(build_info),
            Box::new(click_queue.clone()),
            Box::new(clicks_spilled.clone()),
            Box::new(click_writes_in_flight.clone()),
            Box::new(click_writers.clone()),
            Box::new(cache_entries.clone()),
            Box::new(redis_up.clone()),
            Box::new(click_batch_size.clone()),
            Box::new(click_flush_seconds.clone()),
            Box::new(cache_lookups.clone()),
            Box::new(db_connections.clone()),
            Box::new(urls_active.clone()),
            Box::new(rate_limited.clone()),
            Box::new(database_up.clone()),
            // Resident memory, CPU seconds, open file descriptors (Linux).
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(collector)?;
        }
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            redirects,
            urls_created,
            clicks_dropped,
            click_queue,
            clicks_spilled,
            click_writes_in_flight,
            click_writers,
            click_batch_size,
            click_flush_seconds,
            cache_lookups,
            cache_entries,
            redis_up,
            db_connections,
            urls_active,
            rate_limited,
            database_up,
        })
    }

    /// Records a pool snapshot.
    fn observe_pool(&self, pool: crate::store::PoolStats) {
        let in_use = i64::from(pool.open.saturating_sub(pool.idle));
        self.db_connections
            .with_label_values(&["in_use"])
            .set(in_use);
        self.db_connections
            .with_label_values(&["idle"])
            .set(i64::from(pool.idle));
        self.db_connections
            .with_label_values(&["max"])
            .set(i64::from(pool.max));
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// How often the sampled gauges are refreshed.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Active links are counted every this many samples (once a minute).
const COUNT_ACTIVE_EVERY: u32 = 12;
/// Longest a database ping may take before it counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Samples the state gauges every few seconds, so that an outage at a quiet
/// hour is still seen, for as long as the service lives (it holds the
/// service only while it samples, so shutdown is not delayed).
pub fn spawn_sampler(store: &DynStore, links: &Arc<Links>, metrics: Arc<Metrics>) {
    let (store, links) = (Arc::downgrade(store), Arc::downgrade(links));
    tokio::spawn(async move {
        for round in 0u32.. {
            if !sample(&store, &links, &metrics, round % COUNT_ACTIVE_EVERY == 0).await {
                return;
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    });
}

/// One sample; false once the service is gone.
async fn sample(
    store: &Weak<dyn Store>,
    links: &Weak<Links>,
    metrics: &Metrics,
    count_active: bool,
) -> bool {
    let (Some(store), Some(links)) = (store.upgrade(), links.upgrade()) else {
        return false;
    };
    let entries = i64::try_from(links.local_entries()).unwrap_or(i64::MAX);
    metrics.cache_entries.set(entries);
    metrics.observe_pool(store.pool_stats());
    let ping = tokio::time::timeout(PING_TIMEOUT, store.ping()).await;
    let up = matches!(ping, Ok(Ok(())));
    metrics.database_up.set(i64::from(up));
    if count_active && up {
        let active = crate::store::UrlFilter {
            is_active: Some(true),
            ..Default::default()
        };
        let one = crate::store::Page {
            per_page: 1,
            ..Default::default()
        };
        match store.list_urls(active, one).await {
            Ok(listing) => metrics.urls_active.set(listing.total),
            Err(err) => tracing::debug!(error = %err, "could not count active URLs"),
        }
    }
    true
}
