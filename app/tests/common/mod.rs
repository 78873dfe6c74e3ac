//! Test harness: a real server on a real socket, backed by a real database
//! (a fresh SQLite file, or a fresh PostgreSQL database per test).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod private_pg;
pub mod proxy;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use shortener::config::{AuthMode, ServeConfig};
use shortener::store::{self, DynStore};
use sqlx::{Connection, Executor, PgConnection};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// Where `scripts/services.sh` says PostgreSQL is.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Where `scripts/services.sh` says the test PgBouncer is (transaction
/// pooling in front of the PostgreSQL above, every database name).
pub fn pgbouncer_url() -> String {
    std::env::var("TEST_PGBOUNCER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:56435/postgres".into())
}

/// Where `scripts/services.sh` says Redis is.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis key prefix of its own, so tests sharing one Redis never see
/// each other's keys or messages.
pub fn unique_prefix() -> String {
    format!(
        "test{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through PgBouncer in transaction pooling, as deployed;
    /// migrations go straight to PostgreSQL.
    PgBouncer,
}

/// A database that exists for one test and is removed after it.
pub struct TestDatabase {
    pub url: String,
    /// A direct URL for migrations, when `url` goes through PgBouncer.
    pub migration_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Self {
                    url,
                    migration_url: None,
                    name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres | Backend::PgBouncer => {
                let name = format!(
                    "shortener_test_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    rand_suffix()
                );
                let admin = admin_database_url();
                let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} is needed (run scripts/test.sh): {e}")
                });
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .unwrap();
                let direct = with_database(&admin, &name);
                let (url, migration_url) = if backend == Backend::PgBouncer {
                    let bouncer = pgbouncer_url();
                    let url = with_database(&bouncer, &name);
                    let mut conn = PgConnection::connect(&url).await.unwrap_or_else(|e| {
                        panic!("PgBouncer at {bouncer} is needed (run scripts/test.sh): {e}")
                    });
                    conn.execute("SELECT 1").await.unwrap();
                    (url, Some(direct))
                } else {
                    (direct, None)
                };
                Self {
                    url,
                    migration_url,
                    name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    pub async fn store(&self) -> DynStore {
        store::connect(
            &self.url,
            10,
            self.migration_url.as_deref(),
            store::Schema::Migrate,
        )
        .await
        .unwrap()
    }

    /// The same database reached through `addr` (a fault-injection proxy).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let mut parsed = url::Url::parse(&self.url).unwrap();
        parsed.set_port(Some(addr.port())).unwrap();
        parsed.set_host(Some(&addr.ip().to_string())).unwrap();
        parsed.to_string()
    }

    /// The address of the PostgreSQL server.
    pub fn server_addr(&self) -> std::net::SocketAddr {
        let parsed = url::Url::parse(&self.url).unwrap();
        let host = parsed.host_str().unwrap();
        let host = if host == "localhost" {
            "127.0.0.1"
        } else {
            host
        };
        format!("{host}:{}", parsed.port().unwrap_or(5432))
            .parse()
            .unwrap()
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::SystemTime::now()) % 1_000_000) as u32
}

fn with_database(url: &str, db: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_path(&format!("/{db}"));
    parsed.to_string()
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let admin = admin_database_url();
        // Drop runs outside any runtime we may block: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A running service and a client for it: started and served by the same
/// functions `shortener serve` uses, on a real socket.
pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub db: Arc<TestDatabase>,
    key: Option<String>,
    /// Aborting it drops the whole service (one task: the serve future
    /// owns the listener, the router and the click recorder).
    server: tokio::task::JoinHandle<()>,
    /// DATA_DIR (the click spill file), one per server.
    pub data_dir: tempfile::TempDir,
}

impl TestApp {
    /// An open (no auth) server on a fresh database.
    pub async fn new(backend: Backend) -> Self {
        Self::with_auth(backend, AuthMode::Open).await
    }

    pub async fn with_auth(backend: Backend, mode: AuthMode) -> Self {
        let db = Arc::new(TestDatabase::new(backend).await);
        Self::on(db, mode, None).await
    }

    /// A server on an existing database (several servers may share one),
    /// with Redis as the shared cache when `redis` is given.
    pub async fn on(db: Arc<TestDatabase>, mode: AuthMode, redis: Option<&str>) -> Self {
        let mode = match mode {
            AuthMode::Open => "open",
            AuthMode::ApiKey => "api-key",
        };
        let mut flags = vec!["--auth-mode", mode];
        if let Some(redis) = redis {
            flags.extend(["--redis-url", redis]);
        }
        Self::start(db, &flags).await
    }

