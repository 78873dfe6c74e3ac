use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody, field};
use super::extract::{
    JsonBody, PathId, QueryParams, listing, nullable, nullable_whole_number, optional_whole_number,
};
use super::params::{Pagination, UrlFilters, UrlId};
use super::state::AppState;
use crate::domain::{
    PasswordHashed, RedirectType, Rule, Rules, ShortCode, TargetUrl, parse_title, timestamp,
};
use crate::keys::Caller;
use crate::store::{Event, EventFilter, NewUrl, PolicyPatch, Url, UrlFilter, UrlPatch, UrlStats};

#[derive(Deserialize, ToSchema)]
pub struct CreateUrl {
    /// Absolute http(s) URL. `url` is accepted as an alias.
    #[serde(alias = "url")]
    original_url: String,
    title: Option<String>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    user_id: Option<i64>,
    /// A custom code (3–32 of `[A-Za-z0-9_-]`); random when absent.
    short_code: Option<String>,
    /// 301, 302 (the default), 307 or 308.
    #[serde(default, deserialize_with = "nullable_whole_number")]
    #[schema(value_type = Option<i64>, example = 302)]
    redirect_type: Option<Option<i64>>,
    /// From this time on the link answers 410 (or redirects to
    /// `fallback_url`): RFC 3339, or `YYYY-MM-DDTHH:MM:SS` in UTC.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    expires_at: Option<Option<String>>,
    /// After this many visits the link answers 410 (or redirects to
    /// `fallback_url`); exact across replicas.
    #[serde(default, deserialize_with = "nullable_whole_number")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    max_visits: Option<Option<i64>>,
    /// Where an expired or used-up link redirects instead of answering 410.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    fallback_url: Option<Option<String>>,
    /// Visitors must give this password (4–128 characters) before they are redirected;
    /// kept only as its Argon2id hash, never shown. `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 4, max_length = 128)]
    password: Option<Option<String>>,
    /// Rules tried in order: the first whose conditions all hold sends the visitor to its
    /// target instead of `original_url` (at most 16). `null` or `[]` removes them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<Rule>>)]
    rules: Option<Option<Vec<Rule>>>,
    /// Whether the short URL's query is added to the target's (`false` unless set).
    forward_query: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateUrl {
    original_url: Option<String>,
    /// `null` clears the title.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    title: Option<Option<String>>,
    is_active: Option<bool>,
    /// 301, 302 (the default), 307 or 308.
    #[serde(default, deserialize_with = "nullable_whole_number")]
    #[schema(value_type = Option<i64>, example = 302)]
    redirect_type: Option<Option<i64>>,
    /// From this time on the link answers 410 (or redirects to
    /// `fallback_url`): RFC 3339, or `YYYY-MM-DDTHH:MM:SS` in UTC.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    expires_at: Option<Option<String>>,
    /// After this many visits the link answers 410 (or redirects to
    /// `fallback_url`); exact across replicas.
    #[serde(default, deserialize_with = "nullable_whole_number")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    max_visits: Option<Option<i64>>,
    /// Where an expired or used-up link redirects instead of answering 410.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    fallback_url: Option<Option<String>>,
    /// Visitors must give this password (4–128 characters) before they are redirected;
    /// kept only as its Argon2id hash, never shown. `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 4, max_length = 128)]
    password: Option<Option<String>>,
    /// Rules tried in order: the first whose conditions all hold sends the visitor to its
    /// target instead of `original_url` (at most 16). `null` or `[]` removes them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<Rule>>)]
    rules: Option<Option<Vec<Rule>>>,
    /// Whether the short URL's query is added to the target's (`false` unless set).
    forward_query: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
pub struct ShortenRequest {
    url: String,
    short_code: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ShortenedUrl {
    #[serde(flatten)]
    url: Url,
    /// The link to hand out.
    short_url: String,
}

/// A target as the deployment's policy allows it (on creation and on every
/// change alike).
fn target(state: &AppState, name: &str, raw: &str) -> ApiResult<TargetUrl> {
    let target = field(name, TargetUrl::parse(raw))?;
    field(name, state.target_policy.check(&target))?;
    Ok(target)
}

/// A link's policy fields as a create or update body gives them (`Some(None)`: `null`,
/// which clears on a change and is the default on creation).
struct GivenPolicy {
    redirect_type: Option<Option<i64>>,
    expires_at: Option<Option<String>>,
    max_visits: Option<Option<i64>>,
    fallback_url: Option<Option<String>>,
    password: Option<Option<String>>,
    rules: Option<Option<Vec<Rule>>>,
    forward_query: Option<bool>,
}

/// The [`GivenPolicy`] of a body (`CreateUrl`, `UpdateUrl`: the same fields).
macro_rules! given_policy {
    ($body:expr) => {
        GivenPolicy {
            redirect_type: $body.redirect_type,
            expires_at: $body.expires_at,
            max_visits: $body.max_visits,
            fallback_url: $body.fallback_url,
            password: $body.password,
            rules: $body.rules,
            forward_query: $body.forward_query,
        }
    };
}

/// The policy fields, parsed and checked.
async fn policy(state: &AppState, body: GivenPolicy) -> ApiResult<PolicyPatch> {
    let GivenPolicy {
        redirect_type,
        expires_at,
        max_visits,
        fallback_url,
        password,
        rules,
        forward_query,
    } = body;
    /// A field of a change, parsed when given and not `null`.
    fn given<T, U>(
        raw: Option<Option<T>>,
        parse: impl FnOnce(T) -> ApiResult<U>,
    ) -> ApiResult<Option<Option<U>>> {
        raw.map(|value| value.map(parse).transpose()).transpose()
    }
    let redirect_type = given(redirect_type, |status| {
        field("redirect_type", RedirectType::from_status(status))
    })?
    // `null` is the default type.
    .map(Option::unwrap_or_default);
    let expires_at = given(expires_at, |at| {
        field("expires_at", timestamp::parse_instant(&at))
    })?;
    let max_visits = given(max_visits, |max| {
        if max < 1 {
            Err(ApiError::invalid_field("max_visits", "must be at least 1"))
        } else {
            Ok(max)
        }
    })?;
    let fallback_url = given(fallback_url, |url| target(state, "fallback_url", &url))?;
    let rules = rules
        .map(|rules| {
            let check = |_: usize, raw: &str| {
                let target = TargetUrl::parse(raw)?;
                state.target_policy.check(&target)?;
                Ok(target.to_string())
            };
            field("rules", Rules::parse(rules.unwrap_or_default(), check))
        })
        .transpose()?;
    // Hashed last, once everything else is known to be valid (it costs ~20 ms of a core).
    let password = match password {
        None => None,
        Some(None) => Some(None),
        Some(Some(password)) => {
            let hashed = state
                .password_task(move || PasswordHashed::of(&password))
                .await?;
            Some(Some(field("password", hashed)?))
        }
    };
    Ok(PolicyPatch {
        redirect_type,
        expires_at,
        max_visits,
        fallback_url,
        password,
        rules,
        forward_query,
    })
}

/// A title as given (`None`: none), blank being none too.
fn title(raw: Option<String>) -> ApiResult<Option<String>> {
    let title = raw.map(|t| field("title", parse_title(&t))).transpose()?;
    Ok(title.flatten())
}

async fn create_with(
    state: &AppState,
    caller: Caller,
    url: NewUrl,
    code: Option<String>,
) -> ApiResult<Url> {
    let code = code
        .map(|c| field("short_code", ShortCode::parse(&c)))
        .transpose()?;
    Ok(state
        .links
        .create(url, code.as_ref(), caller.actor())
        .await?)
}

/// The URL, when the key may see it (403 otherwise).
pub(super) async fn visible_url(state: &AppState, caller: Caller, id: i64) -> ApiResult<Url> {
    let url = state.store.get_url(id).await?;
    caller.may_see(url.user_id)?;
    Ok(url)
}

#[utoipa::path(get, path = "/urls", tag = "urls", params(Pagination, UrlFilters),
    responses((status = 200, body = [Url]),
              (status = 400, body = ErrorBody, description = "A bad page or filter parameter")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<axum::response::Response> {
    let filter = url_filter(&caller, &query)?;
    Ok(listing(state.store.list_urls(filter, query.page()?).await?))
}

/// The filters of `GET /urls` and `GET /urls/export`, as the caller may apply them.
pub(super) fn url_filter(caller: &Caller, query: &QueryParams) -> ApiResult<UrlFilter> {
    Ok(UrlFilter {
        user_id: caller.user_filter(query.int("user_id")?)?,
        is_active: query.boolean("is_active")?,
        short_code: query.given("short_code").map(str::to_owned),
    })
}

/// Shortens a URL; writes a `created` event.
#[utoipa::path(post, path = "/urls", tag = "urls", request_body = CreateUrl,
    responses((status = 201, body = Url), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "`user_id` names no user"),
              (status = 409, body = ErrorBody, description = "short_code taken")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateUrl>,
) -> ApiResult<(StatusCode, Json<Url>)> {
    let url = NewUrl {
        user_id: caller.user_filter(body.user_id)?,
        original_url: target(&state, "original_url", &body.original_url)?,
        title: title(body.title)?,
        policy: policy(&state, given_policy!(body)).await?,
    };
    Ok((
        StatusCode::CREATED,
        Json(create_with(&state, caller, url, body.short_code).await?),
    ))
}

/// The quick path: `{"url": …}` in, the URL object plus `short_url` out.
#[utoipa::path(post, path = "/shorten", tag = "urls", request_body = ShortenRequest,
    responses((status = 201, body = ShortenedUrl), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "short_code taken")))]
