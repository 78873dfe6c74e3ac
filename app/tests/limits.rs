//! Rate limits, trusted proxies and the cheap `/health`, through the real
//! serve path (`Service::start` + `Service::serve` on a socket), with Redis
//! from `scripts/services.sh` where the limits are shared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{Backend, TestApp, TestDatabase, expect_error, redis_url, unique_prefix};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Open mode (no key), this Redis (if any) under its own prefix, and `extra`.
fn flags<'a>(redis: Option<&'a str>, prefix: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec!["--auth-mode", "open", "--redis-key-prefix", prefix];
    if let Some(redis) = redis {
        flags.extend(["--redis-url", redis]);
    }
    flags.extend(extra);
    flags
}

/// The value of one series in the Prometheus text (0 when absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn status_of(
    app: &TestApp,
    method: Method,
    path: &str,
    forwarded: Option<&str>,
) -> StatusCode {
    let mut req = app.request(method, path);
    if let Some(forwarded) = forwarded {
        req = req.header("x-forwarded-for", forwarded);
    }
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_limits_are_shared_between_replicas_through_redis() {
    let db = Arc::new(TestDatabase::new(Backend::Sqlite).await);
    let (redis, prefix) = (redis_url(), unique_prefix());
    // A generous Redis timeout: a loaded machine must not turn this into
    // a test of the fallback.
    let limit = [
        "--rate-limit-per-minute",
        "1",
        "--rate-limit-burst",
        "4",
        "--redis-timeout-ms",
        "2000",
    ];
    let a = TestApp::start(db.clone(), &flags(Some(&redis), &prefix, &limit)).await;
    let b = TestApp::start(db.clone(), &flags(Some(&redis), &prefix, &limit)).await;

    // Allowed responses carry the allowance: limit, what is left, and when
    // it is whole again.
    let first = a.get("/urls").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "ratelimit-limit"), Some("4"));
    assert_eq!(header(&first, "ratelimit-remaining"), Some("3"));
    let reset: u64 = header(&first, "ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset), "reset {reset}");
    for _ in 0..2 {
        assert_eq!(a.get("/urls").await.status(), StatusCode::OK);
    }
    // The other replica sees what the first spent: one left, then 429.
    let last = b.get("/urls").await;
    assert_eq!(last.status(), StatusCode::OK);
    assert_eq!(header(&last, "ratelimit-remaining"), Some("0"));
    let refused = b.get("/urls").await;
    assert_eq!(header(&refused, "ratelimit-limit"), Some("4"));
    assert_eq!(header(&refused, "ratelimit-remaining"), Some("0"));
    let retry: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry after {retry}");
    let message = expect_error(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(message.contains("too many requests"), "{message}");
    assert_eq!(a.get("/urls").await.status(), StatusCode::TOO_MANY_REQUESTS);

    // Redis answered every check: no fallback.
    for app in [&a, &b] {
        for reason in ["skipped", "error", "timeout"] {
            let series = format!(
                "shortener_rate_limit_fallbacks_total{{class=\"management\",reason=\"{reason}\"}}"
            );
            assert_eq!(metric(app, &series).await, 0.0, "{series}");
        }
    }
    let limited = r#"shortener_rate_limit_decisions_total{class="management",decision="limited"}"#;
    assert_eq!(metric(&a, limited).await + metric(&b, limited).await, 2.0);
    // The key expires once the allowance would be whole again.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:rl:management:ip:127.0.0.1");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 4 * 60_000, "{key} PTTL {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_replica_limits_on_its_own_and_counts_the_fallback() {
    let db = Arc::new(TestDatabase::new(Backend::Sqlite).await);
    // Nothing listens on this port.
    let closed = format!("redis://127.0.0.1:{}", common::server::free_port());
    let prefix = unique_prefix();
    let limit = ["--rate-limit-per-minute", "1", "--rate-limit-burst", "3"];
    let app = TestApp::start(db.clone(), &flags(Some(&closed), &prefix, &limit)).await;
    // Never failed because Redis is down: limited by this replica instead.
    for _ in 0..3 {
        let res = app.get("/urls").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(header(&res, "ratelimit-remaining").is_some());
    }
    let res = app.get("/urls").await;
    assert!(header(&res, "retry-after").is_some());
    expect_error(res, StatusCode::TOO_MANY_REQUESTS).await;
    let mut fallbacks = 0.0;
    for reason in ["skipped", "error", "timeout"] {
        let series = format!(
            "shortener_rate_limit_fallbacks_total{{class=\"management\",reason=\"{reason}\"}}"
        );
        fallbacks += metric(&app, &series).await;
    }
    assert_eq!(fallbacks, 4.0, "every check fell back");

    // The embedded default (no Redis at all) limits per replica too, and
    // counts no fallback: there is nothing to fall back from.
    let embedded = TestApp::start(db.clone(), &flags(None, &prefix, &limit)).await;
    for _ in 0..3 {
        assert_eq!(embedded.get("/urls").await.status(), StatusCode::OK);
    }
    assert_eq!(
        embedded.get("/urls").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let series = r#"shortener_rate_limit_fallbacks_total{class="management",reason="error"}"#;
    assert_eq!(metric(&embedded, series).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let db = Arc::new(TestDatabase::new(Backend::Sqlite).await);
    let prefix = unique_prefix();
    let limit = ["--rate-limit-per-minute", "1", "--rate-limit-burst", "2"];
    // The default trusts nobody: a client cannot buy a fresh allowance by
    // naming another address.
    let direct = TestApp::start(db.clone(), &flags(None, &prefix, &limit)).await;
    for spoof in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(
            status_of(&direct, Method::GET, "/urls", Some(spoof)).await,
            StatusCode::OK
        );
    }
    let spoofed = direct
        .request(Method::GET, "/urls")
        .header("x-forwarded-for", "198.51.100.3")
        .header("x-real-ip", "198.51.100.4")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);

    // Behind a trusted proxy (here the test client's own address), the
    // right-most address it did not vouch for is the client: what the
    // client wrote further left is ignored.
    let mut behind = limit.to_vec();
    behind.extend(["--trusted-proxies", "127.0.0.1/32,10.0.0.0/8"]);
    let proxied = TestApp::start(db.clone(), &flags(None, &prefix, &behind)).await;
    for forged in ["1.1.1.1, 203.0.113.5", "2.2.2.2, 203.0.113.5, 10.0.0.9"] {
        assert_eq!(
            status_of(&proxied, Method::GET, "/urls", Some(forged)).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        status_of(&proxied, Method::GET, "/urls", Some("3.3.3.3, 203.0.113.5")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the proxy has its own allowance.
    assert_eq!(
        status_of(&proxied, Method::GET, "/urls", Some("203.0.113.6")).await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_have_a_stricter_quota_of_their_own() {
    let db = Arc::new(TestDatabase::new(Backend::Sqlite).await);
    let prefix = unique_prefix();
    let limit = [
        "--create-rate-limit-per-minute",
        "1",
        "--create-rate-limit-burst",
        "2",
    ];
    let app = TestApp::start(db.clone(), &flags(None, &prefix, &limit)).await;
    for n in 0..2 {
        let res = app
            .post(
                "/urls",
                json!({"original_url": format!("https://e.com/{n}")}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(header(&res, "ratelimit-limit"), Some("2"));
    }
    for (path, body) in [
        ("/urls", json!({"original_url": "https://e.com/x"})),
        ("/shorten", json!({"url": "https://e.com/y"})),
        ("/users", json!({"username": "u", "email": "u@e.com"})),
    ] {
        let res = app.post(path, body).await;
        assert!(header(&res, "retry-after").is_some(), "{path}");
        expect_error(res, StatusCode::TOO_MANY_REQUESTS).await;
    }
    // Reads are counted under the (more generous) management limit.
    let res = app.get("/urls").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "ratelimit-limit"), Some("100"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_miss_flood_gets_429_while_cached_links_still_redirect() {
    let db = Arc::new(TestDatabase::new(Backend::Sqlite).await);
    let prefix = unique_prefix();
    let limit = [
        "--redirect-miss-limit-per-minute",
        "1",
        "--redirect-miss-burst",
        "5",
    ];
    // Without Redis, so that the in-process cache is always trusted: with
    // it, a Redis hiccup (a call slower than 50 ms on a loaded machine)
    // rightly makes entries older than 2 s need a lookup, and a lookup is
    // what a client over its miss limit is refused.
    let app = TestApp::start(db.clone(), &flags(None, &prefix, &limit)).await;
    let url = app.link("https://e.com/real").await;
    let real = url["short_code"].as_str().unwrap().to_owned();
    // Followed once: now in the in-process cache.
    assert_eq!(
        status_of(&app, Method::GET, &format!("/{real}"), None).await,
        StatusCode::FOUND
    );
    let later = app.link("https://e.com/later").await;
    let later = later["short_code"].as_str().unwrap().to_owned();

    // A scan: five misses are answered, the sixth spends past the limit,
    // and from then on lookups beyond the in-process cache are refused.
    for n in 0..6 {
        let path = format!("/nosuch{n}");
        assert_eq!(
            status_of(&app, Method::GET, &path, None).await,
            StatusCode::NOT_FOUND
        );
    }
    let refused = app.get("/nosuch-more").await;
    assert!(header(&refused, "retry-after").is_some());
    assert_eq!(header(&refused, "ratelimit-remaining"), Some("0"));
    expect_error(refused, StatusCode::TOO_MANY_REQUESTS).await;
    // The cached real link keeps working for that client...
    for _ in 0..3 {
        assert_eq!(
            status_of(&app, Method::GET, &format!("/{real}"), None).await,
            StatusCode::FOUND
        );
    }
    // ...and a code it has not looked up yet needs a lookup: refused too.
    assert_eq!(
        status_of(&app, Method::GET, &format!("/{later}"), None).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let series =
        r#"shortener_rate_limit_decisions_total{class="redirect_miss",decision="limited"}"#;
    assert!(metric(&app, series).await >= 2.0);
    let series =
        r#"shortener_rate_limit_decisions_total{class="redirect_miss",decision="allowed"}"#;
    assert_eq!(metric(&app, series).await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_from_sampled_state_without_reaching_the_stores() {
    let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
    let (redis, prefix) = (redis_url(), unique_prefix());
    let app = TestApp::start(db.clone(), &flags(Some(&redis), &prefix, &[])).await;
    let pings = "shortener_database_pings_total";
    let started = Instant::now();
    let before = metric(&app, pings).await;
    for _ in 0..200 {
        let res = app.get("/health").await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["database"], "ok");
        assert_eq!(body["cache"], "ok");
        assert!(body["checked_ms_ago"].as_u64().is_some(), "{body}");
    }
    let after = metric(&app, pings).await;
    // The sampler pings once per 5 s, whatever /health is asked: at most
    // one more ping per 5 s that passed (and one in progress).
    let rounds = started.elapsed().as_secs_f64() / 5.0;
    assert!(
        after - before <= rounds.ceil() + 1.0,
        "{} database pings for 200 health calls in {:?}",
        after - before,
        started.elapsed()
    );
    assert!(before >= 1.0, "sampled before serving");
}

/// With API keys, each key has its own management allowance (two teams
/// behind one NAT do not starve each other), while wrong keys spend the
/// client address's: guessing is limited, and once over the limit it
/// costs no key lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_allowance_and_guessing_is_limited_per_address() {
    let db = Arc::new(TestDatabase::new(Backend::Sqlite).await);
    let prefix = unique_prefix();
    let limit = ["--rate-limit-per-minute", "1", "--rate-limit-burst", "3"];
    let mut all = flags(None, &prefix, &limit);
    all.extend(["--auth-mode", "api-key"]);
    let app = TestApp::start(db, &all).await;
    let mut keys = Vec::new();
    for name in ["team a", "team b"] {
        let res = app
            .post("/keys", json!({"name": name, "scope": "read-only"}))
            .await;
        let issued = common::expect_json(res, StatusCode::CREATED).await;
        keys.push(issued["secret"].as_str().unwrap().to_owned());
    }
    let with = |key: &str| {
        app.client
            .get(format!("{}/urls", app.base))
            .bearer_auth(key)
            .send()
    };
    // Team a spends its allowance (the first call also spends one of the
    // address's, for the lookup); team b still has all of its own.
    for _ in 0..3 {
        assert_eq!(with(&keys[0]).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        with(&keys[0]).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..3 {
        assert_eq!(with(&keys[1]).await.unwrap().status(), StatusCode::OK);
    }
    // Wrong keys: 401 while the address has allowance left, then 429.
    let mut statuses = Vec::new();
    for n in 0..4 {
        statuses.push(with(&format!("shk_guess{n:028}")).await.unwrap().status());
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED, "{statuses:?}");
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // The bootstrap admin key's allowance is its own too.
    assert_eq!(app.get("/keys").await.status(), StatusCode::OK);
}

/// A key revoked on one replica is refused by another at once when they
/// share Redis, although that replica had just accepted it and would take
/// it on trust for ten minutes (`--key-trust-secs 600`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_replica_through_redis() {
    let db = Arc::new(TestDatabase::new(Backend::Sqlite).await);
    let (redis, prefix) = (redis_url(), unique_prefix());
    let mut all = flags(Some(&redis), &prefix, &["--key-trust-secs", "600"]);
    all.extend(["--auth-mode", "api-key"]);
    let a = TestApp::start(db.clone(), &all).await;
    let b = TestApp::start(db, &all).await;
    let res = a
        .post("/keys", json!({"name": "ci", "scope": "read-only"}))
        .await;
    let issued = common::expect_json(res, StatusCode::CREATED).await;
    let key = issued["secret"].as_str().unwrap().to_owned();
    let with_key = |app: &TestApp| {
        app.client
            .get(format!("{}/urls", app.base))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(with_key(&b).await.unwrap().status(), StatusCode::OK);
    let res = a.delete(&format!("/keys/{}", issued["id"])).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while with_key(&b).await.unwrap().status() != StatusCode::UNAUTHORIZED {
        assert!(Instant::now() < deadline, "replica b still takes the key");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Deleting a user revokes their keys the way `DELETE /keys/{id}` revokes
/// one: a replica that had just accepted the user's key, and would take it
/// on trust for ten minutes, refuses it at once when the replicas share
/// Redis, and nothing the key asks afterwards changes data.
async fn deleting_a_user_revokes_their_keys_on_every_replica(backend: Backend) {
    let db = Arc::new(TestDatabase::new(backend).await);
    let (redis, prefix) = (redis_url(), unique_prefix());
    let mut all = flags(Some(&redis), &prefix, &["--key-trust-secs", "600"]);
    all.extend(["--auth-mode", "api-key"]);
    let a = TestApp::start(db.clone(), &all).await;
    let b = TestApp::start(db, &all).await;
    let user = a.create_user("dora", "dora@example.com").await;
    let link = a
        .create_url(json!({"original_url": "https://example.com/dora", "user_id": user["id"]}))
        .await;
    let res = a
        .post(
            "/keys",
            json!({"name": "dora", "scope": "user", "user_id": user["id"]}),
        )
        .await;
    let issued = common::expect_json(res, StatusCode::CREATED).await;
    let key = issued["secret"].as_str().unwrap().to_owned();
    let link_path = format!("/urls/{}", link["id"]);
    let as_user = |app: &TestApp, method: Method, body: Option<serde_json::Value>| {
        let mut req = app
            .client
            .request(method, format!("{}{link_path}", app.base))
            .bearer_auth(&key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    // Both replicas accept the key, and would now take it on trust.
    for app in [&a, &b] {
        let res = as_user(app, Method::GET, None).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    let res = a.delete(&format!("/users/{}", user["id"])).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    for (name, app) in [("b", &b), ("a", &a)] {
        loop {
            let status = as_user(app, Method::GET, None).await.unwrap().status();
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {name} still takes the deleted user's key ({status})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // The deleted user's key cannot bring their link back, on either replica.
    let takeover = json!({"original_url": "https://example.com/taken", "is_active": true});
    for app in [&b, &a] {
        let res = as_user(app, Method::PUT, Some(takeover.clone()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let stored = a.get_json(&link_path).await;
    assert_eq!(stored["original_url"], "https://example.com/dora");
    assert_eq!(stored["is_active"], false);
    let code = link["short_code"].as_str().unwrap();
    for app in [&a, &b] {
        let res = app.get(&format!("/{code}")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    let events = a.get_json(&format!("/events?url_id={}", link["id"])).await;
    let by_key: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["key_id"] == issued["id"])
        .collect();
    assert!(by_key.is_empty(), "events by the revoked key: {by_key:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_revokes_their_keys_on_every_replica_sqlite() {
    deleting_a_user_revokes_their_keys_on_every_replica(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_revokes_their_keys_on_every_replica_postgres() {
    deleting_a_user_revokes_their_keys_on_every_replica(Backend::Postgres).await;
}
