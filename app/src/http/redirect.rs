use std::ops::ControlFlow;

use axum::Form;
use axum::extract::{FromRequest as _, Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::error::{ApiError, ApiResult, BrowserPage, ErrorBody};
use super::state::AppState;
use crate::clicks::Visit;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::{Asked, Gone, PasswordHashed, ShortCode, forward_query, now};
use crate::limits::{Class, Subject};
use crate::links::{Local, Resolved, Source};
use crate::store::{Click, RedirectTarget};

/// The link the handler's `code` names (`Resolved`), or returns the answer already given
/// (429 to a client scanning for codes, 503 past the request timeout). A macro, not a
/// function: the request is borrowed only between awaits (its body is not `Sync`), and the
/// client address and span are made only past the in-process cache.
macro_rules! resolve {
    ($state:ident, $code:ident, $req:ident) => {
        if !ShortCode::could_be(&$code) {
            // A path no link can have is not looked up (nor cached as missing).
            Resolved {
                target: None,
                source: Source::Local,
            }
        } else {
            match $state.links.resolve_local(&$code).await {
                Local::Resolved(resolved) => resolved,
                Local::Beyond(beyond) => {
                    let client = $state.proxies.client_of(&$req);
                    let span = super::request_span(&$req);
                    match resolve_beyond(&$state, &$code, beyond, client, span).await {
                        Ok(resolved) => resolved,
                        Err(answered) => return answered,
                    }
                }
            }
        }
    };
}

/// Follows a short code: 302 to the original URL, recording a `redirect`
/// event. Unknown and inactive codes are 404 and record nothing. `HEAD`, and
/// `GET` from a known bot (crawlers, link previewers), answers the same but
/// records a `bot_visit` event: not a click (unless `COUNT_BOTS`).
///
/// A client that was answered too many 404s after lookups beyond the
/// in-process cache (a scan for codes) gets 429 instead of further such
/// lookups for a while; links in the in-process cache always redirect, and
/// their path never touches the rate limiter.
///
/// A link's policy may make it redirect with another status, answer 410 (or redirect to its
/// fallback) once expired or used up, and ask for a password first (`X-Link-Password`, or
/// the form browsers are shown: [`unlock`]).
#[utoipa::path(get, path = "/{short_code}", tag = "redirect",
    params(("short_code" = String, Path, description = "The link's code"),
           ("X-Link-Password" = Option<String>, Header, description = "A protected link's password")),
    responses((status = 302, description = "To the original URL (or to the fallback URL of an expired or used-up link), with the link's `redirect_type`: 302 unless it says 301, 307 or 308", headers(
                  ("Location" = String, description = "The original URL"),
                  ("X-Cache" = String, description = "`HIT` (answered from a cache), `MISS` (from the database) or `STALE` (this replica's last copy: neither Redis nor the database could answer)"))),
              (status = 301, description = "As 302, for a link whose `redirect_type` is 301"),
              (status = 307, description = "As 302, for a link whose `redirect_type` is 307"),
              (status = 308, description = "As 302, for a link whose `redirect_type` is 308"),
              (status = 401, body = ErrorBody, description = "A protected link without its password, or with a wrong one (a form for browsers)",
                  headers(("WWW-Authenticate" = String, description = "`Link-Password realm=\"link\"`"))),
              (status = 404, body = ErrorBody, description = "No active link with this code",
                  headers(("X-Cache" = String, description = "`HIT`, `MISS` or `STALE`"))),
              (status = 410, body = ErrorBody, description = "The link expired or is used up, and has no fallback URL (a page for browsers)"),
              (status = 429, body = ErrorBody, description = "Too many 404s after lookups beyond the cache from this client, or too many wrong passwords for this link",
                  headers(("Retry-After" = String, description = "Seconds to wait")))))]
pub async fn follow(
    State(state): State<AppState>,
    Path(code): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let resolved = resolve!(state, code, req);
    let Live {
        target,
        at,
        x_cache,
    } = match live(&state, resolved, wants_page(&req), None) {
        ControlFlow::Continue(live) => live,
        ControlFlow::Break(answered) => return Ok(answered),
    };
    if let Some(password) = target.policy.as_ref().and_then(|p| p.password.as_ref()) {
        // API clients send the password in a header; browsers get the form, which posts
        // it to `unlock`.
        let given = req
            .headers()
            .get(LINK_PASSWORD)
            .map(|given| String::from_utf8_lossy(given.as_bytes()).into_owned());
        let client = state.proxies.client_of(&req);
        let locked = Locked {
            target: &target,
            wants_page: wants_page(&req),
            x_cache: &x_cache,
        };
        if let Some(refused) = locked.check(&state, password, client, given).await? {
            return Ok(refused);
        }
    }
    let location = location(&target, &asked(&req))?;
    let visitor = visitor(&state, &req);
    answer(
        &state,
        target,
        code,
        at,
        visitor,
        location,
        None,
        wants_page(&req),
        x_cache,
    )
    .await
}

