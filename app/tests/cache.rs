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
use shortener::shared_redis::SharedRedis;
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
    subscribed(&prefix, 2).await;
    (a, b)
}

/// Waits until `replicas` listen on the invalidation channel under `prefix`.
async fn subscribed(prefix: &str, replicas: i64) {
    let redis = redis_url();
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
            counts.first().is_some_and(|(_, n)| *n >= replicas)
        }
    })
    .await;
}

async fn location(app: &TestApp, code: &str) -> (StatusCode, Option<String>, String) {
    redirect_parts(app.get(&format!("/{code}")).await)
}

/// A redirect's status, `Location` and `X-Cache`.
fn redirect_parts(res: reqwest::Response) -> (StatusCode, Option<String>, String) {
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
    let closed = format!("redis://127.0.0.1:{}", common::server::free_port());
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

#[tokio::test]
async fn an_older_value_never_replaces_a_newer_one_in_redis() {
    let metrics = Arc::new(shortener::metrics::Metrics::new().unwrap());
    let redis = SharedRedis::open(
        &redis_url(),
        &unique_prefix(),
        Duration::from_millis(500),
        None,
    )
    .unwrap();
    let shared = SharedCache::new(redis, Duration::from_secs(60), metrics);
    let target = |version: i64, to: &str| RedirectTarget {
        short_code: "abc".into(),
        url_id: 1,
        user_id: None,
        original_url: to.into(),
        is_active: true,
        version,
        policy: None,
    };
    shared
        .put_if_newer(&target(2, "https://e.com/new"))
        .await
        .unwrap();
    shared
        .put_if_newer(&target(1, "https://e.com/old"))
        .await
        .unwrap();
    assert_eq!(
        shared.get("abc").await.unwrap(),
        Some(target(2, "https://e.com/new"))
    );
    shared
        .put_if_newer(&target(3, "https://e.com/newer"))
        .await
        .unwrap();
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
    // /health answers from the last background ping (every 5 s, up to 2 s
    // each): the outage shows within one round of it.
    eventually_within(
        Duration::from_secs(8),
        "/health reports the outage",
        || async { app.get("/health").await.status() == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
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
    // The test client is the proxy here: its word on the client counts.
    flags.extend(["--trusted-proxies", "127.0.0.1/32"]);
    let app = TestApp::start(db.clone(), &flags).await;
    let url = app.link("https://e.com/l").await;
    let code = url["short_code"].as_str().unwrap();
    // One request a minute, bursts of 3: the burst is used up and nothing
    // refills while the test runs (the create above has a quota of its own).
    for _ in 0..3 {
        assert_eq!(app.get("/urls").await.status(), StatusCode::OK);
    }
    let res = app.get("/urls").await;
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, StatusCode::TOO_MANY_REQUESTS).await;
    // Another client (as the proxy reports it) has its own allowance.
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
        metrics.contains(
            r#"shortener_rate_limit_decisions_total{class="management",decision="limited"} 1"#
        ),
        "{metrics}"
    );
}

/// While Redis is unreliable a replica may miss a change, so the bound on
/// how long a switched-off link keeps redirecting comes from the short L1
/// TTL (`SHORT_TTL`, 2 s, plus up to 1.5 s for a heartbeat to notice a
/// silent outage) and from the background redelivery of the change once
/// Redis answers again (each retry after at most the 1 s backoff, every
/// 250 ms). These are the bounds docs/architecture.md states.
const BOUND_WHILE_AWAY: Duration = Duration::from_millis(3_500);
const BOUND_AFTER_RETURN: Duration = Duration::from_secs(5);

/// Where the test Redis listens (for a proxy in front of it), and its db.
async fn redis_addr() -> (std::net::SocketAddr, i64) {
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let info = client.get_connection_info();
    let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
        panic!("the test Redis must be reached over TCP");
    };
    let addr = tokio::net::lookup_host((host.as_str(), *port))
        .await
        .unwrap()
        .next()
        .unwrap();
    (addr, info.redis_settings().db())
}

async fn is_coherent(app: &TestApp) -> bool {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    metrics.contains("shortener_cache_coherent 1")
}

async fn local_hits(app: &TestApp) -> u64 {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"shortener_cache_lookups_total{result="hit",tier="local"} "#)
        })
        .map_or(0, |n| n.parse().unwrap())
}

