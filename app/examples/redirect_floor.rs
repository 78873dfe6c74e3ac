//! The floor under the redirect: the service's own HTTP loop
//! (`serve_http1`: tokio, hyper, axum's router, the same allocator) answering
//! every `GET /{code}` with a fixed 302, with no middleware, cache, database or
//! click behind it. What any redirect built on this stack can do at most on
//! a core; `loadtests/wrk/floor.sh` measures it beside nginx's `return 302`.
//!
//! Run: `cargo build --release --example redirect_floor -p shortener`, then
//! `LISTEN_ADDR=127.0.0.1:18089 target/release/examples/redirect_floor`.

use std::time::Duration;

use axum::http::{StatusCode, header::LOCATION};
use axum::routing::get;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:18089".to_owned());
    let router = axum::Router::new().route(
        "/{code}",
        get(|| async { (StatusCode::FOUND, [(LOCATION, "https://example.com/")]) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    shortener::service::serve_http1(
        listener,
        router,
        std::future::pending(),
        Duration::from_secs(10),
    )
    .await?;
    Ok(())
}
