//! Health, metrics and the OpenAPI document.

use crate::common::{Backend, TestApp, expect_error};
use reqwest::StatusCode;

pub async fn health_reports_database_and_cache(backend: Backend) {
    let app = TestApp::new(backend).await;
    let body = app.get_json("/health").await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    assert!(body["cache"].is_string());
    for probe in ["/livez", "/readyz"] {
        assert_eq!(app.get(probe).await.status(), StatusCode::OK);
    }
}

pub async fn openapi_document_lists_every_route(backend: Backend) {
    let app = TestApp::new(backend).await;
    let doc = app.get_json("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/health",
        "/users",
        "/users/{id}",
        "/users/bulk",
        "/urls",
        "/urls/{id}",
        "/urls/{id}/stats",
        "/urls/{id}/events",
        "/events",
        "/shorten",
        "/{short_code}",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
}

pub async fn metrics_are_exported(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://e.com/m").await;
    let code = format!("/{}", url["short_code"].as_str().unwrap());
    assert_eq!(app.get(&code).await.status(), StatusCode::FOUND);
    assert_eq!(app.get("/nOSuch1").await.status(), StatusCode::NOT_FOUND);
    let head = app.request(reqwest::Method::HEAD, &code).send().await;
    assert_eq!(head.unwrap().status(), StatusCode::FOUND);
    app.get(&format!("/urls/{}", url["id"])).await;
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(
        text.contains(
            "shortener_http_requests_total{method=\"GET\",route=\"/urls/{id}\",status=\"200\"} 1"
        ),
        "{text}"
    );
    // The redirect's series, which its own stack writes (resolved once for GET).
    for series in [
        "shortener_http_requests_total{method=\"GET\",route=\"/{short_code}\",status=\"302\"} 1",
        "shortener_http_requests_total{method=\"GET\",route=\"/{short_code}\",status=\"404\"} 1",
        "shortener_http_requests_total{method=\"HEAD\",route=\"/{short_code}\",status=\"302\"} 1",
        "shortener_http_request_duration_seconds_count{method=\"GET\",route=\"/{short_code}\"} 2",
        "shortener_http_request_duration_seconds_count{method=\"HEAD\",route=\"/{short_code}\"} 1",
        // The HEAD is a bot's visit, the GET a click.
        "shortener_redirects_total{outcome=\"found\"} 1",
        "shortener_redirects_total{outcome=\"bot\"} 1",
        "shortener_redirects_total{outcome=\"not_found\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing from {text}");
    }
    assert!(text.contains("shortener_urls_created_total 1"));
    for name in [
        "shortener_db_pool_connections{state=\"max\"}",
        "shortener_click_batch_size_count",
        "shortener_click_queue_depth 0",
        "shortener_cache_lookups_total{result=\"miss\",tier=\"local\"}",
        "process_resident_memory_bytes",
        "shortener_build_info",
        "shortener_urls_active",
        "shortener_database_up",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    // The sampler reports the in-process cache, which now holds the link.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        let value = |family: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{family} ")))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if value("shortener_cache_local_entries") >= 1.0
            && value("shortener_cache_local_bytes") > 0.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cache gauges were never sampled: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Values of `label` on the lines of metric family `family`.
fn label_values(metrics: &str, family: &str, label: &str) -> std::collections::BTreeSet<String> {
    let prefix = format!("{label}=\"");
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .filter_map(|line| {
            let start = line.find(&prefix)? + prefix.len();
            let end = start + line[start..].find('"')?;
            Some(line[start..end].to_owned())
        })
        .collect()
}

/// Made-up methods (any token is a valid method to HTTP) must not become
/// label values: each would be a counter and a histogram kept forever.
pub async fn made_up_methods_fold_into_one_label(backend: Backend) {
    let app = TestApp::new(backend).await;
    for n in 0..50 {
        let method = reqwest::Method::from_bytes(format!("FOO{n}").as_bytes()).unwrap();
        let res = app.request(method, &format!("/x{n}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    app.get("/health").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let methods = label_values(&metrics, "shortener_http_requests_total", "method");
    let expected: std::collections::BTreeSet<String> =
        ["GET", "_OTHER"].iter().map(|m| m.to_string()).collect();
    assert_eq!(methods, expected, "{metrics}");
}

/// A path no link can have (too long, or outside the code alphabet) is 404
/// without a cache lookup, a database read or a negative cache entry.
pub async fn impossible_codes_are_not_looked_up(backend: Backend) {
    let app = TestApp::new(backend).await;
    let lookups = |metrics: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("shortener_cache_lookups_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = lookups(&app.get("/metrics").await.text().await.unwrap());
    let long = "a".repeat(4096);
    for path in [
        long.as_str(),
        "a.b",
        "%E2%80%AEabc",
        "abc~",
        "x".repeat(33).as_str(),
    ] {
        let error = expect_error(app.get(&format!("/{path}")).await, StatusCode::NOT_FOUND).await;
        assert!(error.contains("no active link"), "{error}");
    }
    let after = lookups(&app.get("/metrics").await.text().await.unwrap());
    assert_eq!(before, after, "junk paths were looked up");
    // A path that could be a code is looked up (and missed) as before.
    app.get("/abc_-9").await;
    let looked = lookups(&app.get("/metrics").await.text().await.unwrap());
    assert!(looked > after);
}
