//! The cache tiers in front of the database: an in-process L1 (bounded,
//! short TTL, negative entries too) and Redis (shared by all replicas).
//! The cache never reads the database itself: [`super::Links`] asks it
//! first and hands it what the database answered.
//!
//! Coherence: every change to what a short code resolves to goes through
//! [`LinkCache::changed`] (called by [`super::Links`] and nothing else),
//! which evicts the code from this replica's L1,
//! writes the new value to Redis (never replacing a newer version with an
//! older one) and publishes the code on a Redis channel; every replica
//! evicts it from its L1 on receipt.
//!
//! When Redis is unreliable that chain breaks, so: a change whose write or
//! announcement fails is queued and redelivered in the background until it
//! succeeds (version checked: an old value never replaces a newer one); and
//! while the feed cannot be trusted (not subscribed, a Redis call failed or
//! the feed came back less than [`super::shared::UNRELIABLE_FOR`] ago, or a change of ours
//! is still queued) L1 answers only from entries younger than
//! [`SHORT_TTL`] and Redis is not read, the database answers instead. The
//! first lookup once the feed is trusted again flushes L1, since messages
//! may have been missed meanwhile. Hence the bound in
//! docs/architecture.md: a switched-off link stops redirecting everywhere
//! within a few seconds, Redis or not.
//!
//! Stale-if-error: an L1 entry of a link is kept past its trust (up to
//! `STALE_IF_ERROR_SECS`), for [`LinkCache::stale`] to answer with when no
//! source of truth can ([`super::Links::resolve_beyond`]: Redis did not
//! answer, and the database is unavailable). A change still evicts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use super::shared::SharedCache;
use crate::config::CacheSettings;
use crate::domain::LinkPolicy;
use crate::metrics::Metrics;
use crate::store::RedirectTarget;

/// While the invalidation feed is not trusted, L1 answers only from
/// entries younger than this.
pub const SHORT_TTL: Duration = Duration::from_secs(2);
/// How often queued changes are redelivered.
pub const REPAIR_INTERVAL: Duration = Duration::from_millis(250);
/// How often Redis is pinged, so that a silent outage (a blackholed
/// connection: the feed sees nothing) is noticed without traffic.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// An L1 entry and when it was stored.
#[derive(Debug, Clone)]
struct Cached {
    entry: Entry,
    at: Instant,
}

/// What the cache knows about a code.
#[derive(Debug, Clone)]
enum Entry {
    Found(Arc<RedirectTarget>),
    /// The code names no URL (as of a recent lookup).
    Missing,
}

/// A lookup's answer beyond L1.
pub enum Lookup {
    /// A tier knew: the target, or `None` for a code known not to exist.
    Hit(Option<Arc<RedirectTarget>>, Source),
    /// No tier knew; ask the database.
    Miss(Miss),
}

/// A lookup that missed, as of an eviction generation: a fill after a newer
/// eviction is dropped, or it would bring back the value just evicted.
#[derive(Debug, Clone, Copy)]
pub struct Miss {
    generation: u64,
}

/// Where a lookup was answered, for `X-Cache` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Local,
    Shared,
    Database,
    /// This replica's last copy, past its trust: neither Redis nor the
    /// database could answer (stale-if-error).
    Stale,
}

impl Source {
    /// The `X-Cache` value: `HIT` when a cache answered, `MISS` when the
    /// database did, `STALE` for a copy served because nothing else could
    /// answer.
    pub fn x_cache(self) -> &'static str {
        match self {
            Source::Local | Source::Shared => "HIT",
            Source::Database => "MISS",
            Source::Stale => "STALE",
        }
    }
}

/// Bytes an entry costs besides its strings: the key's and the target's
/// `String` headers, the target's fields and `Arc`, the `Cached` wrapper,
/// the allocator's rounding of each of those allocations, and the cache's own
/// slot and index. Measured: 100,000 entries of an 8-character code and a
/// 70-character URL take 377 bytes each of resident memory (docs/decisions.md),
/// of which these strings are 86.
const ENTRY_OVERHEAD: u64 = 300;

/// How much an L1 entry weighs against `CACHE_MAX_BYTES`: its estimated
/// bytes, and at least `budget / CACHE_CAPACITY`, so one weighed budget
/// bounds both the bytes and the number of entries.
#[derive(Debug, Clone, Copy)]
struct Weight {
    budget: u64,
    floor: u64,
}