    /// `shortener serve` on `db` with these flags (no environment is read;
    /// the admin key is `ADMIN_KEY`, every request is logged). Later flags
    /// win, so `--database-url` may point elsewhere (a proxy).
    pub async fn start(db: Arc<TestDatabase>, flags: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let data_path = data_dir.path().to_str().unwrap().to_owned();
        let mut all = vec!["--database-url", db.url.as_str()];
        if let Some(direct) = &db.migration_url {
            all.extend(["--migration-database-url", direct.as_str()]);
        }
        all.extend(["--data-dir", data_path.as_str()]);
        all.extend(["--admin-api-key", ADMIN_KEY, "--access-log", "all"]);
        all.extend(flags);
        let config = ServeConfig::from_flags(all).unwrap();
        let key = (config.auth_mode == AuthMode::ApiKey).then(|| ADMIN_KEY.to_owned());
        let service = shortener::Service::start(config, false).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let never = std::future::pending();
            service.serve(listener, never).await.unwrap();
        });
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            base,
            client,
            db,
            key,
            server,
            data_dir,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    /// GET that must answer 200 with JSON; the body.
    pub async fn get_json(&self, path: &str) -> Value {
        expect_json(self.get(path).await, StatusCode::OK).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send_json(Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.send_json(Method::PUT, path, body).await
    }

    async fn send_json(&self, method: Method, path: &str, body: Value) -> Response {
        self.request(method, path).json(&body).send().await.unwrap()
    }

    /// POST with a raw body and content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: &str) -> Response {
        self.request(Method::POST, path)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn create_user(&self, username: &str, email: &str) -> Value {
        let res = self
            .post(
                "/users",
                serde_json::json!({"username": username, "email": email}),
            )
            .await;
        expect_json(res, StatusCode::CREATED).await
    }

    pub async fn create_url(&self, body: Value) -> Value {
        expect_json(self.post("/urls", body).await, StatusCode::CREATED).await
    }

    /// A new link to `target`, owned by nobody.
    pub async fn link(&self, target: &str) -> Value {
        self.create_url(serde_json::json!({ "original_url": target }))
            .await
    }

    /// A new user (ada) and a link of theirs to `target`.
    pub async fn user_with_link(&self, target: &str) -> (Value, Value) {
        let user = self.create_user("ada", "ada@example.com").await;
        let body = serde_json::json!({"original_url": target, "user_id": user["id"]});
        (user.clone(), self.create_url(body).await)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Asserts the status and returns the JSON body.
pub async fn expect_json(res: Response, status: StatusCode) -> Value {
    let got = res.status();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    assert!(
        ctype.starts_with("application/json"),
        "content-type {ctype:?}, body {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an error status with a JSON `{"error": "..."}` body; returns the
/// message.
pub async fn expect_error(res: Response, status: StatusCode) -> String {
    let body = expect_json(res, status).await;
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"))
        .to_owned()
}

/// Runs each listed test against every backend:
/// `every_backend!(creates_users, …)` makes `sqlite::creates_users`,
/// `postgres::creates_users` and `pgbouncer::creates_users`, each calling
/// the crate's `creates_users(Backend)`; with modules,
/// `every_backend!(users: [creates_users])` makes `sqlite::users::creates_users`,
/// … calling `users::creates_users(Backend)`.
#[macro_export]
macro_rules! every_backend {
    ($($module:ident: [$($name:ident),* $(,)?]),* $(,)?) => {
        $crate::every_backend!(@backend sqlite Sqlite $({$module} [$($name)*])*);
        $crate::every_backend!(@backend postgres Postgres $({$module} [$($name)*])*);
        $crate::every_backend!(@backend pgbouncer PgBouncer $({$module} [$($name)*])*);
    };
    ($($name:ident),* $(,)?) => {
        $crate::every_backend!(@backend sqlite Sqlite {} [$($name)*]);
        $crate::every_backend!(@backend postgres Postgres {} [$($name)*]);
        $crate::every_backend!(@backend pgbouncer PgBouncer {} [$($name)*]);
    };
    (@backend $backend:ident $variant:ident $({$($module:ident)?} [$($name:ident)*])*) => {
        mod $backend {
            $($crate::every_backend!(@tests $variant {$($module)?} [$($name)*]);)*
        }
    };
    (@tests $variant:ident {} [$($name:ident)*]) => {
        $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() { $crate::$name($crate::common::Backend::$variant).await })*
    };
    (@tests $variant:ident {$module:ident} [$($name:ident)*]) => {
        mod $module {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { $crate::$module::$name($crate::common::Backend::$variant).await })*
        }
    };
}
