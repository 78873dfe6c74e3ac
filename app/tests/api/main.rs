//! The HTTP contract, end to end over real HTTP on a real socket, through
//! the service's own start and serve path, on every backend: one module
//! per resource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod events;
mod operations;
mod redirect;
mod requests;
mod urls;
mod users;
