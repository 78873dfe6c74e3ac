use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody, field};
use super::extract::{JsonBody, PathId, QueryParams, listing};
use super::params::{Pagination, UserId, UsersUpload};
use super::state::AppState;
use crate::domain::{Email, parse_username};
use crate::keys::Caller;
use crate::seed::csv::{LineError, MAX_UPLOADED_LINES, read_users};
use crate::store::{Listing, NewUser, User, UserPatch};

/// Largest CSV upload (`POST /users/bulk`).
pub(super) const UPLOAD_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Deserialize, ToSchema)]
pub struct CreateUser {
    username: String,
    email: String,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateUser {
    username: Option<String>,
    email: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkReport {
    /// Users created (same as `imported`, for compatibility).
    count: u64,
    imported: u64,
    /// Lines skipped because the email (or id) already existed.
    duplicates: u64,
    /// Lines that could not be read, with the reason: the first 100.
    errors: Vec<LineError>,
    /// Bad lines beyond those listed in `errors`.
    errors_omitted: u64,
}

/// List live users, oldest first.
#[utoipa::path(get, path = "/users", tag = "users", params(Pagination),
    responses((status = 200, body = [User]),
              (status = 400, body = ErrorBody, description = "A bad page parameter")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<Response> {
    let page = query.page()?;
    let Some(own) = caller.bound_user() else {
        return Ok(listing(state.store.list_users(page).await?));
    };
    // A key bound to a user lists that user alone.
    let user = state.store.get_user(own).await?;
    let on_this_page = page.offset() == 0 && page.after_id.is_none_or(|after| after < user.id);
    Ok(listing(Listing {
        items: on_this_page.then_some(user).into_iter().collect(),
        total: 1,
        estimated: false,
    }))
}

#[utoipa::path(get, path = "/users/{id}", tag = "users", params(UserId),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<User>> {
    caller.may_see(Some(id))?;
    Ok(Json(state.store.get_user(id).await?))
}

#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The email is taken")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    caller.require_admin()?;
    let user = NewUser {
        username: field("username", parse_username(&body.username))?,
        email: field("email", Email::parse(&body.email))?,
    };
    Ok((
        StatusCode::CREATED,
        Json(state.store.create_user(user).await?),
    ))
}

#[utoipa::path(put, path = "/users/{id}", tag = "users", params(UserId), request_body = UpdateUser,
    responses((status = 200, body = User), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The email is taken")))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    JsonBody(body): JsonBody<UpdateUser>,
) -> ApiResult<Json<User>> {
    caller.require_admin()?;
    let patch = UserPatch {
        username: body
            .username
            .map(|u| field("username", parse_username(&u)))
            .transpose()?,
        email: body
            .email
            .map(|e| field("email", Email::parse(&e)))
            .transpose()?,
    };
    if patch.username.is_none() && patch.email.is_none() {
        return Err(ApiError::bad_request(
            "nothing to update: give at least one of username, email",
        ));
    }
    Ok(Json(state.store.update_user(id, patch).await?))
}

/// Soft-deletes the user: they disappear from the API, their email is free
/// again, each of their active URLs is deactivated with a `deleted` event
/// (`reason: owner_deleted`), and their keys are revoked, on every replica
/// as `DELETE /keys/{id}` revokes one. Nothing is erased.
#[utoipa::path(delete, path = "/users/{id}", tag = "users", params(UserId),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let deletion = state.links.delete_owner(id, caller.actor()).await?;
    // Revoked in the deletion's transaction; now every replica must stop
    // taking them on trust, exactly as after `DELETE /keys/{id}`.
    state.keys.revoked(&deletion.revoked_keys).await;
    tracing::info!(
        user_id = id,
        deactivated_urls = deletion.deactivated.len(),
        revoked_keys = deletion.revoked_keys.len(),
        "user deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Imports a users CSV (`id,username,email,created_at`; `id` and
/// `created_at` optional) sent as multipart field `file`.
#[utoipa::path(post, path = "/users/bulk", tag = "users",
    request_body(content_type = "multipart/form-data", content = UsersUpload,
        description = "field `file`: a users CSV"),
    responses((status = 201, body = BulkReport),
              (status = 400, body = ErrorBody, description = "No `file` field, or a file without the username and email columns")))]
pub async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let file = super::extract::csv_upload(form, UPLOAD_LIMIT).await?;
    // Up to 16 MiB of CSV: parsed on a blocking thread, not a runtime worker.
    let parsed = tokio::task::spawn_blocking(move || read_users(file.as_ref(), MAX_UPLOADED_LINES))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "CSV parser failed");
            ApiError::Internal
        })?
        .map_err(|e| ApiError::invalid_field("file", e))?;
    let outcome = state.store.import_users(parsed.rows).await?;
    let report = BulkReport {
        count: outcome.imported,
        imported: outcome.imported,
        duplicates: outcome.skipped_lines.len() as u64,
        errors: parsed.errors,
        errors_omitted: parsed.errors_omitted,
    };
    Ok((StatusCode::CREATED, Json(report)).into_response())
}
