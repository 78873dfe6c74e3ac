//! Logs and traces.
//!
//! **Logs**: one JSON object per line (or text), with the request's span
//! fields (including `request_id`) on every line logged inside a request.
//!
//! **Traces**: off unless an OTLP endpoint is configured. Then a second layer
//! turns spans into OpenTelemetry spans and a batch processor on the tokio
//! runtime posts them as OTLP/HTTP protobuf. Trace spans (the HTTP server
//! span, one per store call, one per Redis call) use the target
//! [`TRACE_TARGET`], which the log layer never sees: they add nothing to the
//! log lines, and with export off no layer wants them, so `tracing` skips
//! them at the callsite (one cached check, no allocation).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogFormat, TraceSampler, TraceSettings};

/// The target of every span meant for traces only (`target:` in span
/// macros; `#[tracing::instrument]` needs the literal `"shortener::trace"`).
pub const TRACE_TARGET: &str = "shortener::trace";

/// The log filter when `RUST_LOG` is unset.
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";

/// How long shutdown waits for the last spans to be sent.
const FLUSH_PATIENCE: Duration = Duration::from_secs(5);

/// Longest one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest collector answer read (an OTLP answer is a few bytes).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Handle on what [`init`] set up; call [`Telemetry::shutdown`] before exit
/// so that buffered spans are sent.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Are spans being exported?
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still buffered (waits at most a few seconds).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The processor's shutdown blocks until its task on the runtime has
        // exported; block a thread of the blocking pool, not a worker.
        let flush = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(FLUSH_PATIENCE, flush).await {
            Ok(Ok(Ok(()))) => tracing::info!("traces flushed"),
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "could not flush traces"),
            Ok(Err(err)) => tracing::warn!(error = %err, "could not flush traces"),
            Err(_) => tracing::warn!("traces not flushed in time; the last spans are lost"),
        }
    }
}

/// Installs the global subscriber: the log layer, and the trace layer when
/// `traces` names an endpoint. Needs a tokio runtime when exporting.
pub fn init(format: LogFormat, traces: Option<&TraceSettings>) -> anyhow::Result<Telemetry> {
    let provider = traces.map(tracer_provider).transpose()?.flatten();
    if let Err(err) = subscriber(format, provider.as_ref()).try_init() {
        eprintln!("logging was already initialised: {err}");
    }
    Ok(Telemetry { provider })
}

/// The log layer (filtered by `RUST_LOG`, never shown trace spans), plus
/// the trace layer when exporting.
fn subscriber(
    format: LogFormat,
    provider: Option<&SdkTracerProvider>,
) -> Box<dyn Subscriber + Send + Sync> {
    // `RUST_LOG` filters globally, ahead of every layer. As a per-layer
    // filter it lost log lines: a library asking `enabled!` about a
    // callsite it then does not emit (sqlx does, for every query) left the
    // per-layer filter's state set, and the next event on that thread was
    // dropped (on PostgreSQL, "listening" and access-log lines went
    // missing). What the trace layer needs passes the global filter too.
    let mut env_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    if provider.is_some() {
        match format!("{TRACE_TARGET}=debug").parse() {
            Ok(directive) => env_filter = env_filter.add_directive(directive),
            Err(err) => eprintln!("trace spans not exported: {err}"),
        }
    }
    // Only a test of the target: it never disables what a library asks
    // `enabled!` about.
    let log_filter = filter_fn(|meta| meta.target() != TRACE_TARGET);
    let log_layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let logs = tracing_subscriber::registry().with(log_layer.with_filter(log_filter));
    // Not `.with(Option<layer>)`: an absent layer claims interest in every
    // callsite, which turns the trace spans' cached "never" into a filter
    // evaluation on every call (measured: ~400 ns a span instead of ~2 ns).
    match provider {
        Some(provider) => Box::new(
            logs.with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("shortener"))
                    .with_tracked_inactivity(false)
                    .with_threads(false)
                    .with_location(false)
                    .with_filter(
                        filter_fn(wanted_in_traces).with_max_level_hint(LevelFilter::DEBUG),
                    ),
            )
            // Outermost, so that what it refuses reaches no layer's filter.
            .with(env_filter),
        ),
        None => Box::new(logs.with(env_filter)),
    }
}

/// The trace layer's share: the trace-only spans, and warnings and errors
/// (which become events on the span they happen in).
fn wanted_in_traces(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.target() == TRACE_TARGET
    } else {
        *meta.level() <= Level::WARN
    }
}

