//! `/keys`: issuing, listing and revoking API keys (admin keys only). A
//! key is shown once, in the answer to its creation; afterwards only its
//! prefix.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonBody, PathId, QueryParams, listing};
use super::params::{KeyId, Pagination};
use super::state::AppState;
use crate::keys::{self, Caller, Issued, KeyRequest};
use crate::store::{ApiKey, KeyScope};

#[derive(Deserialize, ToSchema)]
pub struct CreateKey {
    /// What the key is for (1–100 characters), e.g. the team or job.
    name: String,
    /// `admin`, `user` (needs `user_id`) or `read-only`.
    scope: KeyScope,
    /// The user a `user` key (or a bound `read-only` key) is limited to;
    /// refused for `admin`.
    user_id: Option<i64>,
    /// Days until the key stops working; never when absent.
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<u32>,
}

/// Issues a key (admin keys only). The answer is the only time the key is
/// shown.
#[utoipa::path(post, path = "/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = Issued), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody, description = "not an admin key"),
              (status = 404, body = ErrorBody, description = "user_id names no user")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateKey>,
) -> ApiResult<(StatusCode, Json<Issued>)> {
    caller.require_admin()?;
    let request = KeyRequest {
        name: body.name,
        scope: body.scope,
        user_id: body.user_id,
        expires_in_days: body.expires_in_days,
        created_by: caller.key_id,
    };
    request
        .check()
        .map_err(|(field, problem)| ApiError::invalid_field(field, problem))?;
    let issued = keys::issue(state.store.as_ref(), request).await?;
    tracing::info!(key_id = issued.key.id, scope = %issued.key.scope, by = ?caller.key_id, "API key issued");
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Every key, live or not, oldest first (admin keys only).
#[utoipa::path(get, path = "/keys", tag = "keys", params(Pagination),
    responses((status = 200, body = [ApiKey]),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(listing(state.store.list_api_keys(query.page()?).await?))
}

#[utoipa::path(get, path = "/keys/{id}", tag = "keys", params(KeyId),
    responses((status = 200, body = ApiKey), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<ApiKey>> {
    caller.require_admin()?;
    Ok(Json(state.store.get_api_key(id).await?))
}

/// Revokes a key: refused at once by this replica, and by the others as
/// soon as they hear of it through Redis (within `KEY_TRUST_SECS` without). Revoking it again changes nothing. `ADMIN_API_KEY` is not
/// revoked here: change the variable.
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys", params(KeyId),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let key = keys::revoke(state.store.as_ref(), id)
        .await
        .map_err(|err| match err {
            keys::RevokeError::Bootstrap => ApiError::bad_request(err.to_string()),
            keys::RevokeError::Store(err) => err.into(),
        })?;
    state.keys.revoked(&[key.id]).await;
    tracing::info!(key_id = key.id, by = ?caller.key_id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