/// Gives a protected link's password from the form browsers are shown: `POST /{short_code}`
/// with `password=…` (`application/x-www-form-urlencoded`). The right one is a visit,
/// answered **303** to the target (so the browser follows it with a `GET`); a wrong one is
/// the form again (401); too many wrong ones from one client for one link are 429. A link
/// without a password just redirects (303).
#[utoipa::path(post, path = "/{short_code}", tag = "redirect",
    params(("short_code" = String, Path, description = "The link's code")),
    request_body(content = UnlockForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "The password is right: to the original URL", headers(
                  ("Location" = String, description = "The original URL"))),
              (status = 400, body = ErrorBody, description = "The body is not the form"),
              (status = 401, body = ErrorBody, description = "Wrong password (a page for browsers)",
                  headers(("WWW-Authenticate" = String, description = "`Link-Password realm=\"link\"`"))),
              (status = 404, body = ErrorBody, description = "No active link with this code"),
              (status = 410, body = ErrorBody, description = "The link expired or is used up (a 303 to its fallback URL when it has one)"),
              (status = 429, body = ErrorBody, description = "Too many wrong passwords for this link from this client",
                  headers(("Retry-After" = String, description = "Seconds to wait")))))]
pub async fn unlock(
    State(state): State<AppState>,
    Path(code): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let resolved = resolve!(state, code, req);
    // The form first: a body that is not one is 400 whatever the link's state.
    let (parts, body) = req.into_parts();
    let Form(form) =
        Form::<UnlockForm>::from_request(Request::from_parts(parts.clone(), body), &state)
            .await
            .map_err(|rejection| {
                ApiError::bad_request(format!("not the password form: {rejection}"))
            })?;
    let req = Request::from_parts(parts, axum::body::Body::empty());
    let wants_page = wants_page(&req);
    let Live {
        target,
        at,
        x_cache,
    } = match live(&state, resolved, wants_page, Some(StatusCode::SEE_OTHER)) {
        ControlFlow::Continue(live) => live,
        ControlFlow::Break(answered) => return Ok(answered),
    };
    let client = state.proxies.client_of(&req);
    let location = location(&target, &asked(&req))?;
    let visitor = visitor(&state, &req);
    if let Some(password) = target.policy.as_ref().and_then(|p| p.password.as_ref()) {
        let locked = Locked {
            target: &target,
            wants_page,
            x_cache: &x_cache,
        };
        if let Some(refused) = locked
            .check(&state, password, client, Some(form.password))
            .await?
        {
            return Ok(refused);
        }
    }
    answer(
        &state,
        target,
        code,
        at,
        visitor,
        location,
        Some(StatusCode::SEE_OTHER),
        wants_page,
        x_cache,
    )
    .await
}

/// The form a protected link's page posts.
#[derive(Deserialize, ToSchema)]
pub struct UnlockForm {
    /// The link's password.
    password: String,
}

/// The largest password form accepted (the password is at most 128 characters).
pub const UNLOCK_BODY_LIMIT: usize = 4096;

/// The header API clients give a protected link's password in.
pub const LINK_PASSWORD: HeaderName = HeaderName::from_static("x-link-password");

/// The link `code` names, as Redis or the database know it (past this replica's cache); or
/// the answer already given (429 to a client scanning for codes, 503 past the request
/// timeout). Bounded by the request timeout and logged in the request's `span`, as every
/// other route is. The in-process hit needs neither (its only wait, the click's, has bounds
/// of its own) and pays for neither.
async fn resolve_beyond(
    state: &AppState,
    code: &str,
    beyond: crate::links::Beyond,
    client: std::net::IpAddr,
    span: tracing::Span,
) -> Result<Resolved, ApiResult<Response>> {
    let lookup = async {
        let refusal = state.rate_limit.refuse_miss(client).await;
        if let Some(refused) = refusal.as_ref().and_then(super::error::rejection) {
            return Ok(Err(refused));
        }
        let resolved = state.links.resolve_beyond(code, beyond).await?;
        if resolved.target.is_none() {
            state.rate_limit.record_miss(client).await;
        }
        Ok::<_, ApiError>(Ok(resolved))
    };
    match tokio::time::timeout(state.request_timeout, lookup.instrument(span)).await {
        Ok(Ok(Ok(resolved))) => Ok(resolved),
        Ok(Ok(Err(refused))) => Err(Ok(refused)),
        Ok(Err(error)) => Err(Err(error)),
        // As the other routes' timeout answers (made JSON by `errors_as_json`).
        Err(_) => Err(Ok(StatusCode::SERVICE_UNAVAILABLE.into_response())),
    }
}

