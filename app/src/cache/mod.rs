//! The redirect lookup cache: an in-process L1 (bounded, short TTL, negative
//! entries too) in front of Redis (shared by all replicas) in front of the
//! database.
//!
//! Coherence: every write that changes what a short code resolves to calls
//! [`RedirectCache::changed`], which evicts the code from this replica's L1,
//! writes the new value to Redis (never replacing a newer version with an
//! older one) and publishes the code on a Redis channel; every replica
//! evicts it from its L1 on receipt. TTLs are the safety net for a missed
//! message, and a replica that re-subscribes after losing Redis flushes its
//! whole L1, since it may have missed messages meanwhile.

mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

pub use shared::SharedCache;

use crate::metrics::Metrics;
use crate::store::{RedirectTarget, Store, StoreResult};

/// What the cache knows about a code.
#[derive(Debug, Clone)]
enum Entry {
    Found(Arc<RedirectTarget>),
    /// The code names no URL (as of a recent lookup).
    Missing,
}

/// Where a lookup was answered, for `X-Cache` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Local,
    Shared,
    Database,
}

impl Source {
    pub fn is_hit(self) -> bool {
        self != Source::Database
    }
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Most entries the L1 keeps.
    pub capacity: u64,
    /// How long an L1 entry may be served without hearing of a change.
    pub local_ttl: Duration,
    /// How long "no such code" is remembered in L1.
    pub negative_ttl: Duration,
    /// TTL of entries in Redis.
    pub shared_ttl: Duration,
}

struct TtlPerKind {
    found: Duration,
    missing: Duration,
}

impl Expiry<String, Entry> for TtlPerKind {
    fn expire_after_create(&self, _: &String, value: &Entry, _: Instant) -> Option<Duration> {
        Some(match value {
            Entry::Found(_) => self.found,
            Entry::Missing => self.missing,
        })
    }
}

pub struct RedirectCache {
    local: Cache<String, Entry>,
    /// Bumped by every eviction. A fill that read the database (or Redis)
    /// before an eviction must not land after it, or it would bring back
    /// the stale value: fills only happen if the generation is unchanged.
    generation: AtomicU64,
    shared: Option<SharedCache>,
    metrics: Arc<Metrics>,
}

impl RedirectCache {
    pub fn new(
        config: &CacheConfig,
        shared: Option<SharedCache>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let local = Cache::builder()
            .max_capacity(config.capacity)
            .expire_after(TtlPerKind {
                found: config.local_ttl,
                missing: config.negative_ttl,
            })
            .build();
        Arc::new(Self {
            local,
            generation: AtomicU64::new(0),
            shared,
            metrics,
        })
    }

    /// Resolves a code: L1, then Redis, then the store, filling the tiers
    /// it missed on the way back.
    pub async fn resolve(
        &self,
        code: &str,
        store: &dyn Store,
    ) -> StoreResult<(Option<Arc<RedirectTarget>>, Source)> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(entry) = self.local.get(code).await {
            self.count("local", "hit");
            return Ok((found(entry), Source::Local));
        }
        self.count("local", "miss");
        if let Some(shared) = &self.shared {
            match shared.get(code).await {
                Ok(Some(target)) => {
                    self.count("shared", "hit");
                    let target = Arc::new(target);
                    self.fill_local(code, Entry::Found(target.clone()), generation)
                        .await;
                    return Ok((Some(target), Source::Shared));
                }
                Ok(None) => self.count("shared", "miss"),
                Err(unavailable) => self.count("shared", unavailable.as_str()),
            }
        }
        let target = store.resolve(code).await?.map(Arc::new);
        match &target {
            Some(t) => {
                if let Some(shared) = &self.shared {
                    shared.put_if_newer(t).await;
                }
                self.fill_local(code, Entry::Found(t.clone()), generation)
                    .await;
            }
            None => self.fill_local(code, Entry::Missing, generation).await,
        }
        Ok((target, Source::Database))
    }

    async fn fill_local(&self, code: &str, entry: Entry, generation: u64) {
        if self.generation.load(Ordering::Acquire) == generation {
            self.local.insert(code.to_owned(), entry).await;
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
            for target in targets {
                shared.put_if_newer(target).await;
            }
            shared.publish(&codes).await;
        }
    }

    /// Drops codes from this replica's L1 (on a local change, or when
    /// another replica announces one).
    pub async fn evict_local(&self, codes: &[&str]) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for code in codes {
            self.local.invalidate(*code).await;
        }
    }

    /// Drops everything from L1: after a gap in the invalidation feed.
    pub fn evict_all_local(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.local.invalidate_all();
    }

    /// Loads targets into L1 and (without replacing anything) into Redis.
    pub async fn warm(&self, targets: Vec<RedirectTarget>) {
        if let Some(shared) = &self.shared {
            shared.warm(&targets).await;
        }
        for target in targets {
            let code = target.short_code.clone();
            self.local
                .insert(code, Entry::Found(Arc::new(target)))
                .await;
        }
    }

    /// Entries in L1 (approximate; for metrics).
    pub fn local_entries(&self) -> u64 {
        self.local.entry_count()
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

fn found(entry: Entry) -> Option<Arc<RedirectTarget>> {
    match entry {
        Entry::Found(target) => Some(target),
        Entry::Missing => None,
    }
}

impl RedirectCache {
    /// Follows other replicas' change announcements for as long as the
    /// cache lives, reconnecting after any failure. After a reconnect the
    /// whole L1 is dropped: messages sent while we were away are lost.
    pub fn spawn_invalidation_listener(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let shared = self.shared.as_ref()?;
        let (client, channel) = (shared.client().clone(), shared.channel());
        let cache = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut reconnect = false;
            loop {
                if let Err(err) = listen(&client, &channel, &cache, reconnect).await {
                    tracing::debug!(error = %err, "invalidation feed interrupted");
                }
                if cache.strong_count() == 0 {
                    return;
                }
                reconnect = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}

async fn listen(
    client: &redis::Client,
    channel: &str,
    cache: &std::sync::Weak<RedirectCache>,
    reconnect: bool,
) -> redis::RedisResult<()> {
    use futures_util::StreamExt;

    let mut pubsub = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    // Bounded: a connection that never answers (seen: a socket connected
    // to itself while Redis was down on the same host) must not hold the
    // feed forever.
    tokio::time::timeout(Duration::from_secs(2), pubsub.subscribe(channel))
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "subscribe timed out")))??;
    if reconnect && let Some(cache) = cache.upgrade() {
        cache.evict_all_local();
        tracing::info!("invalidation feed restored; local cache flushed");
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
