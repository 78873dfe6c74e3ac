//! Prometheus metrics. Names are prefixed `shortener_`; labels use route
//! templates (`/urls/{id}`), never raw paths, so cardinality stays bounded.
//!
//! Two models, one per kind of number: counters, histograms and the gauges
//! of things that change as work happens (click queue, spill, Redis) are
//! pushed by the code that does the work; gauges that describe state
//! nobody changes on the spot (cache size, pool, database reachability,
//! active links) are sampled by one task ([`start_sampler`]). A scrape only
//! renders: it never waits on the database.

use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::store::{DynStore, Store};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub redirects: IntCounterVec,
    /// The redirect route's series of the three above, resolved once.
    pub redirect: RedirectSeries,
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
    pub cache_bytes: IntGauge,
    pub cache_max_bytes: IntGauge,
    pub redis_up: IntGauge,
    pub cache_invalidations_pending: IntGauge,
    pub cache_coherent: IntGauge,
    pub cache_stale_served: IntCounter,
    pub db_connections: IntGaugeVec,
    pub urls_active: IntGauge,
    pub rate_limit_decisions: IntCounterVec,
    pub rate_limit_fallbacks: IntCounterVec,
    pub database_up: IntGauge,
    pub database_pings: IntCounter,
    /// The links clicked most on this replica lately.
    pub top_links: TopLinks,
}

/// How many links [`TopLinks`] publishes.
pub const TOP_LINKS: usize = 10;
/// Links counted at most in one minute (beyond, only those already counted add up).
const TOP_LINKS_COUNTED: usize = 10_000;

/// Clicks per short code in the last whole minute, published for the [`TOP_LINKS`] codes
/// this replica saw most (`shortener_top_link_clicks{short_code}`): a series per link would
/// grow with the links, ten do not. Bots' visits are not counted. Across replicas the
/// dashboard adds them up (`topk` of the sum): a link that is in no replica's ten is missed.
pub struct TopLinks {
    gauge: IntGaugeVec,
    counting: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl TopLinks {
    /// Counts one batch's clicks.
    pub fn add<'a>(&self, codes: impl Iterator<Item = &'a str>) {
        let mut counting = self.counting.lock().unwrap_or_else(|e| e.into_inner());
        for code in codes {
            if let Some(count) = counting.get_mut(code) {
                *count += 1;
            } else if counting.len() < TOP_LINKS_COUNTED {
                counting.insert(code.to_owned(), 1);
            }
        }
    }

    /// Publishes the minute just ended and starts counting the next.
    pub fn publish(&self) {
        let minute = std::mem::take(&mut *self.counting.lock().unwrap_or_else(|e| e.into_inner()));
        let mut top: Vec<(String, i64)> = minute.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP_LINKS);
        self.gauge.reset();
        for (code, clicks) in top {
            self.gauge.with_label_values(&[code.as_str()]).set(clicks);
        }
    }
}

/// Publishes the top links every minute while `metrics` is in use.
pub fn start_top_links(metrics: &Arc<Metrics>) {
    let metrics = Arc::downgrade(metrics);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(metrics) = metrics.upgrade() else {
                break;
            };
            metrics.top_links.publish();
        }
    });
}

/// Registers `collector` and hands it back.
fn registered<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// Latency buckets from half a millisecond up to `top` seconds.
fn seconds_buckets(top: f64) -> Vec<f64> {
    let all = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    all.into_iter().filter(|b| *b <= top).collect()
}