/// A link that redirects now, with what its answer needs.
struct Live {
    target: std::sync::Arc<RedirectTarget>,
    at: crate::domain::Timestamp,
    x_cache: HeaderValue,
}

/// The link `resolved` found, if it redirects now; else the answer already given: 404 when
/// there is none, 410 (or the fallback's redirect, with `status` instead of the link's own)
/// when it expired or is used up.
fn live(
    state: &AppState,
    resolved: Resolved,
    wants_page: bool,
    status: Option<StatusCode>,
) -> ControlFlow<Response, Live> {
    let x_cache = HeaderValue::from_static(resolved.source.x_cache());
    let Some(target) = resolved.target else {
        return ControlFlow::Break(not_found(state, x_cache));
    };
    let at = now();
    if let Some(gone) = target.policy.as_ref().and_then(|p| p.gone_at(at)) {
        return ControlFlow::Break(
            gone_response(state, &target, gone, wants_page, status, x_cache).into_response(),
        );
    }
    ControlFlow::Continue(Live {
        target,
        at,
        x_cache,
    })
}

fn not_found(state: &AppState, x_cache: HeaderValue) -> Response {
    state.metrics.redirect.not_found.inc();
    let mut response =
        ApiError::NotFound("no active link with this short code".into()).into_response();
    response.headers_mut().insert(X_CACHE, x_cache);
    response
}

/// The redirect to `location` (`target`'s, for this visitor), recorded before it is
/// answered: a click, taken from the link's cap first when it has one, or a bot's visit,
/// which takes nothing from the cap. `status` instead of the link's own.
#[allow(
    clippy::too_many_arguments,
    reason = "one call per route, each naming them all"
)]
async fn answer(
    state: &AppState,
    target: std::sync::Arc<RedirectTarget>,
    code: String,
    at: crate::domain::Timestamp,
    visitor: Visitor,
    location: HeaderValue,
    status: Option<StatusCode>,
    wants_page: bool,
    x_cache: HeaderValue,
) -> ApiResult<Response> {
    let bot = visitor.bot;
    let click = Click {
        url_id: target.url_id,
        user_id: target.user_id,
        short_code: code,
        at,
        bot,
        agent: visitor.agent,
        referrer: visitor.referrer,
        visitor: visitor.visitor,
    };
    if target.is_capped() && !bot {
        // The visit is taken in the database before it is answered: exact across
        // replicas, whatever their caches hold.
        match state.clicks.record_capped(click).await {
            Visit::Recorded => {}
            Visit::CapReached => {
                if let Some(policy) = &target.policy {
                    policy.mark_used_up();
                }
                return gone_response(state, &target, Gone::UsedUp, wants_page, status, x_cache);
            }
            Visit::Unavailable => return Err(ApiError::Unavailable),
        }
    } else {
        // Returns once the click is kept; a lost one is logged and counted
        // by the recorder. The visitor gets their redirect either way.
        state.clicks.record(click).await;
    }
    if bot {
        state.metrics.redirect.bot.inc();
    } else {
        state.metrics.redirect.found.inc();
    }
    let status = status.unwrap_or_else(|| {
        // Every redirect type is a valid status.
        StatusCode::from_u16(target.redirect_type().status()).unwrap_or(StatusCode::FOUND)
    });
    Ok(redirect_to(status, location, x_cache))
}

/// A protected link, about to be answered.
struct Locked<'a> {
    target: &'a RedirectTarget,
    wants_page: bool,
    x_cache: &'a HeaderValue,
}

impl Locked<'_> {
    /// `None` when `given` is the link's password; else the answer: the form (or 401 JSON)
    /// when it is missing or wrong, 429 once this client gave this link too many wrong
    /// ones. Only wrong passwords count against the client.
    async fn check(
        &self,
        state: &AppState,
        password: &PasswordHashed,
        client: std::net::IpAddr,
        given: Option<String>,
    ) -> ApiResult<Option<Response>> {
        let Some(given) = given else {
            return Ok(Some(self.refused(state, false)));
        };
        let subject = Subject::ClientAtLink(self.target.url_id, client);
        if let Some(refused) = state.rate_limit.refuse(Class::LinkPassword, &subject).await
            && let Some(mut response) = super::error::rejection(&refused)
        {
            state.metrics.redirect.locked.inc();
            response.headers_mut().insert(X_CACHE, self.x_cache.clone());
            return Ok(Some(response));
        }
        let password = password.clone();
        let check = state.password_task(move || password.matches(&given));
        // Queued behind other checks (a flood of attempts) for longer than any request may
        // take: 503, as the other routes' timeout answers (made JSON by `errors_as_json`).
        let Ok(matches) = tokio::time::timeout(state.request_timeout, check).await else {
            return Ok(Some(StatusCode::SERVICE_UNAVAILABLE.into_response()));
        };
        if matches? {
            return Ok(None);
        }
        state
            .rate_limit
            .record_failure(Class::LinkPassword, subject)
            .await;
        Ok(Some(self.refused(state, true)))
    }

    /// 401: the form for a browser (saying the last password was wrong, when it was), the
    /// API's JSON error for anything else.
    fn refused(&self, state: &AppState, wrong: bool) -> Response {
        state.metrics.redirect.locked.inc();
        let message = if wrong {
            "wrong password for this link"
        } else {
            "this link needs a password: give it in the X-Link-Password header"
        };
        let mut response = if self.wants_page {
            let note = if wrong {
                "<p role=\"alert\">Wrong password.</p>"
            } else {
                ""
            };
            page(
                StatusCode::UNAUTHORIZED,
                "Password needed",
                &format!(
                    "<h1>This link needs a password</h1>{note}\
                     <form method=\"post\"><label>Password \
                     <input type=\"password\" name=\"password\" required autofocus \
                     autocomplete=\"current-password\"></label> \
                     <button type=\"submit\">Continue</button></form>"
                ),
            )
        } else {
            ApiError::PasswordNeeded(message).into_response()
        };
        let headers = response.headers_mut();
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Link-Password realm=\"link\""),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(X_CACHE, self.x_cache.clone());
        response
    }
}

