//! Kubernetes operator that turns one `Shortener` resource into the whole URL-shortener stack.

pub mod children;
pub mod crd;
pub mod error;

pub use error::{Error, Result};
