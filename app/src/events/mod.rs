//! Click recording: how an answered redirect becomes a `redirect` event.
//!
//! Handlers only see [`ClickRecorder`]; how clicks reach the database
//! (one by one, batched, buffered while the database is away) is this
//! module's business and can change without touching a handler.

mod batch;

pub use batch::{BatchConfig, BatchRecorder};

use async_trait::async_trait;

use crate::store::Click;

#[async_trait]
pub trait ClickRecorder: Send + Sync + 'static {
    /// Records one click. `Ok(Recorded::Committed)`: the event is durable
    /// and visible to `GET /events`; `Ok(Recorded::Spilled)`: it is held in
    /// memory until the database is back.
    async fn record(&self, click: Click) -> Result<Recorded, ClickLost>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Committed,
    Spilled,
}

/// Why a click was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClickLost {
    /// The write failed for a reason retrying cannot fix; the recorder has
    /// logged and counted it.
    #[error("the click could not be written")]
    Dropped,
    /// The recorder has stopped (the process is shutting down).
    #[error("the click recorder has stopped")]
    Stopped,
}
