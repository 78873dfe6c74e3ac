//! Who is calling the management API (`/users*`, `/urls*`, `/events*`,
//! `/shorten`, `/keys*`), and what they may do.
//!
//! In `api-key` mode a request needs `Authorization: Bearer <key>`: either
//! `ADMIN_API_KEY` (compared in constant time with the hash kept in
//! memory) or a key issued by `shortener keys create` or `POST /keys`
//! (looked up by its SHA-256; see [`crate::keys`]). Accepted keys are
//! remembered for `KEY_TRUST_SECS` (5 s). A revocation empties that memory
//! on the replica that made it and, through a Redis channel, on every other
//! one; without Redis (or while it is away) the others follow within
//! `KEY_TRUST_SECS`.
//!
//! The middleware puts a [`Caller`] on the request; handlers take it as an
//! extractor and ask it what the key may do: read-only keys are refused any
//! change here, centrally; everything about ownership is decided by the
//! handler, which knows whose data it touches.

use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::config::AuthMode;
use crate::keys::{Revocations, Trust, sha256_hex};
use crate::limits::{Class, Subject};
use crate::store::{Actor, ApiKey, DynStore, KeyScope, StoreResult};

pub struct Auth {
    mode: AuthMode,
    bootstrap: Option<Bootstrap>,
    store: DynStore,
    trust: Trust,
}

/// `ADMIN_API_KEY`: its hash (as [`sha256_hex`] writes it), and the id of
/// the row that names it in events.
struct Bootstrap {
    hash: String,
    key_id: i64,
}

impl Auth {
    /// With `admin_key`, makes sure a row names it (for event attribution);
    /// with `revocations`, follows the other replicas' revocations.
    pub async fn new(
        mode: AuthMode,
        admin_key: Option<&str>,
        store: DynStore,
        trust: Duration,
        revocations: Option<Revocations>,
    ) -> StoreResult<Self> {
        let bootstrap = match admin_key.map(sha256_hex) {
            Some(hash) => Some(Bootstrap {
                key_id: store.bootstrap_api_key(&hash, "ADMIN_API_KEY").await?,
                hash,
            }),
            None => None,
        };
        Ok(Self {
            mode,
            bootstrap,
            store,
            trust: Trust::new(trust, revocations),
        })
    }

    /// The caller, when it is known without asking the database: open
    /// mode, `ADMIN_API_KEY`, or a key accepted within `KEY_TRUST_SECS`.
    /// `hash`: the presented key's, by [`sha256_hex`].
    pub async fn known(&self, hash: Option<&str>) -> Option<Caller> {
        if self.mode == AuthMode::Open {
            return Some(Caller::OPEN);
        }
        let hash = hash?;
        if let Some(bootstrap) = &self.bootstrap
            && bool::from(bootstrap.hash.as_bytes().ct_eq(hash.as_bytes()))
        {
            return Some(Caller {
                key_id: Some(bootstrap.key_id),
                scope: KeyScope::Admin,
                user_id: None,
            });
        }
        let key = self.trust.get(hash).await?;
        // Remembered while live; an expiry may fall within KEY_TRUST_SECS.
        key.is_live(crate::domain::now()).then(|| Caller::of(&key))
    }

    /// Looks the key with this hash up (recording its use): the caller it
    /// makes, or 401.
    pub async fn look_up(&self, hash: Option<String>) -> ApiResult<Caller> {
        let hash = hash.ok_or(ApiError::Unauthorized)?;
        let key = self
            .store
            .use_api_key(&hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let caller = Caller::of(&key);
        self.trust.accept(hash, key).await;
        Ok(caller)
    }

    /// After keys were revoked in the store (`DELETE /keys/{id}`, or with
    /// their user by `DELETE /users/{id}`): this replica and the others
    /// stop taking them on trust ([`Trust::revoked`]).
    pub async fn revoked(&self, key_ids: &[i64]) {
        self.trust.revoked(key_ids).await;
    }
}

/// The key behind a request, as far as access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// `None` in `AUTH_MODE=open`.
    pub key_id: Option<i64>,
    pub scope: KeyScope,
    /// The one user a bound key may see.
    pub user_id: Option<i64>,
}

