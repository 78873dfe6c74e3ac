//! Click writers of several replicas on one PostgreSQL database, hitting
//! the same hot links at once: they queue for the counter rows, they never
//! deadlock, and every click is counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestDatabase};
use shortener::domain::{TargetUrl, now};
use shortener::store::{Actor, BatchOrigin, Click, NewUrl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_hot_links_never_deadlock() {
    writers_on_hot_links(Backend::Postgres).await;
}

/// The same through PgBouncer's transaction pooling: connections are
/// shared between the writers' transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_through_pgbouncer_never_deadlock() {
    writers_on_hot_links(Backend::PgBouncer).await;
}

async fn writers_on_hot_links(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let setup = db.store().await;
    let mut urls = Vec::new();
    for n in 0..50 {
        let url = NewUrl {
            user_id: None,
            original_url: TargetUrl::parse(&format!("https://e.com/{n}")).unwrap(),
            title: None,
            policy: Default::default(),
        };
        urls.push(
            setup
                .create_url_with_generated_code(url, Actor::NONE)
                .await
                .unwrap(),
        );
    }
    const REPLICAS: usize = 4;
    const BATCHES: usize = 25;
    const PER_BATCH: usize = 200;
    let mut writers = Vec::new();
    for replica in 0..REPLICAS {
        let store = db.store().await;
        let urls = urls.clone();
        writers.push(tokio::spawn(async move {
            for batch in 0..BATCHES {
                // Each writer walks the links in its own order.
                let clicks: Vec<Click> = (0..PER_BATCH)
                    .map(|i| {
                        let url = &urls[(i * (replica + 3) + batch * 7) % urls.len()];
                        Click {
                            url_id: url.id,
                            user_id: None,
                            short_code: url.short_code.clone(),
                            at: now(),
                            bot: false,
                            agent: None,
                            referrer: None,
                            visitor: None,
                        }
                    })
                    .collect();
                // Two replicas share each counter shard (their writers
                // queue on the same rows); the pairs use different shards.
                let shard = i16::try_from(replica % 2).unwrap();
                let origin = BatchOrigin {
                    writer: replica as i64,
                    seq: batch as i64 + 1,
                };
                store.record_clicks(&clicks, shard, origin).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let mut total = 0;
    for url in &urls {
        total += setup.url_stats(url.id).await.unwrap().redirect_count;
    }
    assert_eq!(total, (REPLICAS * BATCHES * PER_BATCH) as i64);
}
