//! The hot path and its guards, against real Redis and real databases: the
//! redirect cache (hits and misses, coherence across replicas), the click
//! writer, what happens when Redis or the database goes away, and the rate
//! limit on the management API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{Backend, TestApp, TestDatabase, expect_error, redis_url, unique_prefix};
use reqwest::StatusCode;
use serde_json::json;
use shortener::links::SharedCache;
use shortener::store::RedirectTarget;

every_backend!(redirects_are_served_from_cache_after_the_first);

/// An open service with long TTLs: anything these tests see change must
/// have been pushed, not expired.
fn flags<'a>(redis: Option<&'a str>, prefix: &'a str) -> Vec<&'a str> {
    let mut flags = vec!["--auth-mode", "open", "--redis-key-prefix", prefix];
    flags.extend(["--local-cache-ttl-seconds", "600"]);
    flags.extend(["--negative-cache-ttl-seconds", "600"]);
    if let Some(redis) = redis {
        flags.extend(["--redis-url", redis]);
    }
    flags
}

/// Two replicas on one PostgreSQL database and one Redis.
async fn two_replicas() -> (TestApp, TestApp) {
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
    let (redis, prefix) = (redis_url(), unique_prefix());
    let a = TestApp::start(db.clone(), &flags(Some(&redis), &prefix)).await;
    let b = TestApp::start(db.clone(), &flags(Some(&redis), &prefix)).await;
    // Both must be listening before the test changes anything.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let channel = format!("{prefix}:invalidate");
    eventually_within(Duration::from_secs(10), "both replicas subscribe", || {
        let (mut conn, channel) = (conn.clone(), channel.clone());
        async move {
            let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            counts.first().is_some_and(|(_, n)| *n >= 2)
        }
    })
    .await;
    drop(conn);
    (a, b)
}

async fn location(app: &TestApp, code: &str) -> (StatusCode, Option<String>, String) {
    let res = app.get(&format!("/{code}")).await;
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    (
        res.status(),
        header("location"),
        header("x-cache").unwrap_or_default(),
    )
}

/// Polls until `check` holds, returning how long it took; fails after 2 s.
async fn eventually<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(Duration::from_secs(2), what, check).await
}

async fn eventually_within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

