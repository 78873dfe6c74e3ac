//! Kubernetes operator that turns one `Shortener` resource into the whole URL-shortener stack.

pub mod children;
pub mod controller;
pub mod crd;
pub mod error;
pub mod metrics;
pub mod render;
pub mod server;

#[cfg(test)]
mod fixtures;

pub use error::{Error, Result};
