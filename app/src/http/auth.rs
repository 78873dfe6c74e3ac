//! Access to the management API (`/users*`, `/urls*`, `/events*`,
//! `/shorten`). In `api-key` mode a request needs `Authorization: Bearer
//! <key>`; keys are kept only as SHA-256 hashes and compared in constant time.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::config::AuthMode;

pub struct Auth {
    mode: AuthMode,
    admin_key_hash: Option<[u8; 32]>,
}

impl Auth {
    pub fn new(mode: AuthMode, admin_key: Option<&str>) -> Self {
        Self {
            mode,
            admin_key_hash: admin_key.map(hash),
        }
    }

    /// Whether a presented key is the admin key.
    fn accepts(&self, presented: &str) -> bool {
        let presented = hash(presented);
        self.admin_key_hash
            .is_some_and(|expected| bool::from(expected.ct_eq(&presented)))
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.auth.mode == AuthMode::Open {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(key) if state.auth.accepts(key) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_key_is_accepted() {
        let auth = Auth::new(AuthMode::ApiKey, Some("correct-horse-battery"));
        assert!(auth.accepts("correct-horse-battery"));
        assert!(!auth.accepts("correct-horse-batter"));
        assert!(!auth.accepts(""));
    }

    #[test]
    fn without_an_admin_key_nothing_is_accepted() {
        let auth = Auth::new(AuthMode::ApiKey, None);
        assert!(!auth.accepts(""));
        assert!(!auth.accepts("anything-at-all-really"));
    }
}
