use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::error::{ApiError, ApiResult, BrowserPage, ErrorBody};
use super::state::AppState;
use crate::clicks::Visit;
use crate::domain::{Gone, RedirectType, ShortCode, now};
use crate::links::{Local, Resolved, Source};
use crate::store::{Click, RedirectTarget};

/// Follows a short code: 302 to the original URL, recording a `redirect`
/// event. Unknown and inactive codes are 404 and record nothing. `HEAD`
/// answers the same but records nothing: link checkers are not visitors.
///
/// A client that was answered too many 404s after lookups beyond the
/// in-process cache (a scan for codes) gets 429 instead of further such
/// lookups for a while; links in the in-process cache always redirect, and
/// their path never touches the rate limiter.
#[utoipa::path(get, path = "/{short_code}", tag = "redirect",
    params(("short_code" = String, Path, description = "The link's code")),
    responses((status = 302, description = "To the original URL", headers(
                  ("Location" = String, description = "The original URL"),
                  ("X-Cache" = String, description = "`HIT` (answered from a cache), `MISS` (from the database) or `STALE` (this replica's last copy: neither Redis nor the database could answer)"))),
              (status = 404, body = ErrorBody, description = "No active link with this code",
                  headers(("X-Cache" = String, description = "`HIT`, `MISS` or `STALE`")))))]
pub async fn follow(
    State(state): State<AppState>,
    Path(code): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let method = req.method().clone();
    // A path no link can have is not looked up (nor cached as missing).
    let resolved = if ShortCode::could_be(&code) {
        match state.links.resolve_local(&code).await {
            Local::Resolved(resolved) => resolved,
            Local::Beyond(beyond) => {
                // Beyond this replica's cache (Redis, the database): bounded by the request
                // timeout and logged in the request's span, as every other route is. The
                // in-process hit needs neither (its only wait, the click's, has bounds of
                // its own) and pays for neither.
                let client = state.proxies.client_of(&req);
                let lookup = async {
                    let refusal = state.rate_limit.refuse_miss(client).await;
                    if let Some(refused) = refusal.as_ref().and_then(super::error::rejection) {
                        return Ok(Err(refused));
                    }
                    let resolved = state.links.resolve_beyond(&code, beyond).await?;
                    if resolved.target.is_none() {
                        state.rate_limit.record_miss(client).await;
                    }
                    Ok::<_, ApiError>(Ok(resolved))
                };
                let lookup = lookup.instrument(super::request_span(&req));
                match tokio::time::timeout(state.request_timeout, lookup).await {
                    Ok(Ok(Ok(resolved))) => resolved,
                    Ok(Ok(Err(refused))) => return Ok(refused),
                    Ok(Err(error)) => return Err(error),
                    // As the other routes' timeout answers (made JSON by `errors_as_json`).
                    Err(_) => return Ok(StatusCode::SERVICE_UNAVAILABLE.into_response()),
                }
            }
        }
    } else {
        Resolved {
            target: None,
            source: Source::Local,
        }
    };
    let x_cache = HeaderValue::from_static(resolved.source.x_cache());
    let Some(target) = resolved.target else {
        state.metrics.redirect.not_found.inc();
        let mut response =
            ApiError::NotFound("no active link with this short code".into()).into_response();
        response.headers_mut().insert(X_CACHE, x_cache);
        return Ok(response);
    };
    let at = now();
    if let Some(gone) = target.policy.as_ref().and_then(|p| p.gone_at(at)) {
        return gone_response(&state, &target, gone, &req, x_cache);
    }
    let location = header_value(&target, &target.original_url)?;
    // HEAD is not a visit (link checkers, unfurlers): answer, record nothing.
    if method != Method::HEAD {
        let click = Click {
            url_id: target.url_id,
            user_id: target.user_id,
            short_code: code,
            at,
        };
        if target.is_capped() {
            // The visit is taken in the database before it is answered: exact across
            // replicas, whatever their caches hold.
            match state.clicks.record_capped(click).await {
                Visit::Recorded => {}
                Visit::CapReached => {
                    if let Some(policy) = &target.policy {
                        policy.mark_used_up();
                    }
                    return gone_response(&state, &target, Gone::UsedUp, &req, x_cache);
                }
                Visit::Unavailable => return Err(ApiError::Unavailable),
            }
        } else {
            // Returns once the click is kept; a lost one is logged and counted
            // by the recorder. The visitor gets their redirect either way.
            state.clicks.record(click).await;
        }
    }
    state.metrics.redirect.found.inc();
    Ok(redirect_to(target.redirect_type(), location, x_cache))
}

/// The redirect to `location`. Never cacheable (`no-store`, whatever the status: a browser or
/// CDN that kept even a 301 would hide the clicks after the first, and miss every later
/// change of the link).
fn redirect_to(kind: RedirectType, location: HeaderValue, x_cache: HeaderValue) -> Response {
    // Every redirect type is a valid status.
    let status = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::FOUND);
    (
        status,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (X_CACHE, x_cache),
        ],
    )
        .into_response()
}

fn header_value(target: &RedirectTarget, url: &str) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(url).map_err(|_| {
        tracing::error!(
            url_id = target.url_id,
            "stored URL is not a valid header value"
        );
        ApiError::Internal
    })
}

/// A link that exists but no longer redirects to its target: to its fallback URL when it
/// has one (recording nothing: the visit is not the link's), else 410, as a small page for
/// a browser and as the API's JSON error for anything else.
fn gone_response(
    state: &AppState,
    target: &RedirectTarget,
    gone: Gone,
    req: &Request,
    x_cache: HeaderValue,
) -> ApiResult<Response> {
    state.metrics.redirect.gone.inc();
    let policy = target.policy.as_deref();
    if let Some(fallback) = policy.and_then(|p| p.fallback_url.as_deref()) {
        let location = header_value(target, fallback)?;
        return Ok(redirect_to(target.redirect_type(), location, x_cache));
    }
    let wants_page = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let mut response = if wants_page {
        let page = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>Link unavailable</title></head>\n<body><h1>Link unavailable</h1>\
             <p>{}.</p></body></html>\n",
            gone.message()
        );
        let mut page = (
            StatusCode::GONE,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            page,
        )
            .into_response();
        page.extensions_mut().insert(BrowserPage);
        page
    } else {
        ApiError::Gone(gone.message()).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CACHE, x_cache);
    Ok(response)
}

/// `HIT` when the lookup was answered by a cache, `MISS` when it went to the
/// database, `STALE` when neither Redis nor the database could answer and
/// this replica's last copy did ([`Source::x_cache`]).
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