/// A link that `b` serves from its L1 (`X-Cache: HIT` also covers a Redis
/// hit, and the announcement of the creation may evict B's first fill).
async fn link_cached_on(a: &TestApp, b: &TestApp, target: &str) -> (i64, String) {
    let url = a.link(target).await;
    let code = url["short_code"].as_str().unwrap().to_owned();
    let from_l1 = || async {
        let before = local_hits(b).await;
        let (status, _, _) = location(b, &code).await;
        assert_eq!(status, StatusCode::FOUND);
        local_hits(b).await > before
    };
    eventually("B serves the new link from its L1", from_l1).await;
    // Once more after a pause: a late announcement may have evicted it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    eventually("B still serves it from its L1", from_l1).await;
    (url["id"].as_i64().unwrap(), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switched_off_link_stops_redirecting_everywhere_while_redis_is_unreliable() {
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
    let (redis, redis_db) = redis_addr().await;
    let (proxy_a, proxy_b) = (Proxy::start(redis).await, Proxy::start(redis).await);
    let url_a = format!("redis://{}/{redis_db}", proxy_a.addr);
    let url_b = format!("redis://{}/{redis_db}", proxy_b.addr);
    let prefix = unique_prefix();
    // L1 entries live 600 s: whatever stops a redirect below was pushed or
    // is the short TTL of an unreliable feed, never the normal expiry.
    let a = TestApp::start(db.clone(), &flags(Some(&url_a), &prefix)).await;
    let b = TestApp::start(db.clone(), &flags(Some(&url_b), &prefix)).await;
    subscribed(&prefix, 2).await;
    let direct = redis::Client::open(redis_url().as_str()).unwrap();
    let mut direct = direct.get_multiplexed_async_connection().await.unwrap();
    let all_coherent = || async {
        eventually_within(
            Duration::from_secs(15),
            "both replicas coherent",
            || async { is_coherent(&a).await && is_coherent(&b).await },
        )
        .await;
    };
    all_coherent().await;

    // 1. Redis away for everyone: A's change cannot be announced, and B
    // falls back to the short TTL.
    let (id, code) = link_cached_on(&a, &b, "https://e.com/away").await;
    proxy_a.cut();
    proxy_b.cut();
    let cut = Instant::now();
    assert!(a.delete(&format!("/urls/{id}")).await.status().is_success());
    eprintln!("Redis away: the change took {:?}", cut.elapsed());
    let took = eventually_within(
        BOUND_WHILE_AWAY,
        "B stops redirecting while Redis is away",
        || async { location(&b, &code).await.0 == StatusCode::NOT_FOUND },
    )
    .await;
    eprintln!("Redis away: B stopped redirecting {took:?} after the change");
    // Redis comes back still holding the link as active (A could not write
    // it): B must not read it back, and A's queued change lands.
    proxy_a.restore();
    proxy_b.restore();
    let back = Instant::now();
    let key = format!("{prefix}:code:{code}");
    let mut delivered = None;
    while back.elapsed() < Duration::from_secs(8) {
        for app in [&a, &b] {
            assert_eq!(
                location(app, &code).await.0,
                StatusCode::NOT_FOUND,
                "redirecting again {:?} after Redis returned",
                back.elapsed()
            );
        }
        if delivered.is_none() {
            let raw: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut direct)
                .await
                .unwrap();
            if raw.is_some_and(|raw| raw.split('|').nth(3) == Some("0")) {
                delivered = Some(back.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = delivered.expect("A's change reached Redis");
    eprintln!("Redis back: A's queued change written to Redis after {delivered:?}");
    assert!(delivered < BOUND_AFTER_RETURN, "{delivered:?}");

    // 2. Only A loses Redis: B notices nothing and trusts its L1, so B
    // stops once A's change is redelivered.
    all_coherent().await;
    let (id, code) = link_cached_on(&a, &b, "https://e.com/partition").await;
    proxy_a.cut();
    assert!(a.delete(&format!("/urls/{id}")).await.status().is_success());
    assert_eq!(location(&a, &code).await.0, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy_a.restore();
    let took = eventually_within(
        BOUND_AFTER_RETURN,
        "B stops redirecting once A reaches Redis again",
        || async { location(&b, &code).await.0 == StatusCode::NOT_FOUND },
    )
    .await;
    eprintln!("A partitioned from Redis: B stopped redirecting {took:?} after it returned");

    // 3. Redis slower than the 50 ms call timeout for A: its write and
    // announcement time out, and are redelivered once Redis is fast again.
    all_coherent().await;
    let (id, code) = link_cached_on(&a, &b, "https://e.com/slow").await;
    proxy_a.delay(Duration::from_millis(200));
    assert!(a.delete(&format!("/urls/{id}")).await.status().is_success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy_a.delay(Duration::ZERO);
    let took = eventually_within(
        BOUND_AFTER_RETURN,
        "B stops redirecting once A's Redis is fast again",
        || async { location(&b, &code).await.0 == StatusCode::NOT_FOUND },
    )
    .await;
    eprintln!("A's Redis slow: B stopped redirecting {took:?} after it was fast again");
}

/// One replica as `shortener serve` runs (the binary, configured by its
/// environment), for the tests that stop what it depends on.
struct Replica {
    server: common::server::Server,
    http: reqwest::Client,
}

impl Replica {
    async fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut server = common::server::Server::start(database_url, env);
        let http = common::server::client();
        server.wait_ready(&http, "/health").await;
        Self { server, http }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let url = format!("{}{path}", self.server.base);
        self.http.get(url).send().await.unwrap()
    }

    /// A redirect: the status, `Location` and `X-Cache`.
    async fn follow(&self, code: &str) -> (StatusCode, Option<String>, String) {
        redirect_parts(self.get(&format!("/{code}")).await)
    }

    /// The value of one unlabelled series (0 when absent).
    async fn metric(&self, series: &str) -> u64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |n| n.parse().unwrap())
    }

    async fn local_hits(&self) -> u64 {
        self.metric(r#"shortener_cache_lookups_total{result="hit",tier="local"}"#)
            .await
    }

    /// Polls until this replica serves `code` from its L1 (a local hit),
    /// twice over a pause (a late announcement of the creation may evict a
    /// first fill).
    async fn cache(&self, code: &str) {
        let from_l1 = || async {
            let before = self.local_hits().await;
            assert_eq!(self.follow(code).await.0, StatusCode::FOUND);
            self.local_hits().await > before
        };
        let patience = Duration::from_secs(30);
        eventually_within(patience, "the replica serves the link from its L1", from_l1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        eventually_within(patience, "the replica still serves it from its L1", from_l1).await;
    }
}

/// Stale-if-error, with the real binary. Redis and PostgreSQL away
/// together: a link every replica holds in its L1 keeps redirecting from
/// that copy once the copy is past the short trust of an unreliable feed
/// (`X-Cache: STALE`, counted), and every click of those redirects is
/// counted once the database is back. A copy older than
/// `STALE_IF_ERROR_SECS` is not served: replica C, whose bound (1 s) is
/// shorter than that short trust (2 s), answers from its cache only while
/// it trusts it, then 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_links_are_served_stale_while_redis_and_the_database_are_away() {
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
    db.store().await; // migrate directly
    let db_proxy = Proxy::start(db.server_addr()).await;
    let via_proxy = db.url_via(db_proxy.addr);
    let (redis, redis_db) = redis_addr().await;
    let redis_proxy = Proxy::start(redis).await;
    let redis_via = format!("redis://{}/{redis_db}", redis_proxy.addr);
    let prefix = unique_prefix();
    let env = [
        ("REDIS_URL", redis_via.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("LOCAL_CACHE_TTL_SECONDS", "600"),
        ("NEGATIVE_CACHE_TTL_SECONDS", "600"),
        ("DATABASE_POOL_SIZE", "4"),
    ];
    let a = Replica::start(&via_proxy, &env).await;
    let b = Replica::start(&via_proxy, &env).await;
    let mut short = env.to_vec();
    short.push(("STALE_IF_ERROR_SECS", "1"));
    let c = Replica::start(&via_proxy, &short).await;
    subscribed(&prefix, 3).await;
    eventually_within(
        Duration::from_secs(15),
        "every replica coherent",
        || async {
            let mut all = true;
            for replica in [&a, &b, &c] {
                all &= replica.metric("shortener_cache_coherent").await == 1;
            }
            all
        },
    )
    .await;
    let (status, url) = common::server::call(
        &a.http,
        reqwest::Method::POST,
        format!("{}/urls", a.server.base),
        Some(json!({"original_url": "https://e.com/hot"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (id, code) = (
        url["id"].as_i64().unwrap(),
        url["short_code"].as_str().unwrap(),
    );
    for replica in [&a, &b, &c] {
        replica.cache(code).await;
    }
    let stats = || async {
        let (status, stats) = common::server::call(
            &a.http,
            reqwest::Method::GET,
            format!("{}/urls/{id}/stats", a.server.base),
            None,
        )
        .await;
        (status == StatusCode::OK).then(|| stats["redirect_count"].as_u64().unwrap())
    };
    // The database is up: every redirect so far was committed before its answer.
    let before = stats().await.unwrap();

    redis_proxy.cut();
    db_proxy.cut();
    let mut answered = 0;
    // A and B: the copy is trusted (HIT) until the replica notices the feed
    // is down and the copy is 2 s old; from then on every redirect is STALE.
    for replica in [&a, &b] {
        let mut stale = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while stale < 3 {
            let (status, target, x_cache) = replica.follow(code).await;
            assert_eq!(
                (status, target.as_deref()),
                (StatusCode::FOUND, Some("https://e.com/hot")),
                "X-Cache {x_cache}"
            );
            answered += 1;
            match x_cache.as_str() {
                "STALE" => stale += 1,
                "HIT" => assert_eq!(stale, 0, "trusted again after a STALE answer"),
                other => panic!("X-Cache {other}"),
            }
            assert!(Instant::now() < deadline, "no STALE answer in time");
        }
        assert_eq!(
            replica.metric("shortener_cache_stale_served_total").await,
            3
        );
    }
    // C: its cache answers while trusted, then nothing can: 503, never STALE.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, x_cache) = c.follow(code).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!((status, x_cache.as_str()), (StatusCode::FOUND, "HIT"));
        answered += 1;
        assert!(Instant::now() < deadline, "C kept answering past its bound");
    }
    assert_eq!(c.metric("shortener_cache_stale_served_total").await, 0);
    eprintln!("redirects answered during the outage: {answered} (A and B: 3 STALE each)");

    db_proxy.restore();
    redis_proxy.restore();
    // Every answered redirect is counted once the spilled clicks are written back.
    let expected = before + answered;
    eventually_within(
        Duration::from_secs(60),
        "every answered redirect is counted once the database is back",
        || async { stats().await == Some(expected) },
    )
    .await;
    for mut replica in [a, b, c] {
        assert!(replica.server.terminate().success());
    }
}
