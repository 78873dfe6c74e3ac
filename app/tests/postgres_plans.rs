//! Every lookup and filter the API runs is served by an index. With
//! sequential scans priced out (`enable_seqscan = off`), PostgreSQL still
//! picks one when no index fits, so a "Seq Scan" in a plan is a missing index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestDatabase};
use sqlx::{Connection, Executor, PgConnection};

/// A connection to a migrated database where sequential scans are priced out and prepared
/// statements get the generic plan (as a statement prepared once and run many times does).
async fn generic_planner() -> (TestDatabase, PgConnection) {
    let db = TestDatabase::new(Backend::Postgres).await;
    db.store().await; // applies the migrations
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
        .await
        .unwrap();
    (db, conn)
}

/// The lines of `EXPLAIN <statement>`.
async fn explain(conn: &mut PgConnection, statement: &str) -> Vec<String> {
    let plan: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN {statement}")))
        .fetch_all(conn)
        .await
        .unwrap();
    plan.into_iter().map(|(line,)| line).collect()
}

#[tokio::test]
async fn every_api_query_is_served_by_an_index() {
    let db = TestDatabase::new(Backend::Postgres).await;
    db.store().await; // applies the migrations
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute("SET enable_seqscan = off").await.unwrap();
    let queries = [
        // The redirect.
        "SELECT id, user_id, original_url, is_active FROM urls WHERE short_code = 'abc'",
        // Lists and their filters, as the store builds them.
        "SELECT * FROM users WHERE deleted_at IS NULL ORDER BY id LIMIT 25 OFFSET 0",
        "SELECT * FROM urls WHERE TRUE ORDER BY id LIMIT 25 OFFSET 0",
        "SELECT * FROM urls WHERE TRUE AND user_id = 1 ORDER BY id LIMIT 25 OFFSET 0",
        "SELECT * FROM urls WHERE TRUE AND is_active = false ORDER BY id LIMIT 25 OFFSET 0",
        "SELECT * FROM events WHERE TRUE AND url_id = 1 ORDER BY id LIMIT 25 OFFSET 0",
        "SELECT * FROM events WHERE TRUE AND user_id = 1 ORDER BY id LIMIT 25 OFFSET 0",
        "SELECT * FROM events WHERE TRUE AND event_type = 'redirect' ORDER BY id LIMIT 25 OFFSET 0",
        "SELECT * FROM events WHERE TRUE AND url_id = 1 AND event_type = 'redirect' ORDER BY id LIMIT 25",
        "SELECT COUNT(*) FROM events WHERE TRUE AND url_id = 1",
        "SELECT COUNT(*) FROM urls WHERE TRUE AND user_id = 1",
        // The active-URL gauge.
        "SELECT COUNT(*) FROM (SELECT 1 FROM urls WHERE is_active LIMIT 10001) AS matching",
        // Stats.
        "SELECT event_type, COUNT(*) FROM events WHERE url_id = 1 \
         AND event_type <> 'redirect' GROUP BY event_type",
        "SELECT redirect_count, last_redirect_at FROM redirect_counts WHERE url_id = 1",
        // Uniqueness checks.
        "SELECT id FROM users WHERE lower(email) = 'a@b.co' AND deleted_at IS NULL",
        "SELECT id FROM users WHERE id = 1 AND deleted_at IS NULL",
    ];
    for query in queries {
        let plan = explain(&mut conn, query).await;
        assert!(
            !plan.iter().any(|line| line.contains("Seq Scan")),
            "{query}\n{}",
            plan.join("\n")
        );
    }
}

/// Clicks write no index for event types (migration 0007): listing any other type reads one
/// of the partial indexes of the other types, as the store words the filter, never entries
/// of a hot link's redirects. (Which of the two the planner picks on an empty table is its
/// business.)
#[tokio::test]
async fn other_event_types_are_listed_from_indexes_clicks_never_write() {
    let (_db, mut conn) = generic_planner().await;
    for query in [
        "SELECT * FROM events WHERE TRUE AND event_type <> 'redirect' \
         AND event_type = $1 ORDER BY id LIMIT 25 OFFSET 0",
        "SELECT * FROM events WHERE TRUE AND url_id = $2 AND event_type <> 'redirect' \
         AND event_type = $1 ORDER BY id LIMIT 25 OFFSET 0",
    ] {
        conn.execute("DEALLOCATE ALL").await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "PREPARE listing(text, bigint) AS {query}"
        )))
        .await
        .unwrap();
        let plan = explain(&mut conn, "EXECUTE listing('updated', 1)").await;
        // Every index read ("Index Scan using", "Index Only Scan using", "Bitmap Index Scan
        // on") is of a partial index of the other types, and the table is not scanned.
        let reads: Vec<_> = plan
            .iter()
            .filter(|line| line.contains("Index Scan") || line.contains("Index Only Scan"))
            .collect();
        assert!(
            !reads.is_empty()
                && reads.iter().all(|line| line.contains("_other_type_idx"))
                && !plan.iter().any(|line| line.contains("Seq Scan")),
            "{query}\n{}",
            plan.join("\n")
        );
    }
}

/// Stats count a link's non-redirect events from the partial index that
/// holds only those, also in the generic plan a prepared statement gets
/// (so a link's millions of clicks are never read to count its edits).
#[tokio::test]
async fn stats_counts_skip_redirect_entries_even_when_prepared() {
    let (_db, mut conn) = generic_planner().await;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "PREPARE counts(bigint) AS {}",
        shortener::store::sql::EVENT_COUNTS_FOR_URL
    )))
    .await
    .unwrap();
    let plan = explain(&mut conn, "EXECUTE counts(1)").await;
    assert!(
        plan.iter()
            .any(|line| line.contains("events_url_id_other_type_idx")),
        "{}",
        plan.join("\n")
    );
}

/// Past the count cap, totals come from the planner instead of reading
/// every matching row; smaller filtered totals stay exact.
#[tokio::test]
async fn large_totals_are_estimated_small_ones_exact() {
    use shortener::store::{EventFilter, Page, UrlFilter};
    let db = TestDatabase::new(Backend::Postgres).await;
    let store = db.store().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    conn.execute(
        "INSERT INTO urls (short_code, original_url, created_at, updated_at) \
         VALUES ('bulk', 'https://e.com', now(), now()), ('few', 'https://e.com', now(), now());
         INSERT INTO events (url_id, event_type, timestamp) \
         SELECT 1, 'redirect', now() FROM generate_series(1, 120000);
         INSERT INTO events (url_id, event_type, timestamp) \
         SELECT 2, 'redirect', now() FROM generate_series(1, 7);
         ANALYZE events;",
    )
    .await
    .unwrap();
    let all = store
        .list_events(EventFilter::default(), Page::default())
        .await
        .unwrap();
    assert!(all.estimated);
    assert!(all.total > 100_000, "{}", all.total);
    assert_eq!(all.items.len(), 25);
    let few = EventFilter {
        url_id: Some(2),
        ..Default::default()
    };
    let few = store.list_events(few, Page::default()).await.unwrap();
    assert_eq!((few.total, few.estimated), (7, false));
    let urls = store
        .list_urls(UrlFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!((urls.total, urls.estimated), (2, false));
    // Keyset paging reaches the end of a large listing in one seek.
    let tail = Page {
        after_id: Some(119_990),
        ..Page::default()
    };
    let tail = store
        .list_events(EventFilter::default(), tail)
        .await
        .unwrap();
    assert_eq!(tail.items.first().map(|e| e.id), Some(119_991));
    assert_eq!(tail.items.len(), 17);
}
