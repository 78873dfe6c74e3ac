//! Click recording: how an answered redirect becomes a `redirect` event.
//!
//! Handlers only see [`ClickRecorder`]; how clicks reach the database
//! (one by one, batched, buffered while the database is away) is this
//! module's business and can change without touching a handler.

use async_trait::async_trait;

use crate::store::{Click, DynStore, StoreResult};

#[async_trait]
pub trait ClickRecorder: Send + Sync + 'static {
    /// Records one click. When this returns `Ok`, the event is durable and
    /// visible to `GET /events`.
    async fn record(&self, click: Click) -> StoreResult<()>;
}

/// Writes each click straight through to the store before the redirect is
/// answered: simple, and every answered redirect is recorded.
pub struct DirectRecorder {
    store: DynStore,
}

impl DirectRecorder {
    pub fn new(store: DynStore) -> Self {
        Self { store }
    }
}

#[async_trait]
impl ClickRecorder for DirectRecorder {
    async fn record(&self, click: Click) -> StoreResult<()> {
        self.store.record_clicks(std::slice::from_ref(&click)).await
    }
}
