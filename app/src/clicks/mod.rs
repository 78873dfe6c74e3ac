//! Click recording: how an answered redirect becomes a `redirect` event.
//!
//! The redirect handler hands each click to the [`ClickRecorder`] and
//! answers; how clicks reach the database (batched, several batches at
//! once, held while the database is away) is this module's business.

mod batch;
mod spill;

pub use batch::{COUNTER_SHARDS, ClickRecorder, Visit};
