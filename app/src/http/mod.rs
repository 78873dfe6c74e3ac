//! The HTTP API: one module per resource, one error type, one router.

mod analytics;
mod auth;
mod client;
pub mod error;
mod events;
mod export;
mod extract;
mod health;
mod import;
mod keys;
mod limit;
mod openapi;
mod params;
mod qr;
mod redirect;
pub mod routes;
mod state;
mod urls;
mod users;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use client::TrustedProxies;
pub use openapi::ApiDoc;
pub use state::{AppState, Shared};

use error::ApiError;

use crate::config::{AccessLog, ServeConfig};

/// The whole API. `traces`: give every request a server span (only worth
/// its cost when spans are exported).
///
/// The redirect has a stack of its own, for speed (loadtests/wrk/limit.sh):
/// no span, timer or label lookup per request; its metrics are resolved
/// once, its access log line is written in the same `request` span as the
/// others' but only when it is written, and the request timeout and span
/// wrap the path beyond the in-process cache (see [`redirect::follow`]).
pub fn router(state: AppState, config: &ServeConfig, traces: bool) -> Router {
    let request_timeout = config.request_timeout_secs;
    let request_id = HeaderName::from_static(REQUEST_ID);
    let api = Router::new()
        .merge(routes::management(&state))
        .route("/health", get(health::health))
        .route("/livez", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inner to outer: everything a layer produces passes through the
        // layers listed after it, so a timeout or a panic still becomes a
        // JSON error, and still counts in the metrics.
        .layer(axum::extract::DefaultBodyLimit::max(extract::MAX_JSON_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            request_timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_as_json))
        .layer(middleware::from_fn(errors_as_json))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(access_log(config.access_log)),
        );
    let redirect = Router::new()
        .route(
            routes::REDIRECT,
            get(redirect::follow).post(redirect::unlock).layer(
                // The password form: one short field.
                axum::extract::DefaultBodyLimit::max(redirect::UNLOCK_BODY_LIMIT),
            ),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_as_json))
        .layer(middleware::from_fn(errors_as_json))
        .layer(middleware::from_fn_with_state(
            RedirectObserver {
                metrics: state.metrics.clone(),
                access_log: config.access_log,
            },
            observe_redirect,
        ));
    let router = api.merge(redirect);
    let router = if traces {
        router.layer(middleware::from_fn(server_span))
    } else {
        router
    };
    router
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeSequentialId::new()))
        .with_state(state)
}

/// The header that carries a request's id, given or made here.
const REQUEST_ID: &str = "x-request-id";

/// The request's id, as `SetRequestId` left it.
fn request_id(req: &Request) -> &str {
    id_text(req.headers().get(REQUEST_ID))
}

/// A request id header as text (`-` when missing or not text).
fn id_text(value: Option<&axum::http::HeaderValue>) -> &str {
    value.and_then(|v| v.to_str().ok()).unwrap_or("-")
}

/// A panic in a handler is a 500 with the JSON error body.
fn panic_as_json(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal.into_response()
}

/// Every log line inside a request carries its id, method and path.
fn request_span(req: &Request) -> tracing::Span {
    span_of(request_id(req), req.method(), req.uri().path())
}

fn span_of(id: &str, method: &axum::http::Method, path: &str) -> tracing::Span {
    tracing::info_span!("request", request_id = %id, method = %method, path = %path)
}

/// Routes machines call every few seconds (probes, scrapes): no traces.
const UNTRACED_ROUTES: [&str; 3] = ["/livez", "/readyz", "/metrics"];

