//! Click recording: how an answered redirect becomes a `redirect` event.
//!
//! Handlers only see [`ClickRecorder`]; how clicks reach the database
//! (one by one, batched, buffered while the database is away) is this
//! module's business and can change without touching a handler.

mod batch;

pub use batch::{BatchConfig, BatchRecorder};

use async_trait::async_trait;

use crate::store::{Click, StoreResult};

#[async_trait]
pub trait ClickRecorder: Send + Sync + 'static {
    /// Records one click. When this returns `Ok`, the event is durable and
    /// visible to `GET /events`.
    async fn record(&self, click: Click) -> StoreResult<()>;
}
