//! A URL shortener for platform teams: the HTTP service.
//!
//! Layers, outside in: [`http`] (routing, extractors, the one error type),
//! [`events`] (click recording), [`store`] (the storage trait and its SQL
//! backends), [`domain`] (values valid by construction).

pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod metrics;
pub mod seed;
pub mod store;
pub mod telemetry;

use std::sync::Arc;

use crate::events::DirectRecorder;
use crate::http::{AppState, Auth};
use crate::metrics::Metrics;
use crate::store::DynStore;

/// The application state for a store and an access policy, with the default
/// click recorder and fresh metrics.
pub fn app_state(
    store: DynStore,
    auth: Auth,
    public_base_url: Option<String>,
) -> anyhow::Result<AppState> {
    Ok(AppState {
        clicks: Arc::new(DirectRecorder::new(store.clone())),
        store,
        auth: Arc::new(auth),
        metrics: Arc::new(Metrics::new()?),
        public_base_url,
    })
}
