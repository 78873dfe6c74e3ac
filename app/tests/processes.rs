//! The real binary, as operators run it: several processes on one
//! PostgreSQL, configuration errors, seed loading, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{BIN, Server, call, client};
use common::{ADMIN_KEY, Backend, TestDatabase};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_agree() {
    let db = TestDatabase::new(Backend::Postgres).await;
    // Both start at once on an empty database: migrations run exactly once.
    // (B migrates over a separate direct URL, as it would behind PgBouncer.)
    let mut a = Server::start(&db.url, &[]);
    let mut b = Server::start(&db.url, &[("MIGRATION_DATABASE_URL", db.url.as_str())]);
    let http = client();
    a.wait_ready(&http, "/health").await;
    b.wait_ready(&http, "/health").await;

    let url = a.shorten(&http, "https://example.com/shared").await;
    let code = url["short_code"].as_str().unwrap();

    let res = b.get(&http, &format!("/{code}")).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let (_, events) = call(
        &http,
        reqwest::Method::GET,
        format!("{}/events?url_id={}&event_type=redirect", a.base, url["id"]),
        None,
    )
    .await;
    assert_eq!(
        events.as_array().unwrap().len(),
        1,
        "A sees the click B recorded"
    );

    // A change made through B is what A redirects to, at once.
    let (status, _) = call(
        &http,
        reqwest::Method::PUT,
        format!("{}/urls/{}", b.base, url["id"]),
        Some(json!({"original_url": "https://example.com/moved"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let res = a.get(&http, &format!("/{code}")).await;
    assert_eq!(res.headers()["location"], "https://example.com/moved");
    call(
        &http,
        reqwest::Method::DELETE,
        format!("{}/urls/{}", a.base, url["id"]),
        None,
    )
    .await;
    assert_eq!(
        b.get(&http, &format!("/{code}")).await.status(),
        StatusCode::NOT_FOUND
    );

    // Concurrent creates through both: every code distinct, every row there.
    let creates: Vec<_> = (0..60)
        .map(|n| {
            let base = if n % 2 == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            };
            let http = http.clone();
            tokio::spawn(async move {
                call(
                    &http,
                    reqwest::Method::POST,
                    format!("{base}/urls"),
                    Some(json!({"original_url": format!("https://example.com/{n}")})),
                )
                .await
            })
        })
        .collect();
    let mut codes = std::collections::HashSet::new();
    for task in creates {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::CREATED);
        codes.insert(body["short_code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes.len(), 60);
    let res = http
        .get(format!("{}/urls", b.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-total-count"], "61");

    assert!(a.terminate().success(), "SIGTERM is a clean exit");
    assert!(b.terminate().success());
}

#[test]
fn bad_configuration_stops_the_start_naming_the_variable() {
    for (var, value) in [
        ("AUTH_MODE", "sometimes"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("LISTEN_ADDR", "not-an-address"),
        ("ADMIN_API_KEY", "tiny-secret"),
        ("DATABASE_POOL_SIZE", "0"),
    ] {
        let out = Command::new(BIN)
            .arg("serve")
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
        if var == "ADMIN_API_KEY" {
            assert!(
                !stderr.contains(value),
                "a rejected key is never printed: {stderr}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_load_command_is_idempotent() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/../seed_data");
    for expected in [
        "loaded 400 users, 2000 urls, 3422 events",
        "loaded 0 users, 0 urls, 0 events",
    ] {
        let out = Command::new(BIN)
            .args(["seed", "load", seed])
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(expected), "{stdout}");
    }
}

/// `shortener keys` on the database a running service uses: a key issued
/// there works at once, `list` shows it without the key, and a revoked key
/// is refused at once, the replica told through the Redis they share
/// (although it would take an accepted key on trust for ten minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_command_issues_lists_and_revokes() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let (redis, prefix) = (common::redis_url(), common::unique_prefix());
    let keys = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", &redis)
            .env("REDIS_KEY_PREFIX", &prefix)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, key, stderr) = keys(&["create", "--name", "release job", "--scope", "admin"]);
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("shk_"), "stdout is the key alone: {key:?}");
    assert!(stderr.contains("shown only this once"), "{stderr}");
    let (ok, _, stderr) = keys(&["create", "--name", "x", "--scope", "user"]);
    assert!(!ok && stderr.contains("--user-id"), "{stderr}");

    let replica = [
        ("REDIS_URL", redis.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("KEY_TRUST_SECS", "600"),
    ];
    let mut server = Server::start(&db.url, &replica);
    let http = client();
    server.wait_ready(&http, "/health").await;
    let with_key = |key: String| {
        let http = http.clone();
        let url = format!("{}/urls", server.base);
        async move {
            http.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(with_key(key.clone()).await, StatusCode::OK);

    let (ok, listed, stderr) = keys(&["list"]);
    assert!(ok, "{stderr}");
    assert!(
        listed.contains("release job") && listed.contains(&key[..12]),
        "{listed}"
    );
    assert!(
        !listed.contains(&key[12..]),
        "the key itself is never listed: {listed}"
    );
    let id = listed
        .lines()
        .find(|line| line.ends_with("release job"))
        .and_then(|line| line.split('\t').next())
        .unwrap()
        .to_owned();
    let (ok, out, stderr) = keys(&["revoke", &id]);
    assert!(ok && out.contains("revoked"), "{stderr}");
    assert!(
        out.contains("running replicas told through Redis"),
        "{out}{stderr}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while with_key(key.clone()).await != StatusCode::UNAUTHORIZED {
        assert!(
            std::time::Instant::now() < deadline,
            "revoked key still accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_needs_no_configuration() {
    let mut server = Server::spawn(&[("AUTH_MODE", "open")]);
    let http = client();
    server.wait_ready(&http, "/health").await;
    let res = http
        .post(format!("{}/shorten", server.base))
        .json(&json!({"url": "https://example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(server.dir.path().join("data/shortener.db").exists());
    assert!(server.terminate().success());
}

/// The loss bound of group commit, measured: while the database is up, a
/// redirect is answered only after its click is committed, so SIGKILL in
/// the middle of traffic loses no answered click.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_answered_click() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let mut server = Server::start(&db.url, &[]);
    let http = client();
    server.wait_ready(&http, "/health").await;
    let url = server.shorten(&http, "https://example.com/kill").await;
    let target = format!("{}/{}", server.base, url["short_code"].as_str().unwrap());

    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (http, target, answered, stop) =
                (http.clone(), target.clone(), answered.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match http.get(&target).send().await {
                        Ok(res) if res.status() == StatusCode::FOUND => {
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let answered = answered.load(std::sync::atomic::Ordering::Relaxed);
    let store = db.store().await;
    let stats = store.url_stats(url["id"].as_i64().unwrap()).await.unwrap();
    eprintln!(
        "answered {answered} redirects; {} clicks recorded",
        stats.redirect_count
    );
    assert!(answered > 100, "the load actually ran ({answered})");
    // Recorded may exceed answered (committed, then killed before the
    // response left), never the other way round.
    assert!(stats.redirect_count >= i64::try_from(answered).unwrap());
}

/// `shortener migrate` with `env`, from a fresh working directory: (success, stdout, stderr).
fn migrate(env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("migrate")
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("MIGRATION_DATABASE_URL")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The migrations of this build, as `shortener migrate` names them.
fn migration_count() -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    std::fs::read_dir(dir).unwrap().count()
}

/// The deployment's order, with the real binary: `serve` that may not migrate refuses an
/// unmigrated database, naming what is missing; `migrate` applies everything once (a second
/// run, and runs started together, apply nothing more); `serve` then starts and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_command_applies_once_and_serve_without_migrating_requires_it() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let known = migration_count();

    let mut refused = Server::start(&db.url, &[("MIGRATE_ON_START", "false")]);
    let status = refused.child.wait().unwrap();
    assert!(!status.success(), "serve started on an unmigrated database");
    let logs = refused.logs();
    assert!(
        logs.contains("the database lacks migration(s) 1 (init), 2 (redirect count shards)")
            && logs.contains("shortener migrate"),
        "{logs}"
    );
    // It changed nothing: not even the history table exists.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let history: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(history, None, "serve without migrating created the history");

    // Over MIGRATION_DATABASE_URL, which wins over DATABASE_URL.
    let (ok, stdout, stderr) = migrate(&[
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nowhere"),
        ("MIGRATION_DATABASE_URL", &db.url),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.matches("applied migration ").count(),
        known,
        "{stdout}"
    );
    assert!(stdout.contains("applied migration 1 (init)"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "applied {known} migration(s); 0 were already applied"
        )),
        "{stdout}"
    );

    // Again, twice at once: nothing left to apply, and the lock makes both agree.
    let url = db.url.clone();
    let again = std::thread::spawn(move || migrate(&[("DATABASE_URL", url.as_str())]));
    let (ok, stdout, stderr) = migrate(&[("DATABASE_URL", &db.url)]);
    assert!(ok, "{stderr}");
    let (ok2, stdout2, stderr2) = again.join().unwrap();
    assert!(ok2, "{stderr2}");
    for out in [stdout, stdout2] {
        assert!(
            out.contains(&format!(
                "nothing to apply: the {known} migrations of this build were already applied"
            )),
            "{out}"
        );
    }

    let mut server = Server::start(&db.url, &[("MIGRATE_ON_START", "false")]);
    let http = client();
    server.wait_ready(&http, "/health").await;
    server.shorten(&http, "https://example.com/migrated").await;
    assert!(server.terminate().success());
}

/// A migration the database has and this build does not (the image was rolled back) is
/// reported and allowed, by `migrate` and by `serve` that may not migrate (which logs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_builds_migration_is_allowed_with_a_warning() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let (ok, _, stderr) = migrate(&[("DATABASE_URL", &db.url)]);
    assert!(ok, "{stderr}");
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from a newer build', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let (ok, stdout, stderr) = migrate(&[("DATABASE_URL", &db.url)]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("also has migration(s) 99990101000000 of a newer build"),
        "{stdout}"
    );
    let mut server = Server::start(&db.url, &[("MIGRATE_ON_START", "false")]);
    let http = client();
    server.wait_ready(&http, "/health").await;
    let logs = server.logs();
    assert!(
        logs.contains("the database has migrations this build does not know"),
        "{logs}"
    );
    assert!(server.terminate().success());
}

/// Every log line is written, on PostgreSQL too: the start-up lines, and
/// the access log of requests that queried the database. (A per-layer log
/// filter once dropped the line after each query that sqlx asked
/// `enabled!` about.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_after_database_queries_are_written() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let mut server = Server::start(&db.url, &[("ACCESS_LOG", "all"), ("AUTH_MODE", "open")]);
    let http = client();
    server.wait_ready(&http, "/readyz").await;
    for path in ["/urls", "/users", "/events"] {
        let res = http
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    // The redirect writes its line from a stack of its own, in the same span.
    let link = server.shorten(&http, "https://example.com/logged").await;
    let code = link["short_code"].as_str().unwrap();
    let res = http
        .get(format!("{}/{code}", server.base))
        .header("x-request-id", "redirect-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let logs = server.logs();
    let served = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "request served" && l["span"]["request_id"] == "redirect-1");
    let served = served.unwrap_or_else(|| panic!("no access log line of the redirect in: {logs}"));
    assert_eq!(served["status"], 302, "{served}");
    assert_eq!(
        served["span"],
        serde_json::json!({"name": "request", "method": "GET", "path": format!("/{code}"), "request_id": "redirect-1"}),
    );
    for line in ["cache warmed", "listening"] {
        assert!(logs.contains(line), "no '{line}' in: {logs}");
    }
    for path in ["/urls", "/users", "/events"] {
        let served = logs
            .lines()
            .filter(|l| {
                l.contains("request served")
                    && l.contains("\"method\":\"GET\"")
                    && l.contains(&format!("\"path\":\"{path}\""))
            })
            .count();
        assert_eq!(served, 1, "access log of {path} in: {logs}");
    }
    assert!(server.terminate().success());
}

/// A database that never answers, or refuses the login: `migrate` gives up with the cause,
/// within its patience, and exits non-zero.
#[test]
fn migrate_command_fails_clearly() {
    let port = common::server::free_port();
    let nowhere = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let (ok, _, stderr) = migrate(&[("DATABASE_URL", &nowhere), ("MIGRATE_WAIT_SECS", "1")]);
    assert!(!ok);
    assert!(
        stderr.contains("migrating the database") && stderr.contains("database unavailable"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not reachable yet; retrying"),
        "it waited first: {stderr}"
    );
}

/// Found on the real node: an ingress controller that keeps sending to a terminating replica
/// (Traefik's ingress-nginx provider) got refused connections once SIGTERM closed the
/// listener. With SHUTDOWN_DRAIN_SECS, after SIGTERM the replica answers `/readyz` with 503,
/// which such a controller does act on, and keeps serving requests until the drain is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_not_ready_but_serving_before_it_stops() {
    let mut server = Server::spawn(&[("AUTH_MODE", "open"), ("SHUTDOWN_DRAIN_SECS", "10")]);
    let http = client();
    server.wait_ready(&http, "/readyz").await;
    let created: serde_json::Value = http
        .post(format!("{}/shorten", server.base))
        .json(&json!({"url": "https://example.com/drain"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = created["short_code"].as_str().unwrap().to_string();
    let sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    // Not ready as soon as the signal is handled (polled for at most the drain).
    let mut not_ready = false;
    while sent.elapsed() < Duration::from_secs(10) {
        let res = server.get(&http, "/readyz").await;
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(not_ready, "/readyz still 200 after SIGTERM");
    // Still serving redirects while draining.
    let res = server.get(&http, &format!("/{code}")).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    // Then it stops on its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after the drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success());
}
