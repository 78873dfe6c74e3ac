//! The real binary as a child process: `shortener serve` on a free port.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};

use super::ADMIN_KEY;

pub const BIN: &str = env!("CARGO_BIN_EXE_shortener");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A management call with the admin key: the status and the body as JSON
/// (a body that is not JSON comes back as a JSON string).
pub async fn call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut req = client.request(method, url).bearer_auth(ADMIN_KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

/// An HTTP client that does not follow redirects. Every request gives up after a minute: a
/// request caught in the client's connection pool when the server it talks to is killed
/// (the tests that SIGKILL a server under load) fails instead of hanging the suite.
pub fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

pub struct Server {
    pub child: Child,
    pub base: String,
    /// The process's working directory (where the embedded database goes).
    pub dir: tempfile::TempDir,
    stderr: PathBuf,
}

impl Server {
    /// `shortener serve` on `database_url`; `env` as in [`Server::spawn`].
    pub fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        let mut all = vec![("DATABASE_URL", database_url)];
        all.extend_from_slice(env);
        Self::spawn(&all)
    }

    /// `shortener serve` in a fresh working directory on a free port, with
    /// admin-key auth (`ADMIN_KEY`), a 5 s shutdown grace and stderr kept
    /// for [`Server::logs`]. The caller's `DATABASE_URL`, `RUST_LOG` and
    /// OTLP settings never leak in; `env` comes last and wins.
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.log");
        let child = Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env("AUTH_MODE", "api-key")
            .env("ADMIN_API_KEY", ADMIN_KEY)
            .env("SHUTDOWN_GRACE_SECS", "5")
            .envs(env.iter().copied())
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            stderr,
        }
    }

    /// Waits until `GET path` answers 200 (the process must not exit meanwhile).
    pub async fn wait_ready(&mut self, client: &Client, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(res) = client.get(format!("{}{path}", self.base)).send().await
                && res.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "server exited during start-up: {}",
                self.logs()
            );
            assert!(Instant::now() < deadline, "server not healthy in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `POST /urls` with the admin key for `target`: asserts 201, returns the link.
    pub async fn shorten(&self, http: &Client, target: &str) -> serde_json::Value {
        let (status, url) = call(
            http,
            reqwest::Method::POST,
            format!("{}/urls", self.base),
            Some(serde_json::json!({ "original_url": target })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{url}");
        url
    }

    /// `GET path` without a key, as a browser follows a link.
    pub async fn get(&self, http: &Client, path: &str) -> reqwest::Response {
        http.get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// What the process wrote to stderr (its log).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