/// The provider exporting to the configured endpoint, or `None` when no
/// endpoint is configured.
fn tracer_provider(settings: &TraceSettings) -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(url) = settings.traces_url() else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Http1Client::new(EXPORT_TIMEOUT))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .build()
        .with_context(|| format!("OTLP trace exporter for {url}"))?;
    // On the tokio runtime, so the exporter can use the async client; the
    // batch size, delay and queue follow the standard OTEL_BSP_* variables.
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    // The standard resource detectors read OTEL_RESOURCE_ATTRIBUTES (pod
    // name, namespace… through the downward API).
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.otel_service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(
            settings.otel_traces_sampler,
            settings.otel_traces_sampler_arg,
        ))
        .with_resource(resource)
        .build();
    Ok(Some(provider))
}

fn sampler(kind: TraceSampler, ratio: f64) -> Sampler {
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    match kind {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBasedAlwaysOn => parent_based(Sampler::AlwaysOn),
        TraceSampler::ParentBasedAlwaysOff => parent_based(Sampler::AlwaysOff),
        TraceSampler::ParentBasedTraceIdRatio => parent_based(Sampler::TraceIdRatioBased(ratio)),
    }
}

/// The caller's trace context from a W3C `traceparent` (and `tracestate`)
/// header; empty when there is none or it is malformed.
pub fn remote_context(headers: &axum::http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers))
}

/// `db.system.name` for a sqlx driver name.
pub fn db_system(driver: &str) -> &'static str {
    match driver {
        "PostgreSQL" => "postgresql",
        "SQLite" => "sqlite",
        _ => "other_sql",
    }
}

/// The OTLP client: HTTP/1.1 over the hyper that axum already brings (the
/// stock hyper client of `opentelemetry-http` would add HTTP/2, and the
/// reqwest ones a second HTTP stack). Plain HTTP only; see
/// `config::parse_otlp_endpoint`.
#[derive(Debug, Clone)]
struct Http1Client {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Http1Client {
    fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        let inner = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { inner, timeout }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Http1Client {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<Bytes>,
    ) -> Result<opentelemetry_http::Response<Bytes>, opentelemetry_http::HttpError> {
        let exchange = async {
            let response = self.inner.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BODY).collect().await?;
            Ok::<_, opentelemetry_http::HttpError>(opentelemetry_http::Response::from_parts(
                parts,
                body.to_bytes(),
            ))
        };
        tokio::time::timeout(self.timeout, exchange).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_spans_are_kept_out_of_the_logs_and_logs_out_of_the_traces() {
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let trace_span = tracing::info_span!(target: "shortener::trace", "t");
            let log_span = tracing::info_span!("request");
            let trace_meta = trace_span.metadata().expect("enabled span");
            let log_meta = log_span.metadata().expect("enabled span");
            assert!(wanted_in_traces(trace_meta));
            assert!(!wanted_in_traces(log_meta));
            assert_eq!(trace_meta.target(), TRACE_TARGET);
        });
        assert_eq!(db_system("PostgreSQL"), "postgresql");
        assert_eq!(db_system("SQLite"), "sqlite");
    }

    #[test]
    fn with_export_off_no_layer_wants_a_trace_span() {
        let meta = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            tracing::debug_span!(target: "shortener::trace", "db.t")
                .metadata()
                .expect("enabled span")
        });
        for format in [LogFormat::Json, LogFormat::Text] {
            let interest = subscriber(format, None).register_callsite(meta);
            assert!(interest.is_never(), "{format:?}: {interest:?}");
        }
    }

    #[test]
    fn samplers_follow_the_standard_names() {
        assert!(matches!(
            sampler(TraceSampler::ParentBasedTraceIdRatio, 0.25),
            Sampler::ParentBased(_)
        ));
        assert!(matches!(
            sampler(TraceSampler::TraceIdRatio, 0.25),
            Sampler::TraceIdRatioBased(r) if r == 0.25
        ));
        assert!(matches!(
            sampler(TraceSampler::AlwaysOff, 1.0),
            Sampler::AlwaysOff
        ));
    }

    #[test]
    fn a_traceparent_header_becomes_the_remote_parent() {
        use opentelemetry::trace::TraceContextExt as _;
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "traceparent",
            axum::http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let cx = remote_context(&headers);
        let span = cx.span();
        let remote = span.span_context();
        assert!(remote.is_remote());
        assert_eq!(
            remote.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let none = remote_context(&axum::http::HeaderMap::new());
        assert!(!none.span().span_context().is_valid());
    }
}
