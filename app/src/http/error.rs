//! The one error type of the API. Every failure becomes
//! `{"error": "...", "details"?: {field: [messages]}}` with the right status;
//! database errors are logged here and never shown to the client.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::keys::Forbidden;
use crate::store::{Conflict, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, wrong types, invalid values.
    #[error("{message}")]
    BadRequest {
        message: String,
        details: BTreeMap<String, Vec<String>>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The key is valid but may not do this.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The link exists but no longer redirects (expired, used up).
    #[error("{0}")]
    Gone(&'static str),
    /// A protected link, without its password (or with a wrong one).
    #[error("{0}")]
    PasswordNeeded(&'static str),
    #[error("the database is unavailable; retry shortly")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A human-readable message.
    pub error: String,
    /// Messages per offending field, when the error is about fields.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, Vec<String>>,
}

/// Seconds a client should wait before retrying after a 503.
pub(super) const RETRY_AFTER_SECS: &str = "5";

/// `{"error": message}` with `status`: an error that is not about fields.
pub(super) fn error_response(status: StatusCode, message: String) -> Response {
    let body = ErrorBody {
        error: message,
        details: BTreeMap::new(),
    };
    (status, Json(body)).into_response()
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            details: BTreeMap::new(),
        }
    }

    /// A 400 about one field: `"<field>: <problem>"`, also in `details`.
    pub fn invalid_field(field: &str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        Self::BadRequest {
            message: format!("{field}: {problem}"),
            details: BTreeMap::from([(field.to_owned(), vec![problem])]),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Gone(_) => StatusCode::GONE,
            Self::PasswordNeeded(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(entity) => Self::NotFound(format!("{entity} not found")),
            StoreError::Conflict(Conflict::EmailTaken) => {
                Self::Conflict(Conflict::EmailTaken.to_string())
            }
            StoreError::Conflict(Conflict::ShortCodeTaken) => {
                Self::Conflict(Conflict::ShortCodeTaken.to_string())
            }
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Self::Unavailable
            }
            other => {
                tracing::error!(error = %other, "storage error");
                Self::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match self {
            Self::BadRequest { message, details } => ErrorBody {
                error: message,
                details,
            },
            other => ErrorBody {
                error: other.to_string(),
                details: BTreeMap::new(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"shortener\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Marks an error response that is a page for a person's browser, not an
/// API answer: the one HTML error the service makes (a link that is gone,
/// asked for by a browser), which `errors_as_json` leaves as it is.
#[derive(Debug, Clone, Copy)]
pub struct BrowserPage;

/// A parser's verdict on field `name`: its value, or a 400 naming it.
pub fn field<T, E: ToString>(name: &str, parsed: Result<T, E>) -> ApiResult<T> {
    parsed.map_err(|problem| ApiError::invalid_field(name, problem.to_string()))
}
/// The 429 to answer with, when `decision` refuses the request: JSON as
/// every error, with `Retry-After` and the `RateLimit-*` headers.
pub fn rejection(decision: &crate::limits::Decision) -> Option<Response> {
    let retry_after = decision.retry_after_secs()?;
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many requests; retry in {retry_after} s"),
    );
    decision.set_headers(response.headers_mut());
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Decision;

    #[test]
    fn a_refusal_is_a_429_with_the_ietf_headers() {
        let allowed = Decision::unlimited();
        assert!(rejection(&allowed).is_none());
        let limited = Decision::limited_for_tests();
        let response = rejection(&limited).unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["ratelimit-remaining"], "0");
    }
}
