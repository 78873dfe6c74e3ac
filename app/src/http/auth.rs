//! The key check of the management API (`/users*`, `/urls*`, `/events*`,
//! `/shorten`, `/keys*`), as middleware and extractor.
//!
//! In `api-key` mode a request needs `Authorization: Bearer <key>`; the
//! check itself (which key, taken on trust or looked up, and what it may
//! do) is [`crate::keys`]'. The middleware puts the [`Caller`] on the
//! request; handlers take it as an extractor and ask it what the key may
//! do: read-only keys are refused any change here, centrally; everything
//! about ownership is decided by the handler, which knows whose data it
//! touches.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::state::AppState;
use crate::keys::{Caller, sha256_hex};
use crate::limits::{Class, Subject};

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> ApiResult<Self> {
        parts.extensions.get::<Caller>().copied().ok_or_else(|| {
            tracing::error!("a management handler was routed without the key check");
            ApiError::Internal
        })
    }
}

/// The bearer token of a request, if it has one.
fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Finds the [`Caller`] and refuses read-only keys any change. A key that
/// must be looked up in the database (unknown to this replica, or wrong)
/// first spends the client address's management allowance, so guessing
/// keys is limited, and costs the database nothing once over the limit;
/// the limit layer inside then counts the request against the key.
pub async fn require_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let hash = bearer(&req).map(sha256_hex);
    let caller = match state.keys.known(hash.as_deref()).await {
        Some(caller) => caller,
        None => {
            let client = Subject::Client(state.proxies.client_of(&req));
            let decision = state.rate_limit.check(Class::Management, &client).await;
            if let Some(refused) = super::error::rejection(&decision) {
                return refused;
            }
            let looked_up = match hash {
                Some(hash) => state.keys.look_up(hash).await.map_err(ApiError::from),
                None => Ok(None),
            };
            match looked_up.and_then(|caller| caller.ok_or(ApiError::Unauthorized)) {
                Ok(caller) => caller,
                Err(err) => {
                    let mut refused = err.into_response();
                    decision.set_headers(refused.headers_mut());
                    return refused;
                }
            }
        }
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        && let Err(refused) = caller.may_change()
    {
        return ApiError::from(refused).into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}
