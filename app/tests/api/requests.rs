//! What every request gets: JSON errors, body and type checks, access control, request ids.

use crate::common::{Backend, TestApp, expect_error, expect_json};
use reqwest::{Method, StatusCode};
use serde_json::json;
use shortener::config::AuthMode;

pub async fn bodies_that_are_not_objects_are_400(backend: Backend) {
    let app = TestApp::new(backend).await;
    for path in ["/users", "/urls", "/events", "/shorten"] {
        for body in [
            "\"hello\"",
            "[1,2]",
            "not json",
            "",
            "42",
            "null",
            "{\"unterminated\": ",
        ] {
            expect_error(
                app.post_raw(path, "application/json", body).await,
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
        let res = app
            .post_raw(
                path,
                "text/plain",
                "{\"username\":\"a\",\"email\":\"a@b.co\"}",
            )
            .await;
        expect_error(res, StatusCode::BAD_REQUEST).await;
        let res = app
            .request(reqwest::Method::POST, path)
            .body("{}")
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::BAD_REQUEST).await;
    }
    let url = app.link("https://example.com").await;
    let res = app
        .request(reqwest::Method::PUT, &format!("/urls/{}", url["id"]))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST).await;
}

pub async fn wrong_types_name_the_field(backend: Backend) {
    let app = TestApp::new(backend).await;
    let cases = [
        ("/urls", json!({"original_url": 12})),
        (
            "/urls",
            json!({"original_url": "https://e.com", "user_id": "1"}),
        ),
        (
            "/urls",
            json!({"original_url": "https://e.com", "title": 5}),
        ),
        (
            "/urls",
            json!({"original_url": "https://e.com", "short_code": true}),
        ),
        (
            "/events",
            json!({"url_id": "1", "user_id": 1, "event_type": "x"}),
        ),
        (
            "/events",
            json!({"url_id": 1, "user_id": 1, "event_type": "x", "details": "str"}),
        ),
        (
            "/events",
            json!({"url_id": 1, "user_id": 1, "event_type": "x", "details": [1]}),
        ),
    ];
    for (path, body) in cases {
        let field = body
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, v)| match k.as_str() {
                "original_url" | "title" | "short_code" => !v.is_string(),
                "user_id" | "url_id" => !v.is_i64(),
                "details" => !v.is_object(),
                _ => false,
            })
            .map(|(k, _)| k.clone())
            .unwrap();
        let res = app.post(path, body.clone()).await;
        let payload = expect_json(res, StatusCode::BAD_REQUEST).await;
        assert!(
            payload["error"].as_str().unwrap().contains(&field),
            "{body}: {payload}"
        );
        assert!(payload["details"][&field].is_array(), "{body}: {payload}");
    }
    let url = app.link("https://e.com").await;
    let res = app
        .put(&format!("/urls/{}", url["id"]), json!({"is_active": "yes"}))
        .await;
    assert!(
        expect_error(res, StatusCode::BAD_REQUEST)
            .await
            .contains("is_active")
    );
}

pub async fn unknown_references_are_404(backend: Backend) {
    let app = TestApp::new(backend).await;
    expect_error(
        app.post(
            "/urls",
            json!({"original_url": "https://e.com", "user_id": 4242}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let user = app.create_user("ada", "ada@example.com").await;
    let url = app.link("https://e.com").await;
    expect_error(
        app.post(
            "/events",
            json!({"url_id": 4242, "user_id": user["id"], "event_type": "click"}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_error(
        app.post(
            "/events",
            json!({"url_id": url["id"], "user_id": 4242, "event_type": "click"}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for path in [
        "/urls/4242",
        "/urls/4242/stats",
        "/urls/4242/events",
        "/users/4242",
    ] {
        expect_error(app.get(path).await, StatusCode::NOT_FOUND).await;
    }
}

pub async fn errors_are_always_json(backend: Backend) {
    let app = TestApp::new(backend).await;
    expect_error(app.get("/no/such/route").await, StatusCode::NOT_FOUND).await;
    expect_error(
        app.request(reqwest::Method::PATCH, "/users")
            .send()
            .await
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    let huge = format!(
        "{{\"username\":\"{}\",\"email\":\"a@b.co\"}}",
        "x".repeat(200_000)
    );
    expect_error(
        app.post_raw("/users", "application/json", &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
}

pub async fn api_key_mode_guards_management_endpoints(backend: Backend) {
    let app = TestApp::with_auth(backend, AuthMode::ApiKey).await;
    let url = app.link("https://e.com/k").await;
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path) in [
        (reqwest::Method::GET, "/users"),
        (reqwest::Method::GET, "/urls"),
        (reqwest::Method::GET, "/events"),
        (reqwest::Method::POST, "/shorten"),
        (reqwest::Method::DELETE, "/urls/1"),
    ] {
        let res = anonymous
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert!(
            res.headers().contains_key("www-authenticate"),
            "{method} {path}"
        );
        expect_error(res, StatusCode::UNAUTHORIZED).await;
        let res = anonymous
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth("wrong-key-wrong-key")
            .send()
            .await
            .unwrap();
        expect_error(res, StatusCode::UNAUTHORIZED).await;
    }
    // The redirect and health stay public.
    let res = anonymous
        .get(format!(
            "{}/{}",
            app.base,
            url["short_code"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        anonymous
            .get(format!("{}/health", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // The refused delete changed nothing.
    assert_eq!(app.get_json("/urls/1").await["is_active"], true);
}

pub async fn request_ids_are_echoed_or_assigned_uniquely(backend: Backend) {
    let app = TestApp::new(backend).await;
    let echoed = app
        .request(Method::GET, "/health")
        .header("x-request-id", "caller-7")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "caller-7");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let res = app.get("/health").await;
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(!id.is_empty());
        assert!(seen.insert(id), "request ids repeat: {seen:?}");
    }
}

/// A client that trickles its headers is disconnected after the header
/// read timeout; a normal client on the same server is unaffected.
pub async fn slow_headers_are_cut_off(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let db = std::sync::Arc::new(crate::common::TestDatabase::new(backend).await);
    let flags = ["--auth-mode", "open", "--header-read-timeout-secs", "1"];
    let app = TestApp::start(db, &flags).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read(&mut buf))
        .await
        .expect("the connection was still open after 10 s");
    // Closed (possibly after a 408), long before the 10 s bound.
    let answer = String::from_utf8_lossy(&buf[..read.unwrap_or(0)]).to_string();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
}