pub async fn shorten(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ShortenRequest>,
) -> ApiResult<(StatusCode, Json<ShortenedUrl>)> {
    let url = NewUrl {
        // A key bound to a user shortens for that user.
        user_id: caller.bound_user(),
        original_url: target(&state, "url", &body.url)?,
        title: None,
        policy: PolicyPatch::default(),
    };
    let created = create_with(&state, caller, url, body.short_code).await?;
    let short_url = short_url(&state, &headers, &created.short_code);
    Ok((
        StatusCode::CREATED,
        Json(ShortenedUrl {
            url: created,
            short_url,
        }),
    ))
}

/// The address a visitor follows for `code`: under `PUBLIC_BASE_URL` when it is set, else
/// under the `Host` the request came to.
pub(super) fn short_url(state: &AppState, headers: &HeaderMap, code: &str) -> String {
    match &state.public_base_url {
        Some(base) => format!("{base}/{code}"),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}/{code}")
        }
    }
}

#[utoipa::path(get, path = "/urls/{id}", tag = "urls", params(UrlId),
    responses((status = 200, body = Url), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<Url>> {
    Ok(Json(visible_url(&state, caller, id).await?))
}

/// Changes any of `original_url`, `title`, `is_active`, `redirect_type`,
/// `expires_at`, `max_visits`, `fallback_url`, `password`, `rules`, `forward_query` (`null`
/// clears the title, `expires_at`, `max_visits`, `fallback_url`, `password` and `rules`);
/// one `updated` event per changed field.
#[utoipa::path(put, path = "/urls/{id}", tag = "urls", params(UrlId), request_body = UpdateUrl,
    responses((status = 200, body = Url), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    JsonBody(body): JsonBody<UpdateUrl>,
) -> ApiResult<Json<Url>> {
    let patch = UrlPatch {
        original_url: body
            .original_url
            .map(|u| target(&state, "original_url", &u))
            .transpose()?,
        title: body.title.map(title).transpose()?,
        is_active: body.is_active,
        policy: policy(&state, given_policy!(body)).await?,
    };
    if patch.is_empty() {
        return Err(ApiError::bad_request(
            "nothing to update: give at least one of original_url, title, is_active, \
             redirect_type, expires_at, max_visits, fallback_url, password, rules, forward_query",
        ));
    }
    // A URL's owner never changes, so checking before the change holds.
    visible_url(&state, caller, id).await?;
    Ok(Json(state.links.update(id, patch, caller.actor()).await?))
}

/// Soft delete: the URL stops redirecting; repeating it changes nothing.
#[utoipa::path(delete, path = "/urls/{id}", tag = "urls", params(UrlId),
    responses((status = 204, description = "Deactivated (or already inactive)"),
              (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    visible_url(&state, caller, id).await?;
    state
        .links
        .deactivate(id, "user_requested", caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/urls/{id}/stats", tag = "urls", params(UrlId),
    responses((status = 200, body = UrlStats), (status = 404, body = ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<Json<UrlStats>> {
    visible_url(&state, caller, id).await?;
    Ok(Json(state.store.url_stats(id).await?))
}

#[utoipa::path(get, path = "/urls/{id}/events", tag = "urls", params(UrlId, Pagination),
    responses((status = 200, body = [Event]),
              (status = 400, body = ErrorBody, description = "A bad page parameter"),
              (status = 404, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    query: QueryParams,
) -> ApiResult<axum::response::Response> {
    let page = query.page()?;
    visible_url(&state, caller, id).await?;
    let filter = EventFilter {
        url_id: Some(id),
        ..EventFilter::default()
    };
    Ok(listing(state.store.list_events(filter, page).await?))
}
