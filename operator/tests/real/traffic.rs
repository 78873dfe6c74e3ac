//! Requests as an API client sends them through the Ingress controller: the management API
//! with the generated admin key, and streams of redirects that count every answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::cluster::{Result, eventually};
use crate::ensure;

/// The service's API behind one entry point (an Ingress or a Gateway listener).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    host: Option<String>,
    key: String,
}

/// A link made for a test: its id, code and target.
#[derive(Clone, Debug)]
pub struct Link {
    pub id: i64,
    pub code: String,
    pub target: String,
}

impl Api {
    /// `host`: the Host header to send, for an Ingress or route that matches one host only.
    pub fn new(base: &str, host: Option<&str>, key: &str) -> Result<Self> {
        Self::with_pool(base, host, key, 16)
    }

    fn with_pool(base: &str, host: Option<&str>, key: &str, idle: usize) -> Result<Self> {
        Self::with_client(
            base,
            host,
            key,
            Self::builder().pool_max_idle_per_host(idle),
        )
    }

    /// HTTPS to `https://HOST:PORT` as a browser reaches it: the name resolved to `address`
    /// (the entry point on loopback), the server's certificate checked against `root_pem`
    /// (the only root trusted) for that name.
    pub fn over_tls(
        host: &str,
        address: std::net::SocketAddr,
        root_pem: &[u8],
        key: &str,
    ) -> Result<Self> {
        let builder = Self::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(root_pem)?)
            .resolve(host, address)
            .https_only(true);
        let base = format!("https://{host}:{}", address.port());
        Self::with_client(&base, None, key, builder)
    }

    fn builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
    }

    fn with_client(
        base: &str,
        host: Option<&str>,
        key: &str,
        builder: reqwest::ClientBuilder,
    ) -> Result<Self> {
        let http = builder.build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            host: host.map(str::to_string),
            key: key.to_string(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(host) = &self.host {
            request = request.header(reqwest::header::HOST, host);
        }
        request
    }

    async fn send_json(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let response = self
            .request(method.clone(), path)
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(
            status.is_success(),
            "{method} {path} answered {status}: {text}"
        );
        Ok(serde_json::from_str(&text)?)
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let response = self
            .request(reqwest::Method::GET, path)
            .bearer_auth(&self.key)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "GET {path} answered {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits until the API answers through this entry point (the controller has the route
    /// and the app's endpoints).
    pub async fn wait_serving(&self) -> Result {
        eventually(
            &format!("the API answering at {}", self.base),
            Duration::from_secs(180),
            || async {
                match self.get_json("/urls?per_page=1").await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
    }

    /// A user for a test; the email is unique per run (a rerun on the same stack finds the
    /// earlier run's users).
    pub async fn create_user(&self, name: &str) -> Result<i64> {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let name = &format!("{name}-{run}");
        let user = self
            .send_json(
                reqwest::Method::POST,
                "/users",
                json!({ "username": name, "email": format!("{name}@example.com") }),
            )
            .await?;
        user["id"]
            .as_i64()
            .ok_or_else(|| format!("POST /users answered {user}").into())
    }

    /// `POST path` with a JSON body; the answer's JSON (a non-2xx answer is an error).
    pub async fn post_json(&self, path: &str, body: Value) -> Result<Value> {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    pub async fn create_link(&self, user_id: i64, target: &str) -> Result<Link> {
        let url = self
            .send_json(
                reqwest::Method::POST,
                "/urls",
                json!({ "original_url": target, "user_id": user_id }),
            )
            .await?;
        match (url["id"].as_i64(), url["short_code"].as_str()) {
            (Some(id), Some(code)) => Ok(Link {
                id,
                code: code.to_string(),
                target: target.to_string(),
            }),
            _ => Err(format!("POST /urls answered {url}").into()),
        }
    }

    /// Whether the service's `/metrics` answers through this entry point (it must not: it
    /// is for Prometheus, inside the cluster).
    pub async fn metrics_exposed(&self) -> Result<bool> {
        let response = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await?;
        let ok = response.status().is_success();
        let text = response.text().await?;
        Ok(ok && text.contains("shortener_http_requests_total"))
    }

    /// One redirect: the status and the Location header.
    pub async fn follow(&self, code: &str) -> Result<(StatusCode, Option<String>)> {
        let response = self
            .request(reqwest::Method::GET, &format!("/{code}"))
            .send()
            .await?;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((response.status(), location))
    }

    pub async fn redirect_count(&self, link: &Link) -> Result<u64> {
        let stats = self.get_json(&format!("/urls/{}/stats", link.id)).await?;
        stats["redirect_count"]
            .as_u64()
            .ok_or_else(|| format!("GET /urls/{}/stats answered {stats}", link.id).into())
    }

    /// Waits until at least `at_least` redirects of `link` are recorded; their number.
    pub async fn counted(&self, link: &Link, at_least: u64) -> Result<u64> {
        eventually("the redirects counted", Duration::from_secs(60), || async {
            match self.redirect_count(link).await {
                Ok(n) if n >= at_least => Ok(n),
                Ok(n) => Err(format!("{n} counted, want {at_least}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// After the stack was made again (`context` says how): `link` still redirects to its
    /// target, and that redirect is counted on top of the `counted` ones from before.
    pub async fn redirects_and_counts_on(
        &self,
        link: &Link,
        counted: u64,
        context: &str,
    ) -> Result {
        let (status, location) = self.follow(&link.code).await?;
        ensure!(
            status == StatusCode::FOUND && location.as_deref() == Some(link.target.as_str()),
            "/{} answered {status} {location:?} {context}",
            link.code
        );
        eventually(
            "the earlier clicks and the new one counted",
            Duration::from_secs(60),
            || async {
                match self.redirect_count(link).await {
                    Ok(n) if n == counted + 1 => Ok(()),
                    Ok(n) => Err(format!("{n} counted, want {}", counted + 1)),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
    }

    /// Waits until every link's recorded redirects equal the answered ones. Recording is
    /// asynchronous only while a store is away (the clicks wait in the service's spill), so
    /// this polls to a deadline; a count above the answered one fails at once.
    pub async fn expect_counts(&self, answered: &BTreeMap<String, u64>, links: &[Link]) -> Result {
        eventually(
            "every answered redirect recorded",
            Duration::from_secs(180),
            || async {
                let mut wrong = Vec::new();
                for link in links {
                    let want = answered.get(&link.code).copied().unwrap_or(0);
                    let got = self.redirect_count(link).await.map_err(|e| e.to_string())?;
                    if got > want {
                        return Err(format!(
                            "{}: {got} recorded, more than the {want} answered",
                            link.code
                        ));
                    }
                    if got != want {
                        wrong.push(format!("{}: {got} of {want}", link.code));
                    }
                }
                if wrong.is_empty() {
                    Ok(())
                } else {
                    Err(wrong.join(", "))
                }
            },
        )
        .await
    }
}

/// An error with its causes: "error sending request" alone does not say whether the
/// connection was refused, reset or timed out.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What a stream of redirects saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Redirects answered 302 to the right target, by code.
    pub answered: BTreeMap<String, u64>,
    /// Everything else: when, and what.
    pub failures: Vec<(Duration, String)>,
}

impl Seen {
    pub fn total(&self) -> u64 {
        self.answered.values().sum()
    }
}

/// Clients following the links in a loop, each at its own pace, until stopped.
pub struct Stream {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stream {
    /// `clients` loops, each sending one redirect every `pace` (so the rate stays below the
    /// rate limits of the examples: the stream measures availability, not throughput).
    pub fn start(api: &Api, links: &[Link], clients: usize, pace: Duration) -> Self {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tasks = (0..clients)
            .map(|client| {
                let (api, links) = (api.clone(), links.to_vec());
                let (stop, seen) = (stop.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut next = client;
                    while !stop.load(Ordering::SeqCst) {
                        let link = &links[next % links.len()];
                        next += 1;
                        let outcome = api.follow(&link.code).await;
                        let mut seen = seen.lock().await;
                        match outcome {
                            Ok((StatusCode::FOUND, Some(location))) if location == link.target => {
                                *seen.answered.entry(link.code.clone()).or_default() += 1;
                            }
                            Ok((status, location)) => seen.failures.push((
                                started.elapsed(),
                                format!("GET /{}: {status} {location:?}", link.code),
                            )),
                            Err(error) => seen.failures.push((
                                started.elapsed(),
                                format!("GET /{}: {}", link.code, causes(error.as_ref())),
                            )),
                        }
                        drop(seen);
                        tokio::time::sleep(pace).await;
                    }
                })
            })
            .collect();
        Self { stop, seen, tasks }
    }

    /// Failures seen so far.
    pub async fn failures(&self) -> usize {
        self.seen.lock().await.failures.len()
    }

    /// The failures after the first `from`, counted by kind (the answer without the code).
    pub async fn failures_since(&self, from: usize) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        for (_, what) in self.seen.lock().await.failures.iter().skip(from) {
            let kind = what.split_once(": ").map_or(what.as_str(), |(_, k)| k);
            // The URL says nothing about the kind: keep the causes.
            let kind = match kind.split_once(": ") {
                Some((first, causes)) if first.starts_with("error sending request") => causes,
                _ => kind,
            };
            *kinds.entry(kind.to_string()).or_default() += 1;
        }
        kinds
    }

    /// Answered redirects so far.
    pub async fn answered(&self) -> u64 {
        self.seen.lock().await.total()
    }

    pub async fn stop(self) -> Result<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await?;
        }
        let seen = std::mem::take(&mut *self.seen.lock().await);
        Ok(seen)
    }
}
