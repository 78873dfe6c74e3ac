//! Health, metrics and the OpenAPI document.

use crate::common::{Backend, TestApp};
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
    app.get(&format!("/{}", url["short_code"].as_str().unwrap()))
        .await;
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
    assert!(text.contains("shortener_redirects_total{outcome=\"found\"} 1"));
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
}
