//! Links as Kubernetes resources: the `ShortLink` custom resource and the controller that
//! keeps each one in its Shortener's service.

pub mod crd;
pub mod service;
pub mod sync;

pub use crd::{ShortLink, ShortLinkSpec, ShortLinkStatus};