impl Caller {
    fn of(key: &ApiKey) -> Self {
        Self {
            key_id: Some(key.id),
            scope: key.scope,
            user_id: key.user_id,
        }
    }

    /// `AUTH_MODE=open`: anyone may do anything, as no one.
    pub const OPEN: Self = Self {
        key_id: None,
        scope: KeyScope::Admin,
        user_id: None,
    };

    /// Who to record on the events a change writes.
    pub fn actor(&self) -> Actor {
        Actor {
            key_id: self.key_id,
        }
    }

    /// 403 unless this is an admin key.
    pub fn require_admin(&self) -> ApiResult<()> {
        match self.scope {
            KeyScope::Admin => Ok(()),
            _ => Err(ApiError::Forbidden("this needs an admin key".into())),
        }
    }

    /// The user this key is bound to, if it is.
    pub fn bound_user(&self) -> Option<i64> {
        self.user_id
    }

    /// 403 unless the key may see data owned by `owner`.
    pub fn may_see(&self, owner: Option<i64>) -> ApiResult<()> {
        match self.user_id {
            Some(bound) if owner != Some(bound) => Err(ApiError::Forbidden(
                "this key may only use its own user's data".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The `user_id` a list must be filtered by: what was asked for, or the
    /// bound user; 403 when a bound key asks for someone else's.
    pub fn user_filter(&self, asked: Option<i64>) -> ApiResult<Option<i64>> {
        match (self.user_id, asked) {
            (None, asked) => Ok(asked),
            (Some(bound), None) => Ok(Some(bound)),
            (Some(bound), Some(asked)) => {
                self.may_see(Some(asked))?;
                Ok(Some(bound))
            }
        }
    }
}

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
    let caller = match state.auth.known(hash.as_deref()).await {
        Some(caller) => caller,
        None => {
            let client = Subject::Client(state.proxies.client_of(&req));
            let decision = state.rate_limit.check(Class::Management, &client).await;
            if let Some(refused) = super::error::rejection(&decision) {
                return refused;
            }
            match state.auth.look_up(hash).await {
                Ok(caller) => caller,
                Err(err) => {
                    let mut refused = err.into_response();
                    decision.set_headers(refused.headers_mut());
                    return refused;
                }
            }
        }
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if caller.scope == KeyScope::ReadOnly && !reads {
        return ApiError::Forbidden("this key is read-only".into()).into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(scope: KeyScope, user: i64) -> Caller {
        Caller {
            key_id: Some(1),
            scope,
            user_id: Some(user),
        }
    }

    #[test]
    fn a_bound_key_sees_only_its_user() {
        let caller = bound(KeyScope::User, 7);
        assert!(caller.may_see(Some(7)).is_ok());
        assert!(caller.may_see(Some(8)).is_err());
        assert!(caller.may_see(None).is_err());
        assert_eq!(caller.user_filter(None).unwrap(), Some(7));
        assert_eq!(caller.user_filter(Some(7)).unwrap(), Some(7));
        assert!(caller.user_filter(Some(8)).is_err());
        assert!(caller.require_admin().is_err());
    }

    #[test]
    fn unbound_keys_see_everything_as_asked() {
        for scope in [KeyScope::Admin, KeyScope::ReadOnly] {
            let caller = Caller {
                key_id: Some(1),
                scope,
                user_id: None,
            };
            assert!(caller.may_see(None).is_ok());
            assert!(caller.may_see(Some(3)).is_ok());
            assert_eq!(caller.user_filter(Some(3)).unwrap(), Some(3));
            assert_eq!(caller.user_filter(None).unwrap(), None);
        }
        assert!(Caller::OPEN.require_admin().is_ok());
        assert_eq!(Caller::OPEN.actor(), Actor::NONE);
    }
}
