//! The service's HTTP API as the link sync uses it: inside the cluster, through the app's
//! Service, with the sync key (or the admin key, only to make that key).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// No request of the sync waits longer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight to one service at once, over all its ShortLinks: a GitOps apply of
/// hundreds of them queues here instead of meeting the service's rate limits all at once.
pub const IN_FLIGHT: usize = 4;
/// A 429 is retried after its `Retry-After` (at most this long each time)...
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// ... this many times before the pass fails (and is retried with backoff).
const MAX_RETRIES: u32 = 20;

/// Why a request did not give the answer the caller wanted.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: the Service has no ready endpoint, DNS, a timeout.
    #[error("the service did not answer {method} {path}: {reason}")]
    Unreachable {
        method: Method,
        path: String,
        reason: String,
    },
    /// An answer, but not one the caller can use; `message` is the service's `error`.
    #[error("{method} {path} answered {status}: {message}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
}

impl CallError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            Self::Unreachable { .. } => None,
        }
    }

    /// The service's own words, for a status a person reads.
    pub fn message(&self) -> String {
        match self {
            Self::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// A link as the service returns it (the fields the sync reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Url {
    pub id: i64,
    pub user_id: Option<i64>,
    pub short_code: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    pub url: Url,
    pub redirect_count: i64,
}

/// One base URL and one key; the requests of every `ServiceApi` of one service share its
/// `gate` (at most [`IN_FLIGHT`] at once).
#[derive(Clone)]
pub struct ServiceApi {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    metrics: Metrics,
    gate: Arc<Semaphore>,
}

impl ServiceApi {
    pub fn new(
        http: reqwest::Client,
        base: String,
        key: Option<String>,
        metrics: Metrics,
        gate: Arc<Semaphore>,
    ) -> Self {
        Self {
            http,
            base,
            key,
            metrics,
            gate,
        }
    }

    /// The client the sync's APIs share (one connection pool).
    pub fn client() -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
    }

    /// Sends the request; a 2xx answer is its JSON body (`Null` when empty), anything else
    /// an error carrying the service's message. A 429 (the service's rate limits) is sent
    /// again after its `Retry-After`, holding this service's gate meanwhile, so the sync slows
    /// down to what the service admits instead of failing.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let unreachable = |reason: String| CallError::Unreachable {
            method: method.clone(),
            path: path.to_string(),
            reason,
        };
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| unreachable("the sync is stopping".into()))?;
        let mut retries = 0;
        let (status, text) = loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(key) = &self.key {
                request = request.bearer_auth(key);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    self.metrics.link_request(method.as_str(), "error");
                    return Err(unreachable(error_chain(&error)));
                }
            };
            let status = response.status();
            self.metrics.link_request(method.as_str(), status.as_str());
            if status == StatusCode::TOO_MANY_REQUESTS && retries < MAX_RETRIES {
                retries += 1;
                tokio::time::sleep(retry_after(response.headers())).await;
                continue;
            }
            let text = response
                .text()
                .await
                .map_err(|error| unreachable(error_chain(&error)))?;
            break (status, text);
        };
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.chars().take(300).collect());
            return Err(CallError::Refused {
                method,
                path: path.to_string(),
                status,
                message,
            });
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|error| CallError::Refused {
            method,
            path: path.to_string(),
            status,
            message: format!("the answer is not JSON: {error}"),
        })
    }

    /// Like [`Self::call`], the answer read as `T`.
    pub async fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, CallError> {
        let value = self.call(method.clone(), path, body).await?;
        serde_json::from_value(value).map_err(|error| CallError::Refused {
            method,
            path: path.to_string(),
            status: StatusCode::OK,
            message: format!("unexpected answer: {error}"),
        })
    }
}

/// How long a 429 asks to wait: its `Retry-After` in seconds (1 when absent or not a
/// number; at most [`MAX_RETRY_WAIT`]).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    let seconds = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    Duration::from_secs(seconds).min(MAX_RETRY_WAIT)
}

/// An error and its causes, on one line (reqwest's own message hides the cause).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn a_429_waits_what_it_asks_within_bounds() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after(&headers)
        };
        assert_eq!(with("3"), Duration::from_secs(3));
        assert_eq!(with("0"), Duration::from_secs(1));
        assert_eq!(with("3600"), MAX_RETRY_WAIT);
        assert_eq!(
            with("Wed, 21 Oct 2026 07:28:00 GMT"),
            Duration::from_secs(1)
        );
        assert_eq!(retry_after(&HeaderMap::new()), Duration::from_secs(1));
    }
}
