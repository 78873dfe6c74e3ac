//! Trace export, end to end: the real binary posts OTLP/HTTP protobuf to a
//! collector stand-in run by the test, which decodes what arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use common::server::{BIN, Server, client};
use common::{Backend, TestDatabase};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The caller's trace, as an ingress would send it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// What the collector stand-in received.
#[derive(Default)]
struct Received {
    requests: Vec<ExportTraceServiceRequest>,
    /// Anything wrong with a request (content type, undecodable body).
    problems: Vec<String>,
}

/// A span as the assertions need it.
#[derive(Debug, Clone)]
struct SpanSeen {
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    service_name: String,
}

/// Serves `POST /v1/traces` on `listener` until the test ends.
fn collector(listener: tokio::net::TcpListener) -> Arc<Mutex<Received>> {
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let mut sink = sink.lock().unwrap();
                let ctype = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if ctype != "application/x-protobuf" {
                    sink.problems.push(format!("content-type {ctype:?}"));
                }
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => sink.requests.push(request),
                    Err(err) => sink.problems.push(format!("undecodable body: {err}")),
                }
                (
                    AxumStatus::OK,
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    received
}

fn spans(received: &Received) -> Vec<SpanSeen> {
    let mut out = Vec::new();
    for request in &received.requests {
        for resource_spans in &request.resource_spans {
            let service_name = resource_spans
                .resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .and_then(|a| a.get("service.name").cloned())
                .unwrap_or_default();
            for scope in &resource_spans.scope_spans {
                for span in &scope.spans {
                    out.push(SpanSeen {
                        name: span.name.clone(),
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                        service_name: service_name.clone(),
                    });
                }
            }
        }
    }
    out
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The server's JSON log lines.
fn log_lines(server: &Server) -> Vec<Value> {
    server
        .logs()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// The service under test: open auth, every request in the access log.
fn start(database_url: &str, env: &[(&str, &str)]) -> Server {
    let mut all = vec![("AUTH_MODE", "open"), ("ACCESS_LOG", "all")];
    all.extend_from_slice(env);
    Server::start(database_url, &all)
}

/// SIGTERM, then a clean exit.
fn stop(server: &mut Server) {
    let status = server.terminate();
    assert!(status.success(), "exit {status}: {}", server.logs());
}

/// Creates a URL (inside the caller's trace) and follows it, then stops the
/// service and returns the spans it exported, the URL and the server.
async fn traced_traffic(
    database_url: &str,
    received: &Arc<Mutex<Received>>,
    endpoint: &str,
) -> (Vec<SpanSeen>, Value, Server) {
    let mut server = start(
        database_url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_SERVICE_NAME", "shortener-under-test"),
            // Nothing leaves before shutdown: what arrives was flushed by
            // the SIGTERM path.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            // Debug lines of sqlx are logged inside the store spans: they
            // must still show the request span, never a trace span.
            ("RUST_LOG", "info,sqlx=debug,shortener=debug"),
        ],
    );
    let http = client();
    server.wait_ready(&http, "/livez").await;

    let res = http
        .post(format!("{}/urls", server.base))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .header("x-request-id", "create-1")
        .json(&json!({"original_url": "https://example.com/private-target"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let url: Value = res.json().await.unwrap();
    let code = url["short_code"].as_str().unwrap();
    let res = server.get(&http, &format!("/{code}")).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["x-cache"], "MISS");

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        received.lock().unwrap().requests.is_empty(),
        "spans were sent before shutdown although the batch delay is long"
    );
    stop(&mut server);
    let received = received.lock().unwrap();
    assert!(received.problems.is_empty(), "{:?}", received.problems);
    (spans(&received), url, server)
}

fn one<'a>(spans: &'a [SpanSeen], name: &str, trace_id: &str) -> &'a SpanSeen {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name && s.trace_id == trace_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} span in trace {trace_id}; spans: {spans:#?}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_database_spans_reach_the_collector_in_the_callers_trace() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = collector(listener);
    let (spans, url, server) = traced_traffic(&db.url, &received, &endpoint).await;

    // The create joined the caller's trace.
    let create = one(&spans, "POST /urls", TRACE_ID);
    assert_eq!(create.parent_span_id, PARENT_SPAN_ID);
    assert_eq!(create.kind, SpanKind::Server as i32);
    assert_eq!(create.service_name, "shortener-under-test");
    assert_eq!(create.attributes["http.route"], "/urls");
    assert_eq!(create.attributes["http.request.method"], "POST");
    assert_eq!(create.attributes["http.response.status_code"], "201");
    assert_eq!(create.attributes["request_id"], "create-1");
    let insert = one(&spans, "db.insert_url", TRACE_ID);
    assert_eq!(insert.parent_span_id, create.span_id);
    assert_eq!(insert.kind, SpanKind::Client as i32);
    assert_eq!(insert.attributes["db.system.name"], "postgresql");
    assert_eq!(insert.attributes["db.operation.name"], "insert_url");

    // The redirect is a trace of its own, with the database lookup in it.
    let redirect: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "GET /{short_code}")
        .collect();
    assert_eq!(redirect.len(), 1, "{spans:#?}");
    let redirect = redirect[0];
    assert_ne!(redirect.trace_id, TRACE_ID);
    assert!(redirect.parent_span_id.is_empty(), "a root span");
    assert_eq!(redirect.attributes["http.route"], "/{short_code}");
    assert_eq!(redirect.attributes["http.response.status_code"], "302");
    let resolve = one(&spans, "db.resolve", &redirect.trace_id);
    assert_eq!(resolve.parent_span_id, redirect.span_id);

    // The click was written by the batch writer, after the redirect.
    assert!(
        spans.iter().any(|s| s.name == "db.record_clicks"
            && s.attributes
                .get("db.operation.batch.size")
                .map(String::as_str)
                == Some("1")),
        "{spans:#?}"
    );
    // Probes are not traced; no user data in any attribute.
    assert!(!spans.iter().any(|s| s.name.contains("/livez")));
    let code = url["short_code"].as_str().unwrap();
    for span in &spans {
        for value in span.attributes.values() {
            assert!(
                !value.contains("private-target") && !value.contains(code),
                "user data in {span:#?}"
            );
        }
    }

    // The log lines kept their shape: trace spans never appear in them, and
    // lines inside a request still carry the request span.
    let lines = log_lines(&server);
    let served: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "request served")
        .collect();
    assert!(served.len() >= 3, "{lines:#?}");
    for line in &served {
        assert_eq!(line["span"]["name"], "request", "{line}");
        let mut keys: Vec<_> = line["span"].as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["method", "name", "path", "request_id"], "{line}");
    }
    assert!(
        served
            .iter()
            .any(|l| l["span"]["request_id"] == "create-1" && l["status"] == 201)
    );
    let queries: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "sqlx::query")
        .collect();
    assert!(!queries.is_empty(), "sqlx logs its statements at debug");
    for line in lines.iter().filter(|l| l.get("span").is_some()) {
        assert_eq!(line["span"]["name"], "request", "{line}");
    }
    assert!(
        queries
            .iter()
            .any(|l| l["span"]["request_id"] == "create-1"),
        "statements run for a request carry its id"
    );
    assert!(lines.iter().any(|l| l["message"] == "exporting traces"));
    assert!(lines.iter().any(|l| l["message"] == "traces flushed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_the_service_works() {
    // The stand-in listens where an SDK would send by default (4318) when
    // that port is free, so a default endpoint would be caught.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:4318").await {
        Ok(listener) => listener,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let received = collector(listener);
    let db = TestDatabase::new(Backend::Sqlite).await;
    let mut server = start(
        &db.url,
        &[
            ("OTEL_SERVICE_NAME", "shortener-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ],
    );
    let http = client();
    server.wait_ready(&http, "/livez").await;
    let res = http
        .post(format!("{}/urls", server.base))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .json(&json!({"original_url": "https://example.com/untraced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let url: Value = res.json().await.unwrap();
    let res = http
        .get(format!(
            "{}/{}",
            server.base,
            url["short_code"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(&mut server);

    let received = received.lock().unwrap();
    assert!(received.requests.is_empty() && received.problems.is_empty());
    let lines = log_lines(&server);
    assert!(!lines.iter().any(|l| l["message"] == "exporting traces"));
    assert!(!lines.iter().any(|l| l["message"] == "traces flushed"));
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "request served" && l["span"]["name"] == "request"),
        "{lines:#?}"
    );
}

#[test]
fn bad_trace_settings_stop_the_start_naming_the_variable() {
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "ftp://collector/v1/traces",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_TRACES_SAMPLER_ARG", "half"),
        ("OTEL_SERVICE_NAME", " "),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let mut child = Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env_remove("DATABASE_URL")
            .env(var, value)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        // An accepted value would start a server: stop it and fail.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&stderr_path).unwrap();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{var}={value} was accepted: {stderr}"
        );
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
}
