//! `GET /urls/export` and `GET /events/export`: streamed CSV, read back by a CSV reader.

use std::collections::HashMap;

use crate::common::{Backend, TestApp, expect_error};
use reqwest::StatusCode;
use serde_json::json;

/// The export at `path`: its header and rows, keyed by column.
async fn export(app: &TestApp, path: &str) -> Vec<HashMap<String, String>> {
    let res = app.get(path).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=")
    );
    let body = res.bytes().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_ref());
    let header: Vec<String> = reader.headers().unwrap().iter().map(Into::into).collect();
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            header
                .iter()
                .cloned()
                .zip(record.iter().map(Into::into))
                .collect()
        })
        .collect()
}

pub async fn links_export_as_csv_with_their_policy_and_never_a_password(backend: Backend) {
    let app = TestApp::new(backend).await;
    let plain = app.link("https://e.com/a,b\"c").await;
    let policed = app
        .create_url(
            json!({"original_url": "https://e.com/p", "title": "T, with comma",
                           "redirect_type": 308, "expires_at": "2030-01-01T00:00:00Z",
                           "max_visits": 5, "fallback_url": "https://e.com/f",
                           "password": "secret one"}),
        )
        .await;
    let gone = app.link("https://e.com/gone").await;
    app.delete(&format!("/urls/{}", gone["id"])).await;

    let rows = export(&app, "/urls/export").await;
    assert_eq!(rows.len(), 3);
    let first = &rows[0];
    assert_eq!(first["id"], plain["id"].to_string());
    assert_eq!(first["original_url"], "https://e.com/a,b\"c");
    assert_eq!(first["user_id"], "");
    assert_eq!(first["is_active"], "true");
    assert_eq!(first["password_protected"], "false");
    let second = &rows[1];
    assert_eq!(
        second["short_code"],
        policed["short_code"].as_str().unwrap()
    );
    assert_eq!(second["title"], "T, with comma");
    assert_eq!(second["redirect_type"], "308");
    assert_eq!(second["expires_at"], "2030-01-01T00:00:00");
    assert_eq!(second["max_visits"], "5");
    assert_eq!(second["fallback_url"], "https://e.com/f");
    assert_eq!(second["password_protected"], "true");
    let everything = format!("{rows:?}");
    assert!(!everything.contains("secret one") && !everything.contains("argon2"));
    // The list's filters.
    let active = export(&app, "/urls/export?is_active=false").await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["id"], gone["id"].to_string());
    expect_error(
        app.get("/urls/export?is_active=maybe").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

pub async fn events_export_every_row_across_pages(backend: Backend) {
    const REDIRECTS: usize = 1_250;
    let app = std::sync::Arc::new(TestApp::new(backend).await);
    let url = app.link("https://e.com/popular").await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    let mut visits = tokio::task::JoinSet::new();
    for _ in 0..REDIRECTS {
        let (app, path) = (app.clone(), path.clone());
        visits.spawn(async move { app.get(&path).await.status() });
    }
    while let Some(status) = visits.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::FOUND);
    }
    // Every answered redirect is recorded before it is answered.
    let rows = export(&app, &format!("/events/export?url_id={}", url["id"])).await;
    assert_eq!(rows.len(), REDIRECTS + 1, "the redirects and the creation");
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id, each once");
    assert_eq!(rows[0]["event_type"], "created");
    assert_eq!(rows[0]["source"], "service");
    let details: serde_json::Value = serde_json::from_str(&rows[1]["details"]).unwrap();
    assert_eq!(details["short_code"], url["short_code"]);
    let redirects = export(&app, "/events/export?event_type=redirect").await;
    assert_eq!(redirects.len(), REDIRECTS);
    expect_error(
        app.get("/events/export?source=nobody").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}
