//! A link's life: resolving a short code, creating, changing and
//! deactivating links. [`Links`] is the one owner of that life, so the cache
//! tiers stay coherent by construction: every change goes through here and
//! reaches every tier (this replica's L1, Redis, the other replicas) before
//! the caller hears it is done. Handlers never touch a cache.
//!
//! Reads that do not resolve a code (lists, stats) go to the store
//! directly: no cache holds them.

mod cache;
mod shared;

use std::sync::Arc;

pub use cache::Source;
use cache::{LinkCache, Lookup};
pub use shared::SharedCache;

use crate::config::CacheSettings;
use crate::domain::ShortCode;
use crate::metrics::Metrics;
use crate::shared_redis::SharedRedis;
use crate::store::{
    Actor, DynStore, Imported, ImportedUrl, NewUrl, RedirectTarget, StoreError, StoreResult, Url,
    UrlPatch, UserDeletion,
};

pub struct Links {
    store: DynStore,
    cache: Arc<LinkCache>,
    metrics: Arc<Metrics>,
}

/// What a short code resolved to.
pub struct Resolved {
    /// The active link, or `None` for an unknown or deactivated code.
    pub target: Option<Arc<RedirectTarget>>,
    /// Which tier answered.
    pub source: Source,
}

impl Resolved {
    fn of(target: Option<Arc<RedirectTarget>>, source: Source) -> Self {
        Self {
            target: target.filter(|t| t.is_active),
            source,
        }
    }
}

/// What the in-process cache alone says about a code.
pub enum Local {
    Resolved(Resolved),
    /// Not known in process: resolving it means asking Redis or the
    /// database ([`Links::resolve_beyond`]).
    Beyond(Beyond),
}

/// A lookup the in-process cache could not answer.
pub struct Beyond(cache::Miss);

impl Links {
    /// The tiers over `store`; with `redis`, the shared tier and the
    /// invalidation feed from other replicas.
    pub fn new(
        store: DynStore,
        settings: &CacheSettings,
        redis: Option<Arc<SharedRedis>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let shared =
            redis.map(|redis| SharedCache::new(redis, settings.cache_ttl_seconds, metrics.clone()));
        let cache = LinkCache::new(settings, shared, metrics.clone());
        cache.spawn_invalidation_listener();
        cache.spawn_maintenance();
        Self {
            store,
            cache,
            metrics,
        }
    }

    /// L1 only: an answer, or what [`Links::resolve_beyond`] needs to ask
    /// Redis and the database. Costs no I/O.
    pub async fn resolve_local(&self, code: &str) -> Local {
        match self.cache.lookup_local(code).await {
            Ok(target) => Local::Resolved(Resolved::of(target, Source::Local)),
            Err(miss) => Local::Beyond(Beyond(miss)),
        }
    }

    /// Redis, then the database, filling the tiers that missed. When
    /// neither answers (Redis did not have it or was not asked, and the
    /// database is unavailable), this replica's last copy if it has one
    /// young enough (stale-if-error, [`Source::Stale`]).
    pub async fn resolve_beyond(&self, code: &str, Beyond(miss): Beyond) -> StoreResult<Resolved> {
        let (target, source) = match self.cache.lookup_shared(code, miss).await {
            Lookup::Hit(target, source) => (target, source),
            Lookup::Miss(miss) => match self.store.resolve(code).await {
                Ok(target) => {
                    let target = target.map(Arc::new);
                    self.cache.fill(code, miss, target.as_ref()).await;
                    (target, Source::Database)
                }
                Err(err @ StoreError::Unavailable(_)) => match self.cache.stale(code).await {
                    Some(target) => (target, Source::Stale),
                    None => return Err(err),
                },
                Err(err) => return Err(err),
            },
        };
        Ok(Resolved::of(target, source))
    }

    /// Creates a link under `code`, or a generated code when `None`.
    pub async fn create(
        &self,
        url: NewUrl,
        code: Option<&ShortCode>,
        by: Actor,
    ) -> StoreResult<Url> {
        let created = match code {
            Some(code) => self.store.insert_url(url, code, by).await?,
            None => self.store.create_url_with_generated_code(url, by).await?,
        };
        // A replica may remember this code as missing (a negative entry).
        self.cache.changed(&[created.target()]).await;
        self.metrics.urls_created.inc();
        Ok(created)
    }

    /// Imports links with their own codes for `user_id` ([`Store::import_urls`]).
    pub async fn import(
        &self,
        user_id: Option<i64>,
        urls: Vec<ImportedUrl>,
        by: Actor,
    ) -> StoreResult<Vec<Imported>> {
        let outcomes = self.store.import_urls(user_id, urls, by).await?;
        let created: Vec<_> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Imported::New(url) => Some(url.target()),
                Imported::Existing | Imported::Taken => None,
            })
            .collect();
        // A replica may remember these codes as missing (negative entries).
        self.cache.changed(&created).await;
        self.metrics.urls_created.inc_by(created.len() as u64);
        Ok(outcomes)
    }

    pub async fn update(&self, id: i64, patch: UrlPatch, by: Actor) -> StoreResult<Url> {
        let updated = self.store.update_url(id, patch, by).await?;
        self.cache.changed(&[updated.target()]).await;
        Ok(updated)
    }

    /// Soft delete: the link stops redirecting everywhere.
    pub async fn deactivate(&self, id: i64, reason: &str, by: Actor) -> StoreResult<Url> {
        let url = self.store.deactivate_url(id, reason, by).await?;
        self.cache.changed(&[url.target()]).await;
        Ok(url)
    }

    /// Deletes a user; each of their active links is deactivated.
    pub async fn delete_owner(&self, user_id: i64, by: Actor) -> StoreResult<UserDeletion> {
        let deletion = self.store.delete_user(user_id, by).await?;
        let targets: Vec<_> = deletion.deactivated.iter().map(Url::target).collect();
        self.cache.changed(&targets).await;
        Ok(deletion)
    }

    /// Loads up to `entries` of the most recent active links into the
    /// caches.
    pub async fn warm(&self, entries: i64) -> StoreResult<usize> {
        if entries == 0 {
            return Ok(0);
        }
        let targets = self.store.recent_active_targets(entries).await?;
        let count = targets.len();
        self.cache.warm(targets).await;
        Ok(count)
    }

    /// Sets the L1's size gauges: entries, and weighed bytes (estimated,
    /// bounded by `CACHE_MAX_BYTES`).
    pub async fn sample_size(&self) {
        let entries = i64::try_from(self.cache.local_entries()).unwrap_or(i64::MAX);
        self.metrics.cache_entries.set(entries);
        let bytes = i64::try_from(self.cache.local_weighted_size()).unwrap_or(i64::MAX);
        self.metrics.cache_bytes.set(bytes);
    }
}