impl Weight {
    fn of(settings: &CacheSettings) -> Self {
        let budget = settings.cache_max_bytes;
        let floor = match settings.cache_capacity {
            // No entries at all: everything weighs more than the budget.
            0 => budget.saturating_add(1),
            entries => budget.div_ceil(entries),
        };
        Self { budget, floor }
    }

    /// Estimated bytes of an entry: its code twice (the key and the
    /// target's copy), its URL, its policy when it has one, and
    /// [`ENTRY_OVERHEAD`].
    fn bytes(code: &str, cached: &Cached) -> u64 {
        let target = match &cached.entry {
            Entry::Found(t) => {
                let policy = t.policy.as_deref().map_or(0, |p| {
                    size_of::<LinkPolicy>()
                        + p.fallback_url.as_ref().map_or(0, String::len)
                        + p.rules.heap_size()
                });
                t.short_code.len() + t.original_url.len() + policy
            }
            Entry::Missing => 0,
        };
        u64::try_from(code.len() + target).map_or(u64::MAX, |n| n + ENTRY_OVERHEAD)
    }
}

impl quick_cache::Weighter<String, Cached> for Weight {
    fn weight(&self, code: &String, cached: &Cached) -> u64 {
        Self::bytes(code, cached).max(self.floor)
    }
}

pub struct LinkCache {
    /// L1. Entries expire lazily: a lookup ignores (and drops) one past its
    /// TTL; until then it only takes room, within the budget.
    local: Cache<String, Cached, Weight>,
    /// How long a code known not to exist is remembered
    /// (`NEGATIVE_CACHE_TTL_SECONDS`).
    missing_for: Duration,
    /// How long an entry of a link is served (`LOCAL_CACHE_TTL_SECONDS`);
    /// it is kept up to [`LinkCache::stale_for`] if that is longer.
    fresh_for: Duration,
    /// How old a copy [`LinkCache::stale`] may answer with
    /// (`STALE_IF_ERROR_SECS`; zero: never).
    stale_for: Duration,
    /// Bumped by every eviction. A fill that read the database (or Redis)
    /// before an eviction must not land after it, or it would bring back
    /// the stale value: fills only happen if the generation is unchanged.
    generation: AtomicU64,
    shared: Option<SharedCache>,
    metrics: Arc<Metrics>,
}

impl LinkCache {
    pub fn new(
        settings: &CacheSettings,
        shared: Option<SharedCache>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let weight = Weight::of(settings);
        // The entries the budget holds at the floor weight: what the cache
        // sizes its table for.
        let entries = weight.budget / weight.floor.max(1);
        let local = Cache::with_weighter(
            usize::try_from(entries).unwrap_or(usize::MAX).max(1),
            weight.budget,
            weight,
        );
        metrics
            .cache_max_bytes
            .set(i64::try_from(weight.budget).unwrap_or(i64::MAX));
        Arc::new(Self {
            local,
            missing_for: settings.negative_cache_ttl_seconds,
            fresh_for: settings.local_cache_ttl_seconds,
            stale_for: settings.stale_if_error_secs,
            generation: AtomicU64::new(0),
            shared,
            metrics,
        })
    }

    /// What L1 knows about a code: the target (`None` for a code known
    /// not to exist), or a [`Miss`] for [`LinkCache::lookup_shared`].
    pub async fn lookup_local(&self, code: &str) -> Result<Option<Arc<RedirectTarget>>, Miss> {
        let miss = Miss {
            generation: self.generation.load(Ordering::Acquire),
        };
        let coherent = self.coherent();
        match self.local.get(code) {
            Some(cached) => {
                let age = cached.at.elapsed();
                // A link's entry is kept past its TTL for stale-if-error
                // only: a miss here.
                let expired = match cached.entry {
                    Entry::Found(_) => age >= self.fresh_for,
                    Entry::Missing => age >= self.missing_for,
                };
                if expired {
                    if age >= self.keep_for(&cached.entry) {
                        // Unless a fill replaced it meanwhile.
                        self.local.remove_if(code, |now| now.at == cached.at);
                    }
                    self.count("local", "miss");
                } else if coherent || age < SHORT_TTL {
                    self.count("local", "hit");
                    return Ok(found(cached.entry));
                } else {
                    self.count("local", "stale");
                }
            }
            None => self.count("local", "miss"),
        }
        Err(miss)
    }

