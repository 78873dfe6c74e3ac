//! A URL shortener for platform teams: the HTTP service.
//!
//! Layers, outside in: [`service`] (configuration to a listening socket and
//! back), [`http`] (routing, extractors, the one error type), [`links`] (a
//! link's life: resolving codes through the cache tiers, creating,
//! changing and deactivating links), [`clicks`] (recording each answered
//! redirect), [`store`] (the storage trait and its SQL backends),
//! [`domain`] (values valid by construction).

pub mod analytics;
pub mod bots;
pub mod clicks;
pub mod config;
pub mod domain;
pub mod http;
pub mod import;
pub mod keys;
pub mod limits;
pub mod links;
pub mod metrics;
pub mod seed;
pub mod service;
pub mod shared_redis;
pub mod store;
pub mod telemetry;

pub use service::Service;
