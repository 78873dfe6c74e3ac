//! The service's HTTP API as the link sync uses it: inside the cluster, through the app's
//! Service, with the sync key (or the admin key, only to make that key).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::metrics::Metrics;

/// No request of the sync waits longer.
const TIMEOUT: Duration = Duration::from_secs(10);

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

/// One base URL and one key.
#[derive(Clone)]
pub struct ServiceApi {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    metrics: Metrics,
}

impl ServiceApi {
    pub fn new(http: reqwest::Client, base: String, key: Option<String>, metrics: Metrics) -> Self {
        Self {
            http,
            base,
            key,
            metrics,
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
    /// an error carrying the service's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |reason: String| CallError::Unreachable {
            method: method.clone(),
            path: path.to_string(),
            reason,
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                self.metrics.link_request(method.as_str(), "error");
                return Err(unreachable(error_chain(&error)));
            }
        };
        let status = response.status();
        self.metrics.link_request(method.as_str(), status.as_str());
        let text = response
            .text()
            .await
            .map_err(|error| unreachable(error_chain(&error)))?;
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