/// Where `target` sends this visitor: the target of the first of its rules `asked` meets,
/// else its `original_url`; with the visitor's query added when the link forwards it. A link
/// with the default policy (most) costs one header value, as it always did.
fn location(target: &RedirectTarget, asked: &Asked<'_>) -> ApiResult<HeaderValue> {
    let Some(policy) = target.policy.as_deref() else {
        return header_value(target, &target.original_url);
    };
    let chosen = policy
        .rules
        .choose(asked)
        .unwrap_or(target.original_url.as_str());
    let forwarded = policy
        .forward_query
        .then(|| forward_query(chosen, asked.query))
        .flatten();
    header_value(target, forwarded.as_deref().unwrap_or(chosen))
}

/// Who is visiting, as the click records it.
struct Visitor {
    /// `HEAD`, or a known bot's `User-Agent`: recorded as a bot's visit, not counted.
    bot: bool,
    /// For the analytics of a click (a bot's visit has none).
    agent: Option<String>,
    referrer: Option<String>,
    visitor: Option<i64>,
}

fn visitor(state: &AppState, req: &Request) -> Visitor {
    let agent = req.headers().get(header::USER_AGENT);
    if state.bots.is_bot_visit(req.method(), agent) {
        return Visitor {
            bot: true,
            agent: None,
            referrer: None,
            visitor: None,
        };
    }
    let text = |value: &HeaderValue| {
        value
            .to_str()
            .ok()
            .filter(|v| !v.is_empty())
            .map(crate::analytics::kept)
    };
    let client = state.proxies.client_of(req);
    Visitor {
        bot: false,
        agent: agent.and_then(text),
        referrer: req.headers().get(header::REFERER).and_then(text),
        visitor: Some(
            state
                .visitors
                .visitor(client, agent.map(HeaderValue::as_bytes)),
        ),
    }
}

/// What of `req` a link's rules may look at.
fn asked(req: &Request) -> Asked<'_> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    Asked {
        user_agent: header(header::USER_AGENT),
        accept_language: header(header::ACCEPT_LANGUAGE),
        query: req.uri().query(),
    }
}

/// Whether the client is a browser (its `Accept` names HTML): it gets pages, not JSON.
fn wants_page(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// A small HTML page with `status`, let through `errors_as_json` as it is.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title></head>\n<body>{body}</body></html>\n"
    );
    let mut page = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page,
    )
        .into_response();
    page.extensions_mut().insert(BrowserPage);
    page
}

/// The redirect to `location`. Never cacheable (`no-store`, whatever the status: a browser or
/// CDN that kept even a 301 would hide the clicks after the first, and miss every later
/// change of the link).
fn redirect_to(status: StatusCode, location: HeaderValue, x_cache: HeaderValue) -> Response {
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
    wants_page: bool,
    status: Option<StatusCode>,
    x_cache: HeaderValue,
) -> ApiResult<Response> {
    state.metrics.redirect.gone.inc();
    let policy = target.policy.as_deref();
    if let Some(fallback) = policy.and_then(|p| p.fallback_url.as_deref()) {
        let location = header_value(target, fallback)?;
        let status = status.unwrap_or_else(|| {
            StatusCode::from_u16(target.redirect_type().status()).unwrap_or(StatusCode::FOUND)
        });
        return Ok(redirect_to(status, location, x_cache));
    }
    let mut response = if wants_page {
        page(
            StatusCode::GONE,
            "Link unavailable",
            &format!("<h1>Link unavailable</h1><p>{}.</p>", gone.message()),
        )
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