    /// Stale-if-error: this replica's copy of a code, however untrusted, if
    /// it is younger than `STALE_IF_ERROR_SECS`; for when neither Redis nor
    /// the database can answer. Counted when it answers.
    pub async fn stale(&self, code: &str) -> Option<Option<Arc<RedirectTarget>>> {
        if self.stale_for.is_zero() {
            return None;
        }
        let cached = self.local.get(code)?;
        if cached.at.elapsed() > self.stale_for {
            return None;
        }
        self.metrics.cache_stale_served.inc();
        Some(found(cached.entry))
    }

    /// What Redis knows about a code L1 missed: an answer, or a [`Miss`] to
    /// hand back to [`LinkCache::fill`] with what the database said.
    pub async fn lookup_shared(&self, code: &str, miss: Miss) -> Lookup {
        if !self.coherent() {
            self.count("shared", "bypassed");
        } else if let Some(shared) = &self.shared {
            match shared.get(code).await {
                Ok(Some(target)) => {
                    self.count("shared", "hit");
                    let target = Arc::new(target);
                    self.fill_local(code, Entry::Found(target.clone()), miss)
                        .await;
                    return Lookup::Hit(Some(target), Source::Shared);
                }
                Ok(None) => self.count("shared", "miss"),
                Err(unavailable) => self.count("shared", unavailable.as_str()),
            }
        }
        Lookup::Miss(miss)
    }

    /// Whether L1 and Redis can be trusted (always, without Redis); after a
    /// gap in the feed the first caller to see it trusted again flushes L1.
    fn coherent(&self) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        if !shared.coherent() {
            return false;
        }
        if shared.take_gap() {
            self.evict_all_local();
            tracing::info!("cache coherence restored; local cache flushed");
        }
        true
    }

    /// Fills the tiers a lookup missed with the database's answer.
    pub async fn fill(&self, code: &str, miss: Miss, target: Option<&Arc<RedirectTarget>>) {
        match target {
            Some(t) => {
                if let Some(shared) = &self.shared
                    && shared.coherent()
                    && let Err(unavailable) = shared.put_if_newer(t).await
                {
                    // Counted and logged by the call. Nothing to redeliver:
                    // a fill only copies what the database already has.
                    tracing::trace!(result = unavailable.as_str(), "fill not written to Redis");
                }
                self.fill_local(code, Entry::Found(t.clone()), miss).await;
            }
            None => self.fill_local(code, Entry::Missing, miss).await,
        }
    }

    async fn fill_local(&self, code: &str, entry: Entry, miss: Miss) {
        if self.generation.load(Ordering::Acquire) == miss.generation {
            self.local.insert(code.to_owned(), cached(entry));
        }
    }

    /// How long an entry is any use: a link's, while it may still be served
    /// stale; a missing code's, its TTL.
    fn keep_for(&self, entry: &Entry) -> Duration {
        match entry {
            Entry::Found(_) => self.fresh_for.max(self.stale_for),
            Entry::Missing => self.missing_for,
        }
    }

    /// Tells every replica that these URLs changed (created, updated,
    /// deactivated). Call after the change is committed.
    pub async fn changed(&self, targets: &[RedirectTarget]) {
        if targets.is_empty() {
            return;
        }
        let codes: Vec<&str> = targets.iter().map(|t| t.short_code.as_str()).collect();
        self.evict_local(&codes).await;
        if let Some(shared) = &self.shared {
            let mut delivered = true;
            for target in targets {
                if shared.put_if_newer(target).await.is_err() {
                    delivered = false;
                    break;
                }
            }
            if !delivered || shared.publish(&codes).await.is_err() {
                // Other replicas may not hear of it yet: retried in the
                // background, and until then this replica is not coherent
                // either (short TTL, no Redis reads).
                shared.defer(targets);
            }
        }
    }

    /// Drops codes from this replica's L1 (on a local change, or when
    /// another replica announces one).
    pub async fn evict_local(&self, codes: &[&str]) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for code in codes {
            self.local.remove(*code);
        }
    }

    /// Drops everything from L1: after a gap in the invalidation feed.
    pub fn evict_all_local(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.local.clear();
    }

    /// Loads targets into L1 and (without replacing anything) into Redis.
    pub async fn warm(&self, targets: Vec<RedirectTarget>) {
        if let Some(shared) = &self.shared {
            shared.warm(&targets).await;
        }
        for target in targets {
            let code = target.short_code.clone();
            self.local
                .insert(code, cached(Entry::Found(Arc::new(target))));
        }
    }

    /// Entries in L1.
    pub fn local_entries(&self) -> u64 {
        u64::try_from(self.local.len()).unwrap_or(u64::MAX)
    }

    /// L1's weighed size (see [`Weight`]).
    pub fn local_weighted_size(&self) -> u64 {
        self.local.weight()
    }

    pub fn shared(&self) -> Option<&SharedCache> {
        self.shared.as_ref()
    }

    fn count(&self, tier: &str, result: &str) {
        self.metrics
            .cache_lookups
            .with_label_values(&[tier, result])
            .inc();
    }
}

