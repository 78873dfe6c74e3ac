//! Prometheus metrics. Names are prefixed `shortener_`; labels use route
//! templates (`/urls/{id}`), never raw paths, so cardinality stays bounded.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

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
            "Active short URLs (refreshed every minute; estimated above 100k)",
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
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(redirects.clone()))?;
        registry.register(Box::new(urls_created.clone()))?;
        registry.register(Box::new(clicks_dropped.clone()))?;
        registry.register(Box::new(build_info))?;
        for gauge in [
            &click_queue,
            &clicks_spilled,
            &click_writes_in_flight,
            &click_writers,
            &cache_entries,
            &redis_up,
        ] {
            registry.register(Box::new(gauge.clone()))?;
        }
        registry.register(Box::new(click_batch_size.clone()))?;
        registry.register(Box::new(click_flush_seconds.clone()))?;
        registry.register(Box::new(cache_lookups.clone()))?;
        registry.register(Box::new(db_connections.clone()))?;
        registry.register(Box::new(urls_active.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(database_up.clone()))?;
        // Resident memory, CPU seconds, open file descriptors (Linux).
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
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

    /// Records a pool snapshot (taken at scrape time).
    pub fn observe_pool(&self, pool: crate::store::PoolStats) {
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
