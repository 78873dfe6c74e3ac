//! The promise "a redirect that was answered is recorded", tested in the
//! topology we ship: the real binary, PgBouncer in transaction pooling in
//! front of PostgreSQL, and PostgreSQL restarted and stopped under a stream
//! of redirects; then a SIGKILL of the service while the database is away.
//!
//! One more, in process: a write that committed but whose answer was lost
//! is spilled, and its write-back must find it committed.
//!
//! Each test owns its PostgreSQL and PgBouncer (`common/private_pg.rs`),
//! which it restarts and stops; Drop guards stop them and the service, pass
//! or fail. They take 15–30 s each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::ADMIN_KEY;
use common::private_pg::{PrivatePgBouncer, PrivatePostgres};
use common::server::{Server, call, client};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use shortener::clicks::ClickRecorder;
use shortener::config::ServeConfig;
use shortener::domain::{ShortCode, TargetUrl};
use shortener::metrics::Metrics;
use shortener::store::{
    Actor, ApiKey, BatchOrigin, Click, ClickBatch, Event, EventFilter, ImportOutcome, ImportedUser,
    Listing, NewApiKey, NewEvent, NewUrl, NewUser, Page, PoolStats, RedirectTarget, Schema,
    SeedData, SeedOutcome, Store, StoreError, StoreResult, Url, UrlFilter, UrlPatch, UrlStats,
    User, UserDeletion, UserPatch,
};

const DATABASE: &str = "shortener";

/// Redirects answered and other answers, by a stream of clients.
#[derive(Default)]
struct Tally {
    found: AtomicU64,
    other: AtomicU64,
    failed: AtomicU64,
}

