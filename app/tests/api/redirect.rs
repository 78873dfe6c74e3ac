//! Redirects: what they answer, what they record, and how fast a change reaches them.

use crate::common::{Backend, TestApp, expect_error};
use reqwest::StatusCode;
use serde_json::json;

pub async fn redirect_records_an_event_visible_at_once(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    // `url` is accepted for `original_url`.
    let url = app
        .create_url(json!({"url": "https://example.com/go", "user_id": user["id"]}))
        .await;
    let code = url["short_code"].as_str().unwrap();
    for n in 1..=3 {
        let res = app.get(&format!("/{code}")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(res.headers()["location"], "https://example.com/go");
        let events = app
            .get_json(&format!("/events?url_id={}&event_type=redirect", url["id"]))
            .await;
        assert_eq!(
            events.as_array().unwrap().len(),
            n,
            "redirect {n} recorded at once"
        );
        assert_eq!(events[0]["user_id"], user["id"]);
        assert_eq!(events[0]["details"], json!({"short_code": code}));
    }
}

pub async fn inactive_and_unknown_codes_do_not_redirect_or_record(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://example.com/off").await;
    let id = url["id"].as_i64().unwrap();
    app.put(&format!("/urls/{id}"), json!({"is_active": false}))
        .await;
    expect_error(
        app.get(&format!("/{}", url["short_code"].as_str().unwrap()))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_error(app.get("/NoSuchCode").await, StatusCode::NOT_FOUND).await;
    let redirects = app.get_json("/events?event_type=redirect").await;
    assert_eq!(redirects, json!([]));
}

pub async fn update_reaches_the_redirect_at_once(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://example.com/old").await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    assert_eq!(
        app.get(&path).await.headers()["location"],
        "https://example.com/old"
    );
    app.put(
        &format!("/urls/{}", url["id"]),
        json!({"original_url": "https://example.com/new"}),
    )
    .await;
    assert_eq!(
        app.get(&path).await.headers()["location"],
        "https://example.com/new"
    );
    app.put(&format!("/urls/{}", url["id"]), json!({"is_active": false}))
        .await;
    assert_eq!(app.get(&path).await.status(), StatusCode::NOT_FOUND);
    app.put(&format!("/urls/{}", url["id"]), json!({"is_active": true}))
        .await;
    assert_eq!(app.get(&path).await.status(), StatusCode::FOUND);
}

const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

async fn visit(app: &TestApp, method: reqwest::Method, path: &str, ua: Option<&str>) -> StatusCode {
    let mut req = app.request(method, path);
    if let Some(ua) = ua {
        req = req.header("user-agent", ua);
    }
    req.send().await.unwrap().status()
}

/// `HEAD`s and known bots' `GET`s are answered as anyone's, and recorded as `bot_visit`
/// events: not in the redirect count, not taken from a visit cap. HTTP libraries are not
/// bots (API clients and scripts act for people).
pub async fn bots_and_head_requests_are_recorded_as_bot_visits_not_clicks(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://e.com/h").await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    use reqwest::Method;
    assert_eq!(
        visit(&app, Method::HEAD, &path, None).await,
        StatusCode::FOUND
    );
    assert_eq!(
        visit(&app, Method::GET, &path, Some(SLACK)).await,
        StatusCode::FOUND
    );
    let library = Some("python-requests/2.31.0");
    assert_eq!(
        visit(&app, Method::GET, &path, library).await,
        StatusCode::FOUND
    );
    assert_eq!(
        visit(&app, Method::GET, &path, None).await,
        StatusCode::FOUND
    );
    let stats = app.get_json(&format!("/urls/{}/stats", url["id"])).await;
    assert_eq!(stats["redirect_count"], 2, "{stats}");
    assert_eq!(stats["events_by_type"]["bot_visit"], 2, "{stats}");
    let bots = app
        .get_json(&format!(
            "/events?url_id={}&event_type=bot_visit",
            url["id"]
        ))
        .await;
    let bots = bots.as_array().unwrap();
    assert_eq!(bots.len(), 2);
    assert_eq!(bots[0]["details"], json!({"short_code": url["short_code"]}));
    assert_eq!(bots[0]["source"], "service");

    // A bot's visit takes nothing from a cap (an unfurler must not use up a one-time link).
    let capped = app
        .create_url(json!({"original_url": "https://e.com/once", "max_visits": 1}))
        .await;
    let once = format!("/{}", capped["short_code"].as_str().unwrap());
    assert_eq!(
        visit(&app, Method::GET, &once, Some(SLACK)).await,
        StatusCode::FOUND
    );
    assert_eq!(
        visit(&app, Method::HEAD, &once, None).await,
        StatusCode::FOUND
    );
    assert_eq!(
        visit(&app, Method::GET, &once, None).await,
        StatusCode::FOUND
    );
    assert_eq!(
        visit(&app, Method::GET, &once, None).await,
        StatusCode::GONE
    );
    assert_eq!(
        visit(&app, Method::GET, &once, Some(SLACK)).await,
        StatusCode::GONE
    );
    let stats = app.get_json(&format!("/urls/{}/stats", capped["id"])).await;
    assert_eq!(stats["redirect_count"], 1, "{stats}");
    assert_eq!(stats["visits_left"], 0, "{stats}");

    // Clients cannot post them.
    let message = crate::common::expect_error(
        app.post(
            "/events",
            json!({"url_id": url["id"], "user_id": 1, "event_type": "bot_visit"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(message.contains("recorded by the service"), "{message}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("shortener_redirects_total{outcome=\"bot\"} 4"),
        "{metrics}"
    );
}

/// With `COUNT_BOTS`, bots' `GET`s are clicks; a `HEAD` still is not.
pub async fn counted_bots_are_clicks(backend: Backend) {
    let db = std::sync::Arc::new(crate::common::TestDatabase::new(backend).await);
    let app = TestApp::start(db, &["--auth-mode", "open", "--count-bots", "true"]).await;
    let url = app.link("https://e.com/counted").await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    use reqwest::Method;
    assert_eq!(
        visit(&app, Method::GET, &path, Some(SLACK)).await,
        StatusCode::FOUND
    );
    assert_eq!(
        visit(&app, Method::HEAD, &path, Some(SLACK)).await,
        StatusCode::FOUND
    );
    let stats = app.get_json(&format!("/urls/{}/stats", url["id"])).await;
    assert_eq!(stats["redirect_count"], 1, "{stats}");
    assert_eq!(stats["events_by_type"]["bot_visit"], 1, "{stats}");
}

pub async fn concurrent_redirects_to_one_link_are_each_counted_once(backend: Backend) {
    const REDIRECTS: usize = 300;
    let app = std::sync::Arc::new(TestApp::new(backend).await);
    let url = app.link("https://e.com/hot").await;
    let code = url["short_code"].as_str().unwrap().to_owned();
    let mut redirects = tokio::task::JoinSet::new();
    for _ in 0..REDIRECTS {
        let (app, code) = (app.clone(), code.clone());
        redirects.spawn(async move { app.get(&format!("/{code}")).await.status() });
    }
    while let Some(status) = redirects.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::FOUND);
    }
    // Every answered redirect is committed: counters and events agree.
    let stats = app.get_json(&format!("/urls/{}/stats", url["id"])).await;
    assert_eq!(stats["redirect_count"], REDIRECTS);
    let mut ids = std::collections::HashSet::new();
    for page in 1..=REDIRECTS.div_ceil(100) + 1 {
        let events = app
            .get_json(&format!(
                "/events?url_id={}&event_type=redirect&per_page=100&page={page}",
                url["id"]
            ))
            .await;
        for event in events.as_array().unwrap() {
            assert!(
                ids.insert(event["id"].as_i64().unwrap()),
                "event listed twice"
            );
        }
    }
    assert_eq!(ids.len(), REDIRECTS);
}
