//! Link analytics through the production serve path on every backend: clicks counted by
//! time, referrer, browser, operating system and device, unique visitors by day, bots left
//! out, all read from the rollups the click writer keeps.

use std::sync::Arc;

use crate::common::{Backend, TestApp, expect_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
    AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

async fn visit(app: &TestApp, path: &str, ua: &str, referrer: Option<&str>, client: &str) {
    let mut req = app
        .request(Method::GET, path)
        .header("user-agent", ua)
        .header("x-forwarded-for", client);
    if let Some(referrer) = referrer {
        req = req.header("referer", referrer);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::FOUND);
}

fn count(list: &Value, name: Value) -> i64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map_or(0, |c| c["clicks"].as_i64().unwrap())
}

/// Flags trusting the test client as a proxy, so that `X-Forwarded-For` names visitors.
const FLAGS: [&str; 4] = [
    "--auth-mode",
    "open",
    "--trusted-proxies",
    "127.0.0.1/32,::1/128",
];

pub async fn analytics_count_clicks_by_time_source_and_visitor(backend: Backend) {
    let db = Arc::new(crate::common::TestDatabase::new(backend).await);
    let app = TestApp::start(db.clone(), &FLAGS).await;
    let url = app.link("https://e.com/analytics").await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    let hn = Some("https://news.ycombinator.com/item?id=1");
    // Two visitors from Hacker News on an iPhone (one of them twice), one typed in on
    // Windows; a bot's visits on top, which count nowhere.
    visit(&app, &path, IPHONE, hn, "203.0.113.1").await;
    visit(&app, &path, IPHONE, hn, "203.0.113.1").await;
    visit(&app, &path, IPHONE, hn, "203.0.113.2").await;
    visit(&app, &path, WINDOWS, None, "203.0.113.3").await;
    visit(&app, &path, SLACK, hn, "203.0.113.9").await;
    let head = app.request(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::FOUND);
    // The same visitor through a second replica is the same visitor (the day's salt is
    // shared through the database).
    let other = TestApp::start(db.clone(), &FLAGS).await;
    visit(&other, &path, WINDOWS, None, "203.0.113.3").await;

    let a = app
        .get_json(&format!("/urls/{}/analytics", url["id"]))
        .await;
    assert_eq!(a["granularity"], "day");
    assert_eq!(a["clicks"], 5, "{a}");
    let series = a["series"].as_array().unwrap();
    assert_eq!(series.len(), 7, "seven days by default");
    let days_with_clicks: Vec<&Value> = series.iter().filter(|b| b["clicks"] != 0).collect();
    let clicks: i64 = series.iter().map(|b| b["clicks"].as_i64().unwrap()).sum();
    assert_eq!(clicks, 5, "{a}");
    if days_with_clicks.len() == 1 {
        // (Visits on both sides of midnight UTC count their visitors on each day.)
        assert_eq!(a["unique_visitors"], 3, "{a}");
        assert_eq!(days_with_clicks[0]["unique_visitors"], 3, "{a}");
    }
    assert_eq!(count(&a["referrers"], json!("news.ycombinator.com")), 3);
    assert_eq!(count(&a["referrers"], Value::Null), 2);
    assert_eq!(count(&a["browsers"], json!("Safari")), 3);
    assert_eq!(count(&a["browsers"], json!("Chrome")), 2);
    assert_eq!(count(&a["operating_systems"], json!("iPhone")), 3);
    assert_eq!(count(&a["devices"], json!("mobile")), 3);
    assert_eq!(count(&a["devices"], json!("desktop")), 2);
    // Most clicks first.
    assert_eq!(a["browsers"][0]["name"], "Safari");

    // By hour: this hour has them all; hours carry no unique visitors.
    let h = app
        .get_json(&format!("/urls/{}/analytics?granularity=hour", url["id"]))
        .await;
    let hours = h["series"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(
        hours
            .iter()
            .map(|b| b["clicks"].as_i64().unwrap())
            .sum::<i64>(),
        5
    );
    assert!(hours.iter().all(|b| b["unique_visitors"].is_null()));
    // A range before the link's clicks has none.
    let before = app
        .get_json(&format!(
            "/urls/{}/analytics?from=2026-01-01T00:00:00Z&to=2026-01-03T12:00:00Z",
            url["id"]
        ))
        .await;
    assert_eq!(before["clicks"], 0);
    assert_eq!(before["from"], "2026-01-01T00:00:00");
    assert_eq!(before["to"], "2026-01-04T00:00:00", "widened to whole days");
    assert_eq!(before["series"].as_array().unwrap().len(), 3);
    assert_eq!(before["referrers"], json!([]));
}

pub async fn analytics_ranges_are_checked(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://e.com/ranges").await;
    let base = format!("/urls/{}/analytics", url["id"]);
    for (query, field) in [
        ("granularity=week", "granularity"),
        ("granularity=", "granularity"),
        ("to=", "to"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
        (
            "granularity=hour&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "to",
        ),
        ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
    ] {
        let message = expect_error(
            app.get(&format!("{base}?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(message.starts_with(field), "{query}: {message}");
    }
    expect_error(
        app.get("/urls/999999/analytics").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