/// `clients` loops of `GET /{code}` until `stop`.
fn redirect_stream(
    http: &Client,
    url: String,
    clients: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (http, url, stop, tally) = (http.clone(), url.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = http.get(&url).timeout(Duration::from_secs(30)).send().await;
                    match answer.map(|res| res.status()) {
                        Ok(StatusCode::FOUND) => tally.found.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => tally.other.fetch_add(1, Ordering::Relaxed),
                        Err(_) => tally.failed.fetch_add(1, Ordering::Relaxed),
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

/// `GET /urls/{id}/stats` every 250 ms until `stop`: the statuses.
fn stats_probe(
    http: &Client,
    server: &Server,
    url_id: i64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<StatusCode>> {
    let (http, url) = (http.clone(), format!("{}/urls/{url_id}/stats", server.base));
    tokio::spawn(async move {
        let mut statuses = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let res = http.get(&url).bearer_auth(ADMIN_KEY).send().await.unwrap();
            statuses.push(res.status());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        statuses
    })
}

/// A new link, and one redirect of it (which caches it and counts once).
async fn cached_link(http: &Client, server: &Server) -> (i64, String) {
    let url = server.shorten(http, "https://example.com/fault").await;
    let code = url["short_code"].as_str().unwrap().to_owned();
    let res = server.get(http, &format!("/{code}")).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    (url["id"].as_i64().unwrap(), code)
}

/// Polls until the redirect events of `url_id` number `expected` (at most
/// `patience`), then a little longer to see no more arrive; the final count.
fn settled_rows(pg: &PrivatePostgres, url_id: i64, expected: u64, patience: Duration) -> u64 {
    let sql =
        format!("SELECT COUNT(*) FROM events WHERE url_id = {url_id} AND event_type = 'redirect'");
    let deadline = Instant::now() + patience;
    loop {
        let rows: u64 = pg.query(DATABASE, &sql).parse().unwrap();
        if rows >= expected || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Anything written twice would arrive now.
    std::thread::sleep(Duration::from_secs(2));
    pg.query(DATABASE, &sql).parse().unwrap()
}

/// Stats must answer 200 (within `patience`, the pool reconnecting), with
/// this redirect count.
async fn stats_answer(http: &Client, server: &Server, url_id: i64, patience: Duration) -> Value {
    let deadline = Instant::now() + patience;
    loop {
        let (status, body) = call(
            http,
            reqwest::Method::GET,
            format!("{}/urls/{url_id}/stats", server.base),
            None,
        )
        .await;
        if status == StatusCode::OK {
            return body;
        }
        // Unavailable (503) while the pool reconnects; never an error (500).
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "stats {body}: {}",
            server.logs()
        );
        assert!(
            Instant::now() < deadline,
            "stats still {status} {body}: {}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_every_answered_redirect_is_recorded_once_through_restart_and_outage() {
    let pg = PrivatePostgres::start();
    pg.create_database(DATABASE);
    let bouncer = PrivatePgBouncer::start(&pg);
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::spawn(&[
        ("DATABASE_URL", bouncer.url(DATABASE).as_str()),
        ("MIGRATION_DATABASE_URL", pg.url(DATABASE).as_str()),
        ("DATA_DIR", data.path().to_str().unwrap()),
        // The link stays in the in-process cache through the test; Redis off.
        ("LOCAL_CACHE_TTL_SECONDS", "600"),
    ]);
    let http = client();
    server.wait_ready(&http, "/health").await;
    let (url_id, code) = cached_link(&http, &server).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let probe = stats_probe(&http, &server, url_id, stop.clone());
    let stream = redirect_stream(
        &http,
        format!("{}/{code}", server.base),
        4,
        stop.clone(),
        tally.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| pg.restart_fast());
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| pg.stop_fast());
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| pg.start_again());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for client in stream {
        client.await.unwrap();
    }
    let probed = probe.await.unwrap();
    let answered = tally.found.load(Ordering::Relaxed) + 1; // and the first
    let other = tally.other.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);

    let rows = tokio::task::block_in_place(|| {
        settled_rows(&pg, url_id, answered, Duration::from_secs(60))
    });
    let stats = stats_answer(&http, &server, url_id, Duration::from_secs(20)).await;
    eprintln!(
        "answered 302: {answered}, other answers: {other}, failed requests: {failed}, \
         event rows: {rows}, redirect_count: {}",
        stats["redirect_count"]
    );
    assert_eq!(
        rows,
        answered,
        "every answered redirect exactly once: {}",
        server.logs()
    );
    assert_eq!(stats["redirect_count"].as_u64(), Some(answered), "{stats}");
    assert_eq!(
        other + failed,
        0,
        "cached redirects never fail: {}",
        server.logs()
    );
    // Through the restart and the outage, stats answered 200 or 503 (the
    // database unavailable), never 500.
    let statuses = |code: StatusCode| probed.iter().filter(|s| **s == code).count();
    eprintln!(
        "stats during the run: {} x 200, {} x 503, {} other",
        statuses(StatusCode::OK),
        statuses(StatusCode::SERVICE_UNAVAILABLE),
        probed.len() - statuses(StatusCode::OK) - statuses(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert!(
        probed
            .iter()
            .all(|s| matches!(*s, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE)),
        "{probed:?}: {}",
        server.logs()
    );

    // The API answers normally again.
    let (status, body) = call(
        &http,
        reqwest::Method::GET,
        format!("{}/urls?per_page=5", server.base),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.shorten(&http, "https://example.com/after").await;
    assert!(
        !server.logs().contains("clicks could not be written"),
        "no batch dropped: {}",
        server.logs()
    );
    drop(bouncer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_answered_during_an_outage_survive_a_sigkill() {
    let pg = PrivatePostgres::start();
    pg.create_database(DATABASE);
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", pg.url(DATABASE)),
        ("DATA_DIR", data.path().to_str().unwrap().to_owned()),
        ("LOCAL_CACHE_TTL_SECONDS", "600".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = Server::spawn(&env);
    let http = client();
    server.wait_ready(&http, "/health").await;
    let (url_id, code) = cached_link(&http, &server).await;

    tokio::task::block_in_place(|| pg.stop_fast());
    let mut answered = 1; // the first, before the outage
    for _ in 0..300 {
        let res = server.get(&http, &format!("/{code}")).await;
        assert_eq!(res.status(), StatusCode::FOUND, "{}", server.logs());
        answered += 1;
    }
    // SIGKILL: nothing is flushed.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let first_log = server.logs();
    drop(server);

    tokio::task::block_in_place(|| pg.start_again());
    let mut server = Server::spawn(&env);
    server.wait_ready(&http, "/health").await;
    let rows = tokio::task::block_in_place(|| {
        settled_rows(&pg, url_id, answered, Duration::from_secs(30))
    });
    let stats = stats_answer(&http, &server, url_id, Duration::from_secs(10)).await;
    eprintln!(
        "answered 302: {answered}, event rows after SIGKILL and restart: {rows}, redirect_count: {}",
        stats["redirect_count"]
    );
    assert_eq!(
        rows,
        answered,
        "first run: {first_log}\nsecond run: {}",
        server.logs()
    );
    assert_eq!(stats["redirect_count"].as_u64(), Some(answered), "{stats}");
    // The spill file is empty once written back.
    let spill = std::fs::metadata(data.path().join("clicks.spill")).unwrap();
    assert_eq!(spill.len(), 0);
}

/// A capped link takes each visit in the database before answering it: while the database
/// is away it answers 503, never a redirect that could exceed the cap (an uncapped link
/// keeps redirecting meanwhile), and once it is back exactly the visits left are taken,
/// never more answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_link_never_passes_its_cap_through_an_outage() {
    const CAP: u64 = 5;
    let pg = PrivatePostgres::start();
    pg.create_database(DATABASE);
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("DATABASE_URL", pg.url(DATABASE)),
        ("DATA_DIR", data.path().to_str().unwrap().to_owned()),
        ("LOCAL_CACHE_TTL_SECONDS", "600".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = Server::spawn(&env);
    let http = client();
    server.wait_ready(&http, "/health").await;
    let (status, capped) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/urls", server.base),
        Some(serde_json::json!({"original_url": "https://example.com/few", "max_visits": CAP})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{capped}");
    let capped_path = format!("/{}", capped["short_code"].as_str().unwrap());
    let (_, open_code) = cached_link(&http, &server).await;
    let mut answered = 0;
    for _ in 0..2 {
        let res = server.get(&http, &capped_path).await;
        assert_eq!(res.status(), StatusCode::FOUND, "{}", server.logs());
        answered += 1;
    }

    tokio::task::block_in_place(|| pg.stop_fast());
    for _ in 0..10 {
        let res = server.get(&http, &capped_path).await;
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "a capped link while the database is away: {}",
            server.logs()
        );
        let open = server.get(&http, &format!("/{open_code}")).await;
        assert_eq!(
            open.status(),
            StatusCode::FOUND,
            "an uncapped link keeps redirecting"
        );
    }

    tokio::task::block_in_place(|| pg.start_again());
    // Until the pool reconnects, 503; then the visits left, then 410.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = server.get(&http, &capped_path).await.status();
        match status {
            StatusCode::FOUND => answered += 1,
            StatusCode::GONE => break,
            StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("capped link answered {other}: {}", server.logs()),
        }
        assert!(answered <= CAP, "past the cap: {}", server.logs());
        assert!(Instant::now() < deadline, "no 410 yet: {}", server.logs());
    }
    // Every visit taken is a click; a visit whose commit's answer was lost on a busy machine
    // is taken and recorded but answered 503, so fewer redirects than the cap may be
    // answered, never more.
    let url_id = capped["id"].as_i64().unwrap();
    let rows =
        tokio::task::block_in_place(|| settled_rows(&pg, url_id, CAP, Duration::from_secs(10)));
    assert_eq!(rows, CAP, "every visit taken, each one click");
    assert!((2..=CAP).contains(&answered), "answered {answered}");
    let stats = stats_answer(&http, &server, url_id, Duration::from_secs(10)).await;
    assert_eq!(stats["redirect_count"].as_u64(), Some(CAP), "{stats}");
    assert_eq!(stats["visits_left"].as_u64(), Some(0), "{stats}");
}

/// A store whose first click write commits but reports a lost connection,
/// as when the connection drops between the COMMIT and its answer.
struct AnswerLost {
    inner: shortener::store::DynStore,
    lose_next: AtomicBool,
}

#[async_trait::async_trait]
impl Store for AnswerLost {
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    fn pool_stats(&self) -> PoolStats {
        self.inner.pool_stats()
    }
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        self.inner.create_user(user).await
    }
    async fn get_user(&self, id: i64) -> StoreResult<User> {
        self.inner.get_user(id).await
    }
    async fn list_users(&self, page: Page) -> StoreResult<Listing<User>> {
        self.inner.list_users(page).await
    }
    async fn update_user(&self, id: i64, patch: UserPatch) -> StoreResult<User> {
        self.inner.update_user(id, patch).await
    }
    async fn delete_user(&self, id: i64, by: Actor) -> StoreResult<UserDeletion> {
        self.inner.delete_user(id, by).await
    }
    async fn import_users(&self, users: Vec<ImportedUser>) -> StoreResult<ImportOutcome> {
        self.inner.import_users(users).await
    }
    async fn insert_url(&self, url: NewUrl, code: &ShortCode, by: Actor) -> StoreResult<Url> {
        self.inner.insert_url(url, code, by).await
    }
    async fn get_url(&self, id: i64) -> StoreResult<Url> {
        self.inner.get_url(id).await
    }
    async fn list_urls(&self, filter: UrlFilter, page: Page) -> StoreResult<Listing<Url>> {
        self.inner.list_urls(filter, page).await
    }
    async fn urls_after(
        &self,
        filter: UrlFilter,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<Url>> {
        self.inner.urls_after(filter, after_id, limit).await
    }
    async fn count_active_urls(&self) -> StoreResult<i64> {
        self.inner.count_active_urls().await
    }
    async fn update_url(&self, id: i64, patch: UrlPatch, by: Actor) -> StoreResult<Url> {
        self.inner.update_url(id, patch, by).await
    }
    async fn deactivate_url(&self, id: i64, reason: &str, by: Actor) -> StoreResult<Url> {
        self.inner.deactivate_url(id, reason, by).await
    }
    async fn url_stats(&self, id: i64) -> StoreResult<UrlStats> {
        self.inner.url_stats(id).await
    }
    async fn resolve(&self, code: &str) -> StoreResult<Option<RedirectTarget>> {
        self.inner.resolve(code).await
    }
    async fn recent_active_targets(&self, limit: i64) -> StoreResult<Vec<RedirectTarget>> {
        self.inner.recent_active_targets(limit).await
    }
    async fn create_event(&self, event: NewEvent, by: Actor) -> StoreResult<Event> {
        self.inner.create_event(event, by).await
    }
    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey> {
        self.inner.create_api_key(key).await
    }
    async fn get_api_key(&self, id: i64) -> StoreResult<ApiKey> {
        self.inner.get_api_key(id).await
    }
    async fn list_api_keys(&self, page: Page) -> StoreResult<Listing<ApiKey>> {
        self.inner.list_api_keys(page).await
    }
    async fn revoke_api_key(&self, id: i64) -> StoreResult<ApiKey> {
        self.inner.revoke_api_key(id).await
    }
    async fn use_api_key(&self, secret_sha256: &str) -> StoreResult<Option<ApiKey>> {
        self.inner.use_api_key(secret_sha256).await
    }
    async fn bootstrap_api_key(&self, secret_sha256: &str, prefix: &str) -> StoreResult<i64> {
        self.inner.bootstrap_api_key(secret_sha256, prefix).await
    }
    async fn list_events(&self, filter: EventFilter, page: Page) -> StoreResult<Listing<Event>> {
        self.inner.list_events(filter, page).await
    }
    async fn events_after(
        &self,
        filter: EventFilter,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        self.inner.events_after(filter, after_id, limit).await
    }
    async fn import_urls(
        &self,
        user_id: Option<i64>,
        urls: Vec<shortener::store::ImportedUrl>,
        by: Actor,
    ) -> StoreResult<Vec<shortener::store::Imported>> {
        self.inner.import_urls(user_id, urls, by).await
    }
    async fn url_analytics(
        &self,
        url_id: i64,
        from: shortener::domain::Timestamp,
        to: shortener::domain::Timestamp,
    ) -> StoreResult<shortener::store::AnalyticsRows> {
        self.inner.url_analytics(url_id, from, to).await
    }
    async fn visitor_salt(&self, day: chrono::NaiveDate, fresh: Vec<u8>) -> StoreResult<Vec<u8>> {
        self.inner.visitor_salt(day, fresh).await
    }
    async fn record_visit(&self, click: &Click, shard: i16) -> StoreResult<bool> {
        self.inner.record_visit(click, shard).await
    }
    async fn record_clicks(
        &self,
        clicks: &[Click],
        shard: i16,
        origin: BatchOrigin,
    ) -> StoreResult<()> {
        self.inner.record_clicks(clicks, shard, origin).await?;
        if self.lose_next.swap(false, Ordering::SeqCst) {
            let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "lost answer");
            return Err(StoreError::Unavailable(sqlx::Error::Io(reset)));
        }
        Ok(())
    }
    async fn record_spilled_clicks(
        &self,
        batches: &[ClickBatch],
        shard: i16,
    ) -> StoreResult<usize> {
        self.inner.record_spilled_clicks(batches, shard).await
    }
    fn click_writers_limit(&self) -> usize {
        self.inner.click_writers_limit()
    }
    async fn load_seed(&self, seed: SeedData) -> StoreResult<SeedOutcome> {
        self.inner.load_seed(seed).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_write_whose_answer_was_lost_is_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let inner = shortener::store::connect(&url, 1, None, Schema::Migrate)
        .await
        .unwrap();
    let store = Arc::new(AnswerLost {
        inner,
        lose_next: AtomicBool::new(true),
    });
    let link = store
        .create_url_with_generated_code(
            NewUrl {
                user_id: None,
                original_url: TargetUrl::parse("https://example.com/lost").unwrap(),
                title: None,
                policy: Default::default(),
            },
            Actor::NONE,
        )
        .await
        .unwrap();
    let config = ServeConfig::from_flags(["--click-write-timeout-ms", "500"]).unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let (recorder, writer) =
        ClickRecorder::start(store.clone(), &config.clicks, dir.path(), metrics).unwrap();
    for _ in 0..5 {
        recorder
            .record(Click {
                url_id: link.id,
                user_id: None,
                short_code: link.short_code.clone(),
                at: shortener::domain::now(),
                bot: false,
                agent: None,
                referrer: None,
                visitor: None,
            })
            .await;
    }
    // The first write committed but was spilled; its write-back (a second
    // later) finds it committed and skips it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(recorder);
    writer.await.unwrap();
    let stats = store.url_stats(link.id).await.unwrap();
    assert_eq!(stats.redirect_count, 5);
    let spill = std::fs::metadata(dir.path().join("clicks.spill")).unwrap();
    assert_eq!(spill.len(), 0, "written back");
}

/// The classifier, for real: what PgBouncer and a stopping or restarting
/// PostgreSQL actually answer is `Unavailable` (503, clicks kept), never a
/// plain database error (500, clicks dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_pgbouncer_and_a_restarting_postgres_answer_is_unavailable() {
    let pg = PrivatePostgres::start();
    pg.create_database(DATABASE);
    let bouncer = PrivatePgBouncer::start(&pg);
    let direct = shortener::store::connect(&pg.url(DATABASE), 2, None, Schema::Migrate)
        .await
        .unwrap();
    let pooled = shortener::store::connect(&bouncer.url(DATABASE), 2, None, Schema::Migrate)
        .await
        .unwrap();
    direct.ping().await.unwrap();
    pooled.ping().await.unwrap();

    let mut seen = Vec::new();
    let mut check = |what: &str, result: StoreResult<i64>| match result {
        Ok(_) => {}
        Err(StoreError::Unavailable(err)) => seen.push(format!("{what}: {err}")),
        Err(other) => panic!("{what}: {other} is not Unavailable (seen so far: {seen:#?})"),
    };
    // Sessions ended by a restart (57P01 on the direct connections).
    tokio::task::block_in_place(|| pg.restart_fast());
    check("direct after restart", direct.count_active_urls().await);
    check("pooled after restart", pooled.count_active_urls().await);
    // A stopped server: refused connections, and PgBouncer's cached login
    // error (08P01 "server login has been failing").
    tokio::task::block_in_place(|| pg.stop_fast());
    for _ in 0..3 {
        check("direct while stopped", direct.count_active_urls().await);
        check("pooled while stopped", pooled.count_active_urls().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{seen:#?}");
    assert!(
        seen.iter()
            .any(|e| e.contains("server login has been failing")
                || e.contains("pgbouncer cannot connect to server")),
        "PgBouncer's own refusal was met: {seen:#?}"
    );
    tokio::task::block_in_place(|| pg.start_again());
    // Direct connections come back at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while direct.count_active_urls().await.is_err() {
        assert!(Instant::now() < deadline, "direct connections came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(bouncer);
}

/// A PostgreSQL of the test's own, the service (`env`) reaching it through a forwarder the
/// test can slow down, started and ready.
async fn behind_a_forwarder(
    env: &[(&str, &str)],
) -> (PrivatePostgres, common::proxy::Proxy, Server, Client) {
    let pg = PrivatePostgres::start();
    pg.create_database(DATABASE);
    let proxy = common::proxy::Proxy::start(([127, 0, 0, 1], pg.port).into()).await;
    let url = format!("postgres://postgres@{}/{DATABASE}", proxy.addr);
    let mut server = Server::start(&url, env);
    let http = client();
    server.wait_ready(&http, "/health").await;
    (pg, proxy, server, http)
}

/// A request cancelled while its transaction's `BEGIN` waits on a slow database (the request
/// timeout fires) must not leave that session inside a transaction nobody ends: the pool
/// would hand it to the next request, whose writes are answered 201 and never committed.
/// Seen on the real node as `POST /users` answered, then `POST /urls` for that user
/// answered "user not found", after PostgreSQL was replaced under load.
///
/// One connection, so the next request gets the same session; a forwarder in front of
/// PostgreSQL delays every chunk by about a third of the one-second request timeout, so the
/// connection check on acquire answers before the timeout and the `BEGIN` after it. Several
/// delays are tried, so a busy machine's scheduling cannot move every cancellation off the
/// `BEGIN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_during_begin_leaves_no_open_transaction() {
    let (pg, proxy, server, http) = behind_a_forwarder(&[
        ("DATABASE_POOL_SIZE", "1"),
        ("REQUEST_TIMEOUT_SECS", "1"),
        // The admin key stays trusted: no key lookup before the transaction.
        ("KEY_TRUST_SECS", "3600"),
    ])
    .await;
    let users = format!("{}/users", server.base);
    let create = |name: String| {
        let (http, users) = (&http, &users);
        async move {
            let (status, user) = call(
                http,
                reqwest::Method::POST,
                users.clone(),
                Some(serde_json::json!({"username": name, "email": format!("{name}@example.com")})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{user}");
            user["id"].as_i64().unwrap()
        }
    };
    for (round, delay_ms) in [300u64, 340, 380, 420, 460].into_iter().enumerate() {
        let victim = create(format!("victim-{round}")).await;
        proxy.delay(Duration::from_millis(delay_ms));
        // `DELETE /users/{id}` opens a transaction first thing.
        let (status, body) = call(
            &http,
            reqwest::Method::DELETE,
            format!("{users}/{victim}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        proxy.delay(Duration::ZERO);
        // The delayed chunks drain; then a write is answered, and must be committed.
        let committed = create(format!("after-{round}")).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let seen = |id: i64| {
            pg.query(
                DATABASE,
                &format!("SELECT count(*) FROM users WHERE id = {id}"),
            ) == "1"
        };
        while !tokio::task::block_in_place(|| seen(committed)) {
            let open = tokio::task::block_in_place(|| {
                pg.query(
                    DATABASE,
                    "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
                )
            });
            assert!(
                Instant::now() < deadline,
                "round {round} ({delay_ms} ms): user {committed} was answered 201 but is not \
                 in the database; sessions idle in a transaction: {open}\n{}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(proxy);
}

/// The redirect has no request-timeout layer (its in-process hits pay for none): its lookup
/// beyond the cache keeps the bound. A database that stalls gets the client the same 503
/// as the other routes' timeout, JSON with `Retry-After`, after `REQUEST_TIMEOUT_SECS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_stalled_beyond_the_cache_times_out_like_any_request() {
    let (_pg, proxy, server, http) = behind_a_forwarder(&[("REQUEST_TIMEOUT_SECS", "1")]).await;
    // Every chunk 10 s late: a lookup would take 20 s or more.
    proxy.delay(Duration::from_secs(10));
    let asked = Instant::now();
    // A code no cache holds: the lookup goes to the database.
    let res = server.get(&http, "/Unknwn7").await;
    let waited = asked.elapsed();
    proxy.delay(Duration::ZERO);
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    assert!(waited < Duration::from_secs(8), "answered after {waited:?}");
    drop(proxy);
}