/// The series the redirect route writes, resolved at start: the hot path takes no label
/// lookup (a hash of the labels and a lock per series and request otherwise). Methods and
/// statuses other than a `GET` answered 302 or 404 take the labelled way.
pub struct RedirectSeries {
    pub found: IntCounter,
    /// Redirects answered to bots (recorded as bot visits, not clicks).
    pub bot: IntCounter,
    pub not_found: IntCounter,
    /// Links that exist but no longer redirect to their target (expired or used up).
    pub gone: IntCounter,
    /// Protected links answered without their redirect: no password, a wrong one, or too
    /// many wrong ones.
    pub locked: IntCounter,
    get_duration: Histogram,
    get_found: IntCounter,
    get_not_found: IntCounter,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl RedirectSeries {
    fn resolve(
        requests: &IntCounterVec,
        duration: &HistogramVec,
        outcomes: &IntCounterVec,
    ) -> Self {
        let route = crate::http::routes::REDIRECT;
        Self {
            found: outcomes.with_label_values(&["found"]),
            bot: outcomes.with_label_values(&["bot"]),
            not_found: outcomes.with_label_values(&["not_found"]),
            gone: outcomes.with_label_values(&["gone"]),
            locked: outcomes.with_label_values(&["locked"]),
            get_duration: duration.with_label_values(&["GET", route]),
            get_found: requests.with_label_values(&["GET", route, "302"]),
            get_not_found: requests.with_label_values(&["GET", route, "404"]),
            requests: requests.clone(),
            duration: duration.clone(),
        }
    }

    /// One answer of the redirect route, as `record_metrics` counts the other routes'.
    pub fn answered(
        &self,
        method: &'static str,
        status: axum::http::StatusCode,
        latency: Duration,
    ) {
        let seconds = latency.as_secs_f64();
        let route = crate::http::routes::REDIRECT;
        match (method, status) {
            ("GET", axum::http::StatusCode::FOUND) => self.get_found.inc(),
            ("GET", axum::http::StatusCode::NOT_FOUND) => self.get_not_found.inc(),
            _ => self
                .requests
                .with_label_values(&[method, route, status.as_str()])
                .inc(),
        }
        if method == "GET" {
            self.get_duration.observe(seconds);
        } else {
            self.duration
                .with_label_values(&[method, route])
                .observe(seconds);
        }
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        let counter = |name: &str, help: &str| registered(r, IntCounter::new(name, help)?);
        let gauge = |name: &str, help: &str| registered(r, IntGauge::new(name, help)?);
        let counters = |name: &str, help: &str, labels: &[&str]| {
            registered(r, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            registered(
                r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?,
            )
        };
        let build_info = registered(
            r,
            IntGauge::with_opts(
                Opts::new("shortener_build_info", "Build information")
                    .const_label("version", env!("CARGO_PKG_VERSION")),
            )?,
        )?;
        build_info.set(1);
        // Resident memory, CPU seconds, open file descriptors (Linux).
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let http_requests = counters(
            "shortener_http_requests_total",
            "HTTP requests answered",
            &["method", "route", "status"],
        )?;
        let http_duration = registered(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "shortener_http_request_duration_seconds",
                    "Time from request to response head",
                )
                .buckets(seconds_buckets(5.0)),
                &["method", "route"],
            )?,
        )?;
        let redirects = counters(
            "shortener_redirects_total",
            "Redirect lookups by outcome",
            &["outcome"],
        )?;
        let top_links = TopLinks {
            gauge: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "shortener_top_link_clicks",
                        "Clicks in the last whole minute of the links this replica saw most",
                    ),
                    &["short_code"],
                )?,
            )?,
            counting: Default::default(),
        };
        Ok(Self {
            top_links,
            redirect: RedirectSeries::resolve(&http_requests, &http_duration, &redirects),
            http_requests,
            http_duration,
            redirects,
            urls_created: counter("shortener_urls_created_total", "Short URLs created")?,
            clicks_dropped: counter(
                "shortener_clicks_dropped_total",
                "Redirects answered whose click could not be recorded",
            )?,
            click_queue: gauge(
                "shortener_click_queue_depth",
                "Clicks waiting for the writer",
            )?,
            clicks_spilled: gauge(
                "shortener_clicks_spilled",
                "Clicks kept in the spill file while the database is unavailable",
            )?,
            click_writes_in_flight: gauge(
                "shortener_click_writes_in_flight",
                "Click batches being written now",
            )?,
            click_writers: gauge(
                "shortener_click_writers",
                "Click batches this replica writes at most at once",
            )?,
            click_batch_size: histogram(
                "shortener_click_batch_size",
                "Clicks per INSERT",
                vec![
                    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
                ],
            )?,
            click_flush_seconds: histogram(
                "shortener_click_flush_seconds",
                "Time to write one batch of clicks",
                seconds_buckets(1.0),
            )?,
            cache_lookups: counters(
                "shortener_cache_lookups_total",
                "Redirect cache lookups by tier and result",
                &["tier", "result"],
            )?,
            cache_entries: gauge(
                "shortener_cache_local_entries",
                "Entries in the in-process cache",
            )?,
            cache_bytes: gauge(
                "shortener_cache_local_bytes",
                "Weighed size of the in-process cache (estimated bytes of its entries)",
            )?,
            cache_max_bytes: gauge(
                "shortener_cache_local_max_bytes",
                "Byte budget of the in-process cache (CACHE_MAX_BYTES)",
            )?,
            redis_up: gauge(
                "shortener_redis_up",
                "1 when the last Redis call succeeded, 0 after a failure",
            )?,
            cache_invalidations_pending: gauge(
                "shortener_cache_invalidations_pending",
                "Cache changes not yet delivered to Redis (retried in the background)",
            )?,
            cache_stale_served: counter(
                "shortener_cache_stale_served_total",
                "Redirect lookups answered from an in-process copy because neither Redis nor the database could answer (STALE_IF_ERROR_SECS)",
            )?,
            cache_coherent: gauge(
                "shortener_cache_coherent",
                "1 when the invalidation feed is trusted; 0 while the in-process cache runs on the short TTL and Redis reads are bypassed",
            )?,
            db_connections: registered(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "shortener_db_pool_connections",
                        "Database pool connections: in_use, idle, and the configured max",
                    ),
                    &["state"],
                )?,
            )?,
            urls_active: gauge(
                "shortener_urls_active",
                "Active short URLs (sampled every minute; estimated above 10,000)",
            )?,
            rate_limit_decisions: counters(
                "shortener_rate_limit_decisions_total",
                "Rate limit checks by class (management, create, redirect_miss) and decision (allowed, limited)",
                &["class", "decision"],
            )?,
            rate_limit_fallbacks: counters(
                "shortener_rate_limit_fallbacks_total",
                "Rate limit checks decided by this replica alone because Redis was skipped, failed or timed out",
                &["class", "reason"],
            )?,
            database_up: gauge(
                "shortener_database_up",
                "1 when the last periodic database ping (every 5 s) succeeded",
            )?,
            database_pings: counter(
                "shortener_database_pings_total",
                "Database pings by the state sampler (GET /health answers from the last one)",
            )?,
            registry,
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

