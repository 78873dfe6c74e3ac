//! What every handler and layer of the API shares.

use std::sync::Arc;

use crate::clicks::ClickRecorder;
use crate::keys::KeyCheck;
use crate::limits::RateLimit;
use crate::links::Links;
use crate::metrics::Metrics;
use crate::shared_redis::SharedRedis;
use crate::store::DynStore;

use super::client::TrustedProxies;

/// Everything a handler may use. Cloned for every request by each layer
/// and extractor that takes it, so it is one `Arc`: a clone is one atomic
/// increment, whatever it holds.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    /// Users, keys, events and every read that no cache holds; what
    /// resolves or changes a link goes through `links` instead, which keeps
    /// the caches and the other replicas told.
    pub store: DynStore,
    /// Everything that resolves or changes a link.
    pub links: Arc<Links>,
    pub clicks: ClickRecorder,
    pub keys: KeyCheck,
    pub rate_limit: RateLimit,
    /// The Redis the replicas share, when configured: whether it answers is
    /// what `/health` reports of the cache.
    pub redis: Option<Arc<SharedRedis>>,
    /// Who may name the client instead of the TCP peer.
    pub proxies: TrustedProxies,
    pub metrics: Arc<Metrics>,
    /// The stores as last sampled, for `/health`.
    pub health: Arc<crate::metrics::StoreHealth>,
    pub public_base_url: Option<String>,
    /// Which targets links may point at.
    pub target_policy: crate::domain::TargetPolicy,
    /// `REQUEST_TIMEOUT_SECS`: the redirect applies it itself, to its lookups beyond the
    /// in-process cache (the other routes have a layer for it).
    pub request_timeout: std::time::Duration,
    /// Which visits are bots' (recorded, not counted).
    pub bots: crate::bots::Bots,
    /// The salted daily visitor hash of the analytics.
    pub visitors: Arc<crate::analytics::Visitors>,
    /// Set at SIGTERM when a drain is configured: `/readyz` answers 503 while requests are
    /// still served, so load balancers take the replica out before it stops accepting.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Link passwords hashed or checked at once (Argon2id: ~20 ms of a core and 19 MiB
    /// each), so that a burst of attempts queues instead of taking every core and the memory.
    pub password_work: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// `work` (hashing or checking a link password) off the request threads, when one of
    /// [`Shared::password_work`]'s permits is free.
    pub async fn password_task<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, super::error::ApiError> {
        let _permit = self
            .password_work
            .acquire()
            .await
            .map_err(|_| super::error::ApiError::Internal)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| super::error::ApiError::Internal)
    }
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
