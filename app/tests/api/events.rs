//! The events API.

use crate::common::{Backend, TestApp, expect_error, expect_json};
use reqwest::StatusCode;
use serde_json::json;

pub async fn events_api(backend: Backend) {
    let app = TestApp::new(backend).await;
    let (user, url) = app.user_with_link("https://e.com").await;
    let event = expect_json(
        app.post(
            "/events",
            json!({"url_id": url["id"], "user_id": user["id"], "event_type": "qr_scan", "details": {"via": "poster"}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    for key in [
        "id",
        "url_id",
        "user_id",
        "event_type",
        "timestamp",
        "details",
    ] {
        assert!(event.get(key).is_some(), "event lacks {key}");
    }
    assert_eq!(event["details"], json!({"via": "poster"}));
    let no_details = expect_json(
        app.post(
            "/events",
            json!({"url_id": url["id"], "user_id": user["id"], "event_type": "ping"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(no_details["details"], json!({}));
    for missing in [
        json!({"user_id": user["id"], "event_type": "x"}),
        json!({"url_id": url["id"], "event_type": "x"}),
        json!({"url_id": url["id"], "user_id": user["id"]}),
        json!({"url_id": url["id"], "user_id": user["id"], "event_type": ""}),
    ] {
        expect_error(app.post("/events", missing).await, StatusCode::BAD_REQUEST).await;
    }
    let filtered = app
        .get_json(&format!(
            "/events?user_id={}&event_type=qr_scan",
            user["id"]
        ))
        .await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    expect_error(app.get("/events?url_id=abc").await, StatusCode::BAD_REQUEST).await;
}

pub async fn clients_cannot_forge_redirect_events(backend: Backend) {
    let app = TestApp::new(backend).await;
    let (user, url) = app.user_with_link("https://e.com/f").await;
    let res = app
        .post(
            "/events",
            json!({"url_id": url["id"], "user_id": user["id"], "event_type": "redirect"}),
        )
        .await;
    assert!(
        expect_error(res, StatusCode::BAD_REQUEST)
            .await
            .contains("event_type")
    );
}
