//! Kubernetes operator that turns one `Shortener` resource into the whole URL-shortener stack.

pub mod backoff;
pub mod children;
pub mod cluster;
pub mod controller;
pub mod crd;
pub mod error;
pub mod gateway_api;
pub mod metrics;
pub mod pods;
pub mod prune;
pub mod render;
pub mod server;
pub mod settings_schema;
pub mod shortlink;
pub mod status;

#[cfg(test)]
mod fixtures;

pub use error::{Error, Result};