fn cached(entry: Entry) -> Cached {
    Cached {
        entry,
        at: Instant::now(),
    }
}

fn found(entry: Entry) -> Option<Arc<RedirectTarget>> {
    match entry {
        Entry::Found(target) => Some(target),
        Entry::Missing => None,
    }
}

impl LinkCache {
    /// Follows other replicas' change announcements for as long as the
    /// cache lives, reconnecting after any failure. After a reconnect the
    /// whole L1 is dropped: messages sent while we were away are lost.
    pub fn spawn_invalidation_listener(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let shared = self.shared.as_ref()?;
        let channel = shared.channel();
        let cache = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut reconnect = false;
            loop {
                if let Err(err) = listen(&channel, &cache, reconnect).await {
                    tracing::debug!(error = %err, "invalidation feed interrupted");
                }
                let Some(live) = cache.upgrade() else {
                    return;
                };
                if let Some(shared) = live.shared() {
                    shared.feed(false, false);
                }
                drop(live);
                reconnect = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}

impl LinkCache {
    /// Redelivers queued changes every [`REPAIR_INTERVAL`] and pings Redis
    /// every [`HEARTBEAT_INTERVAL`], for as long as the cache lives.
    pub fn spawn_maintenance(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.shared.as_ref()?;
        let cache = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut last_ping = Instant::now();
            loop {
                tokio::time::sleep(REPAIR_INTERVAL).await;
                let Some(live) = cache.upgrade() else {
                    return;
                };
                let Some(shared) = live.shared() else {
                    return;
                };
                shared.redeliver().await;
                if last_ping.elapsed() >= HEARTBEAT_INTERVAL {
                    last_ping = Instant::now();
                    // A failure is recorded (and distrusts the feed) in ping.
                    shared.ping().await;
                }
                shared.report_coherence();
            }
        }))
    }
}