/// What the sampler last saw of the database. `GET /health` answers from
/// it, so a public endpoint called at any rate costs the database nothing:
/// it is pinged once per [`SAMPLE_EVERY`]. (Whether Redis answers is
/// `SharedRedis::up`, kept by every call to it.)
pub struct StoreHealth {
    epoch: Instant,
    database_up: AtomicBool,
    /// Milliseconds since `epoch` of the last sample.
    sampled_at_ms: AtomicU64,
}

impl StoreHealth {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            database_up: AtomicBool::new(false),
            sampled_at_ms: AtomicU64::new(0),
        }
    }

    fn record(&self, database_up: bool) {
        self.database_up.store(database_up, Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.sampled_at_ms.store(now, Ordering::Release);
    }

    /// Whether the database answered the last ping, and how long ago that
    /// was.
    pub fn database(&self) -> (bool, Duration) {
        let at = Duration::from_millis(self.sampled_at_ms.load(Ordering::Acquire));
        (
            self.database_up.load(Ordering::Relaxed),
            self.epoch.elapsed().saturating_sub(at),
        )
    }
}

/// Samples the state gauges (and [`StoreHealth`]) every few seconds, so
/// that an outage at a quiet hour is still seen, for as long as the service
/// lives (it holds the service only while it samples, so shutdown is not
/// delayed). The first sample is taken before this returns.
/// `also` samples what lives elsewhere (the link cache's size) each round, and says
/// false once the service is gone.
pub async fn start_sampler(
    store: &DynStore,
    metrics: Arc<Metrics>,
    mut also: impl FnMut() -> BoxFuture<'static, bool> + Send + 'static,
) -> Arc<StoreHealth> {
    let health = Arc::new(StoreHealth::new());
    let store = Arc::downgrade(store);
    sample(&store, &mut also, &metrics, &health, true).await;
    let sampled = health.clone();
    tokio::spawn(async move {
        for round in 1u32.. {
            tokio::time::sleep(SAMPLE_EVERY).await;
            let count_active = round % COUNT_ACTIVE_EVERY == 0;
            if !sample(&store, &mut also, &metrics, &sampled, count_active).await {
                return;
            }
        }
    });
    health
}

/// One sample; false once the service is gone.
async fn sample(
    store: &Weak<dyn Store>,
    also: &mut (impl FnMut() -> BoxFuture<'static, bool> + Send),
    metrics: &Metrics,
    health: &StoreHealth,
    count_active: bool,
) -> bool {
    let Some(store) = store.upgrade() else {
        return false;
    };
    if !also().await {
        return false;
    }
    metrics.observe_pool(store.pool_stats());
    metrics.database_pings.inc();
    let ping = tokio::time::timeout(PING_TIMEOUT, store.ping()).await;
    let up = match ping {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "database ping failed");
            false
        }
        Err(_) => {
            tracing::debug!("database ping timed out");
            false
        }
    };
    metrics.database_up.set(i64::from(up));
    health.record(up);
    if count_active && up {
        match store.count_active_urls().await {
            Ok(count) => metrics.urls_active.set(count),
            Err(err) => tracing::debug!(error = %err, "could not count active URLs"),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_links_of_the_last_minute_are_published_and_only_they() {
        let metrics = Metrics::new().unwrap();
        let codes: Vec<String> = (0..15).map(|i| format!("c{i:02}")).collect();
        // c14 is clicked 15 times, c13 14 times, …, c00 once.
        let clicks = codes
            .iter()
            .enumerate()
            .flat_map(|(i, code)| std::iter::repeat_n(code.as_str(), i + 1));
        metrics.top_links.add(clicks);
        metrics.top_links.publish();
        let text = metrics.render().unwrap();
        assert!(
            text.contains("shortener_top_link_clicks{short_code=\"c14\"} 15"),
            "{text}"
        );
        assert!(
            text.contains("shortener_top_link_clicks{short_code=\"c05\"} 6"),
            "{text}"
        );
        assert!(
            !text.contains("short_code=\"c04\""),
            "only the top {TOP_LINKS}: {text}"
        );
        // The next minute replaces the last one's series.
        metrics.top_links.add(std::iter::once("other"));
        metrics.top_links.publish();
        let text = metrics.render().unwrap();
        assert!(!text.contains("short_code=\"c14\""), "{text}");
        assert!(
            text.contains("shortener_top_link_clicks{short_code=\"other\"} 1"),
            "{text}"
        );
    }
}