async fn redirects_are_served_from_cache_after_the_first(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://e.com/c").await;
    let code = url["short_code"].as_str().unwrap();
    assert_eq!(location(&app, code).await.2, "MISS");
    assert_eq!(location(&app, code).await.2, "HIT");
    assert_eq!(
        location(&app, "NoSuchCode").await,
        (StatusCode::NOT_FOUND, None, "MISS".into())
    );
    assert_eq!(
        location(&app, "NoSuchCode").await,
        (StatusCode::NOT_FOUND, None, "HIT".into())
    );
    // Cached or not, every redirect is recorded.
    let stats = app.get_json(&format!("/urls/{}/stats", url["id"])).await;
    assert_eq!(stats["redirect_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_replica_through_redis() {
    let (a, b) = two_replicas().await;
    let url = a.link("https://e.com/v1").await;
    let code = url["short_code"].as_str().unwrap().to_owned();
    for app in [&a, &b, &a, &b] {
        location(app, &code).await;
    }
    assert_eq!(location(&b, &code).await.2, "HIT", "B has it in process");

    a.put(
        &format!("/urls/{}", url["id"]),
        json!({"original_url": "https://e.com/v2"}),
    )
    .await;
    let took = eventually("B follows A's update", || async {
        location(&b, &code).await.1.as_deref() == Some("https://e.com/v2")
    })
    .await;
    eprintln!("update visible on the other replica after {took:?}");

    b.delete(&format!("/urls/{}", url["id"])).await;
    eventually("A stops redirecting after B's delete", || async {
        location(&a, &code).await.0 == StatusCode::NOT_FOUND
    })
    .await;

    // Deleting a user deactivates their URLs everywhere.
    let user = a.create_user("ada", "ada@example.com").await;
    let owned = a
        .create_url(json!({"original_url": "https://e.com/o", "user_id": user["id"]}))
        .await;
    let owned_code = owned["short_code"].as_str().unwrap().to_owned();
    for app in [&a, &b, &b] {
        assert_eq!(location(app, &owned_code).await.0, StatusCode::FOUND);
    }
    a.delete(&format!("/users/{}", user["id"])).await;
    eventually("B stops redirecting a deleted user's URL", || async {
        location(&b, &owned_code).await.0 == StatusCode::NOT_FOUND
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_created_elsewhere_is_not_remembered_as_missing() {
    let (a, b) = two_replicas().await;
    assert_eq!(location(&b, "fresh-code").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        location(&b, "fresh-code").await.2,
        "HIT",
        "B remembers it as missing"
    );
    a.create_url(json!({"original_url": "https://e.com/new", "short_code": "fresh-code"}))
        .await;
    eventually("B redirects the new code", || async {
        location(&b, "fresh-code").await.0 == StatusCode::FOUND
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_finds_in_redis_what_another_created() {
    let (a, b) = two_replicas().await;
    // Creating a URL writes it to Redis: the first lookup anywhere hits.
    let url = a.link("https://e.com/shared").await;
    let code = url["short_code"].as_str().unwrap();
    let (status, target, cache) = location(&b, code).await;
    assert_eq!(
        (status, target.as_deref(), cache.as_str()),
        (StatusCode::FOUND, Some("https://e.com/shared"), "HIT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_the_database_answers() {
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
    // Nothing listens on this port.
    let closed = format!("redis://127.0.0.1:{}", common_free_port());
    let app = TestApp::start(db.clone(), &flags(Some(&closed), "down")).await;
    let url = app.link("https://e.com/r").await;
    let code = url["short_code"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(location(&app, code).await.0, StatusCode::FOUND);
    }
    let health = app.get_json("/health").await;
    assert_eq!(health["cache"], "unavailable");
    assert_eq!(health["database"], "ok");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("shortener_redis_up 0"), "{metrics}");
}

fn common_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn an_older_value_never_replaces_a_newer_one_in_redis() {
    let metrics = Arc::new(shortener::metrics::Metrics::new().unwrap());
    let shared = SharedCache::new(
        &redis_url(),
        &unique_prefix(),
        Duration::from_secs(60),
        Duration::from_millis(500),
        metrics,
    )
    .unwrap();
    let target = |version: i64, to: &str| RedirectTarget {
        short_code: "abc".into(),
        url_id: 1,
        user_id: None,
        original_url: to.into(),
        is_active: true,
        version,
    };
    shared.put_if_newer(&target(2, "https://e.com/new")).await;
    shared.put_if_newer(&target(1, "https://e.com/old")).await;
    assert_eq!(
        shared.get("abc").await.unwrap(),
        Some(target(2, "https://e.com/new"))
    );
    shared.put_if_newer(&target(3, "https://e.com/newer")).await;
    assert_eq!(
        shared.get("abc").await.unwrap().unwrap().original_url,
        "https://e.com/newer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_keeps_cached_redirects_and_loses_no_click() {
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
    db.store().await; // migrate directly
    let proxy = Proxy::start(db.server_addr()).await;
    let via_proxy = db.url_via(proxy.addr);
    let mut flags = flags(None, "outage");
    flags.extend(["--database-url", &via_proxy, "--database-pool-size", "4"]);
    let app = TestApp::start(db.clone(), &flags).await;
    let url = app.link("https://e.com/outage").await;
    let code = url["short_code"].as_str().unwrap();
    assert_eq!(location(&app, code).await.0, StatusCode::FOUND);

    proxy.cut();
    // Cached redirects keep working; their clicks wait in memory. Only the
    // first waits for the pool to give up; the rest join the spill at once.
    for n in 0..3 {
        let started = Instant::now();
        assert_eq!(location(&app, code).await.0, StatusCode::FOUND);
        eprintln!(
            "redirect {n} during the outage took {:?}",
            started.elapsed()
        );
    }
    // Writes fail fast with 503 and Retry-After.
    let res = app
        .post("/urls", json!({"original_url": "https://e.com/x"}))
        .await;
    assert_eq!(
        res.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("5")
    );
    expect_error(res, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        app.get("/health").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Probes stay green: the replica still serves cached redirects.
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/livez").await.status(), StatusCode::OK);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("shortener_clicks_spilled 3"), "{metrics}");
    // The periodic probe notices within its interval (5 s) plus the ping's
    // own 2 s timeout.
    eventually_within(
        Duration::from_secs(10),
        "the database probe reports the outage",
        || async {
            let metrics = app.get("/metrics").await.text().await.unwrap();
            metrics.contains("shortener_database_up 0")
        },
    )
    .await;

    proxy.restore();
    // Room for the click writer's one-second retry.
    eventually_within(
        Duration::from_secs(10),
        "spilled clicks are written once the database is back",
        || async {
            let res = app.get(&format!("/urls/{}/stats", url["id"])).await;
            res.status() == StatusCode::OK
                && res.json::<serde_json::Value>().await.unwrap()["redirect_count"] == 4
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_requests_are_rate_limited_per_client() {
    let db = Arc::new(TestDatabase::new(Backend::Sqlite).await);
    let mut flags = flags(None, "limits");
    flags.extend(["--rate-limit-per-minute", "1", "--rate-limit-burst", "3"]);
    flags.extend(["--trust-proxy-headers", "true"]);
    let app = TestApp::start(db.clone(), &flags).await;
    let url = app.link("https://e.com/l").await;
    let code = url["short_code"].as_str().unwrap();
    // One request a minute, bursts of 3: the burst is used up (one by the
    // create above) and nothing refills while the test runs.
    for _ in 0..2 {
        assert_eq!(app.get("/urls").await.status(), StatusCode::OK);
    }
    let res = app.get("/urls").await;
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, StatusCode::TOO_MANY_REQUESTS).await;
    // Another client (as the ingress reports it) has its own allowance.
    let other = app
        .request(reqwest::Method::GET, "/urls")
        .header("x-real-ip", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // Redirects are never limited.
    for _ in 0..5 {
        assert_eq!(location(&app, code).await.0, StatusCode::FOUND);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("shortener_rate_limited_total 1"),
        "{metrics}"
    );
}