/// The request as a trace sees it: an OpenTelemetry server span with the
/// HTTP semantic-convention attributes, a child of the caller's span when
/// the request carries a W3C `traceparent`. Store and cache spans opened
/// while it runs are its children. Kept apart from the `request` span of
/// the logs, whose fields stay as they are.
async fn server_span(req: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map(MatchedPath::as_str);
    if route.is_some_and(|r| UNTRACED_ROUTES.contains(&r)) {
        return next.run(req).await;
    }
    let method = method_label(req.method());
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let request_id = request_id(&req);
    let span = tracing::info_span!(
        target: crate::telemetry::TRACE_TARGET,
        "http.server",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
    );
    if let Err(err) = span.set_parent(crate::telemetry::remote_context(req.headers())) {
        tracing::debug!(error = %err, "request span not linked to the caller's trace");
    }
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    // Semantic conventions: only 5xx is a server span error.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// Ids for requests that arrive without an `X-Request-Id`: a random prefix
/// drawn once per process, then a counter (`3f9a1c07-42`). Unique per
/// replica like a UUID, without a random draw (a `getrandom` system call)
/// on every request.
#[derive(Clone)]
struct MakeSequentialId {
    prefix: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl MakeSequentialId {
    fn new() -> Self {
        Self {
            prefix: format!("{:08x}", rand::random::<u32>()).into(),
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for MakeSequentialId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{n}", self.prefix);
        axum::http::HeaderValue::try_from(id)
            .ok()
            .map(RequestId::new)
    }
}

/// Requests slower than this are logged even when only errors are.
const SLOW_REQUEST: Duration = Duration::from_secs(1);

/// The access log line at the end of a request, per [`AccessLog`].
fn access_log(mode: AccessLog) -> impl Fn(&Response, Duration, &tracing::Span) + Clone {
    move |response: &Response, latency: Duration, _: &tracing::Span| {
        if logged(mode, response.status(), latency) {
            served(response.status(), latency);
        }
    }
}

/// Whether a request's access log line is written.
fn logged(mode: AccessLog, status: StatusCode, latency: Duration) -> bool {
    match mode {
        AccessLog::All => true,
        AccessLog::Errors => {
            status.is_server_error() || status.is_client_error() || latency >= SLOW_REQUEST
        }
        AccessLog::Off => false,
    }
}

fn served(status: StatusCode, latency: Duration) {
    tracing::info!(
        status = status.as_u16(),
        latency_us = latency.as_micros() as u64,
        "request served"
    );
}

/// What the redirect's own stack needs: its metrics and the access log mode.
#[derive(Clone)]
struct RedirectObserver {
    metrics: Arc<crate::metrics::Metrics>,
    access_log: AccessLog,
}

/// The redirect's RED metrics and access log line, as [`record_metrics`] and the trace
/// layer write them for the other routes, without their per-request costs: the series are
/// resolved once, and the `request` span is made only for a line that is written.
async fn observe_redirect(
    State(observer): State<RedirectObserver>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    // Cheap clones (shared bytes), kept for a log line that is rarely written.
    let uri = req.uri().clone();
    let id = req.headers().get(REQUEST_ID).cloned();
    let response = next.run(req).await;
    let latency = started.elapsed();
    let status = response.status();
    observer
        .metrics
        .redirect
        .answered(method_label(&method), status, latency);
    if logged(observer.access_log, status, latency) {
        span_of(id_text(id.as_ref()), &method, uri.path()).in_scope(|| served(status, latency));
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound("not found".into())
}

async fn method_not_allowed() -> Response {
    error::error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.render().map_err(|e| {
        tracing::error!(error = %e, "could not render metrics");
        ApiError::Internal
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// RED metrics per route template and status.
async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Cheap clones (an Arc'd route template, a Method): no string is
    // allocated per request on the redirect path.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.http_duration
        .with_label_values(&[method, route])
        .observe(started.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[method, route, response.status().as_str()])
        .inc();
    response
}

/// The method as a metric label or span name: the standard methods, and
/// `_OTHER` (OpenTelemetry's name) for any other token a client sends, so
/// that made-up methods cannot grow the label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "_OTHER",
    }
}

/// The last line of defence for the "every error is JSON" promise: an error
/// response produced outside our handlers (a framework rejection, a timeout)
/// gets a JSON body.
async fn errors_as_json(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let is_page = response.extensions().get::<error::BrowserPage>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || is_json || is_page {
        return response;
    }
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut replaced = error::error_response(status, message);
    for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE, header::ALLOW] {
        if let Some(value) = response.headers().get(&name) {
            replaced.headers_mut().insert(name, value.clone());
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE
        && !replaced.headers().contains_key(header::RETRY_AFTER)
    {
        replaced.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from_static(error::RETRY_AFTER_SECS),
        );
    }
    replaced
}