async fn listen(
    channel: &str,
    cache: &std::sync::Weak<LinkCache>,
    reconnect: bool,
) -> redis::RedisResult<()> {
    use futures_util::StreamExt;

    let Some(subscribing) = cache.upgrade() else {
        return Ok(());
    };
    let Some(shared) = subscribing.shared() else {
        return Ok(());
    };
    // Bounded: a connection that never answers (seen: a socket connected
    // to itself while Redis was down on the same host) must not hold the
    // feed forever.
    let pubsub = shared
        .redis()
        .subscribe(channel, Duration::from_secs(2))
        .await;
    drop(subscribing);
    let pubsub = pubsub?;
    if let Some(cache) = cache.upgrade() {
        if reconnect {
            cache.evict_all_local();
            tracing::info!("invalidation feed restored; local cache flushed");
        }
        if let Some(shared) = cache.shared() {
            shared.feed(true, reconnect);
        }
    }
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        let payload: String = message.get_payload()?;
        let Some(cache) = cache.upgrade() else {
            return Ok(());
        };
        let codes: Vec<&str> = payload.split(' ').filter(|c| !c.is_empty()).collect();
        cache.evict_local(&codes).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeConfig;

    fn target(n: usize, url_len: usize) -> RedirectTarget {
        RedirectTarget {
            short_code: format!("c{n:06}"),
            url_id: i64::try_from(n).unwrap(),
            user_id: None,
            original_url: format!("https://e.com/{}", "x".repeat(url_len)),
            is_active: true,
            version: 1,
            policy: None,
        }
    }

    fn cache(flags: &[&str]) -> Arc<LinkCache> {
        let settings = ServeConfig::from_flags(flags).unwrap().cache;
        LinkCache::new(&settings, None, Arc::new(Metrics::new().unwrap()))
    }

    #[tokio::test]
    async fn long_targets_cannot_grow_the_cache_past_its_byte_budget() {
        let budget: u64 = 256 * 1024;
        let cache = cache(&["--cache-max-bytes", "262144"]);
        // 2 000 targets of 8 KiB: 16 MiB offered to a 256 KiB budget.
        cache
            .warm((0..2_000).map(|n| target(n, 8 * 1024)).collect())
            .await;
        let weighed = cache.local_weighted_size();
        assert!(weighed <= budget, "{weighed} > {budget}");
        let entries = cache.local_entries();
        assert!(entries > 0 && entries <= 32, "{entries} entries");
        // Each entry weighs at least its URL.
        assert!(weighed >= entries * 8 * 1024, "{weighed} for {entries}");
    }

    #[tokio::test]
    async fn a_stale_copy_is_served_only_when_allowed_and_counted() {
        let off = cache(&["--stale-if-error-secs", "0"]);
        off.warm(vec![target(1, 10)]).await;
        assert!(off.stale("c000001").await.is_none());
        assert_eq!(off.metrics.cache_stale_served.get(), 0);
        let on = cache(&[]);
        on.warm(vec![target(1, 10)]).await;
        let copy = on.stale("c000001").await.flatten();
        assert_eq!(copy.map(|t| t.url_id), Some(1));
        assert!(on.stale("c000002").await.is_none(), "nothing to serve");
        assert_eq!(on.metrics.cache_stale_served.get(), 1);
        // A change evicts the copy: it is never served after one.
        on.evict_local(&["c000001"]).await;
        assert!(on.stale("c000001").await.is_none());
    }

    #[tokio::test]
    async fn the_entry_bound_still_holds_for_short_targets() {
        let cache = cache(&["--cache-max-bytes", "1048576", "--cache-capacity", "100"]);
        cache
            .warm((0..1_000).map(|n| target(n, 10)).collect())
            .await;
        let entries = cache.local_entries();
        assert!(entries > 0 && entries <= 100, "{entries} entries");
        assert!(cache.local_weighted_size() <= 1_048_576);
    }

    /// Entries expire when looked up past their TTL: a code known not to exist after
    /// `NEGATIVE_CACHE_TTL_SECONDS`, a link after `LOCAL_CACHE_TTL_SECONDS` (then kept,
    /// for stale-if-error only, up to `STALE_IF_ERROR_SECS`, and dropped after that).
    #[tokio::test]
    async fn entries_expire_when_looked_up_past_their_ttl() {
        let cache = cache(&[
            "--negative-cache-ttl-seconds",
            "1",
            "--local-cache-ttl-seconds",
            "1",
            "--stale-if-error-secs",
            "2",
        ]);
        cache.warm(vec![target(1, 10)]).await;
        let miss = cache.lookup_local("c000002").await.unwrap_err();
        cache.fill("c000002", miss, None).await;
        assert_eq!(cache.local_entries(), 2);
        let hit = cache.lookup_local("c000001").await.unwrap();
        assert_eq!(hit.map(|t| t.url_id), Some(1));
        assert!(matches!(cache.lookup_local("c000002").await, Ok(None)));

        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(cache.lookup_local("c000001").await.is_err(), "past its TTL");
        assert!(cache.lookup_local("c000002").await.is_err(), "past its TTL");
        assert_eq!(
            cache.local_entries(),
            1,
            "the link is kept for stale-if-error"
        );
        assert!(cache.stale("c000001").await.flatten().is_some());

        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(cache.lookup_local("c000001").await.is_err());
        assert_eq!(cache.local_entries(), 0, "no use left in the link's entry");
        assert!(cache.stale("c000001").await.is_none());
    }
}
