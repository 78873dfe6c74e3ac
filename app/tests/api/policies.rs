//! A link's policy: its redirect's status, its expiry, its visit cap and its fallback URL,
//! through the production serve path on every backend.

use std::sync::Arc;

use crate::common::{Backend, TestApp, expect_error, expect_json, redis_url, unique_prefix};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn redirect_events(app: &TestApp, url: &Value) -> usize {
    let path = format!(
        "/events?url_id={}&event_type=redirect&per_page=100",
        url["id"]
    );
    app.get_json(&path).await.as_array().unwrap().len()
}

pub async fn each_redirect_type_answers_with_its_status_and_is_never_cached(backend: Backend) {
    let app = TestApp::new(backend).await;
    for (kind, status) in [
        (json!(null), StatusCode::FOUND),
        (json!(301), StatusCode::MOVED_PERMANENTLY),
        (json!(302), StatusCode::FOUND),
        (json!(307), StatusCode::TEMPORARY_REDIRECT),
        (json!(308), StatusCode::PERMANENT_REDIRECT),
    ] {
        let url = app
            .create_url(json!({"original_url": "https://e.com/t", "redirect_type": kind}))
            .await;
        assert_eq!(url["redirect_type"], status.as_u16(), "{url}");
        let res = app
            .get(&format!("/{}", url["short_code"].as_str().unwrap()))
            .await;
        assert_eq!(res.status(), status);
        assert_eq!(res.headers()["location"], "https://e.com/t");
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert_eq!(
            redirect_events(&app, &url).await,
            1,
            "a {status} is a click"
        );
    }
    // A change of type reaches the redirect at once.
    let url = app.link("https://e.com/moved").await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    assert_eq!(app.get(&path).await.status(), StatusCode::FOUND);
    let changed = expect_json(
        app.put(
            &format!("/urls/{}", url["id"]),
            json!({"redirect_type": 308}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["redirect_type"], 308);
    assert_eq!(
        app.get(&path).await.status(),
        StatusCode::PERMANENT_REDIRECT
    );
}

pub async fn expired_links_answer_410_as_json_or_a_page_or_go_to_their_fallback(backend: Backend) {
    let app = TestApp::new(backend).await;
    let past = "2020-01-01T00:00:00Z";
    let url = app
        .create_url(json!({"original_url": "https://e.com/old", "expires_at": past}))
        .await;
    assert_eq!(url["expires_at"], "2020-01-01T00:00:00");
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    let message = expect_error(app.get(&path).await, StatusCode::GONE).await;
    assert!(message.contains("expired"), "{message}");
    // A browser gets a page.
    let page = app
        .request(reqwest::Method::GET, &path)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.text().await.unwrap().contains("expired"));
    assert_eq!(redirect_events(&app, &url).await, 0, "a 410 is no click");

    // A fallback takes the place of the 410, with the link's status; no click.
    let with_fallback = app
        .create_url(
            json!({"original_url": "https://e.com/sale", "expires_at": past,
                           "fallback_url": "https://e.com/sale-over", "redirect_type": 307}),
        )
        .await;
    let res = app
        .get(&format!(
            "/{}",
            with_fallback["short_code"].as_str().unwrap()
        ))
        .await;
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(res.headers()["location"], "https://e.com/sale-over");
    assert_eq!(redirect_events(&app, &with_fallback).await, 0);
    // The password form's POST gets its 303 there too (a browser then GETs the fallback).
    let posted = app
        .post_raw(
            &format!("/{}", with_fallback["short_code"].as_str().unwrap()),
            "application/x-www-form-urlencoded",
            "password=",
        )
        .await;
    assert_eq!(posted.status(), StatusCode::SEE_OTHER);
    assert_eq!(posted.headers()["location"], "https://e.com/sale-over");

    // Moving the expiry into the future (any offset) revives the link at once, on a
    // link this replica has cached.
    let changed = expect_json(
        app.put(
            &format!("/urls/{}", url["id"]),
            json!({"expires_at": "2999-01-01T01:00:00+01:00"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["expires_at"], "2999-01-01T00:00:00");
    assert_eq!(app.get(&path).await.status(), StatusCode::FOUND);
    // And `null` takes the expiry away.
    let cleared = expect_json(
        app.put(&format!("/urls/{}", url["id"]), json!({"expires_at": null}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["expires_at"], Value::Null);
    let events = app
        .get_json(&format!("/urls/{}/events?per_page=100", url["id"]))
        .await;
    let changes: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "updated")
        .map(|e| &e["details"])
        .collect();
    assert_eq!(
        changes,
        [
            &json!({"field": "expires_at", "new_value": "2999-01-01T00:00:00"}),
            &json!({"field": "expires_at", "new_value": null}),
        ]
    );
}

pub async fn a_capped_link_redirects_exactly_max_visits_times(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://e.com/3", "max_visits": 3}))
        .await;
    assert_eq!(url["max_visits"], 3);
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    // HEAD takes no visit.
    let head = app
        .request(reqwest::Method::HEAD, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::FOUND);
    for _ in 0..3 {
        assert_eq!(app.get(&path).await.status(), StatusCode::FOUND);
    }
    let message = expect_error(app.get(&path).await, StatusCode::GONE).await;
    assert!(message.contains("visit limit"), "{message}");
    let stats = app.get_json(&format!("/urls/{}/stats", url["id"])).await;
    assert_eq!(stats["redirect_count"], 3);
    assert_eq!(stats["visits_left"], 0);
    assert_eq!(redirect_events(&app, &url).await, 3);
    // Raising the cap gives visits back (a new version of the link).
    app.put(&format!("/urls/{}", url["id"]), json!({"max_visits": 4}))
        .await;
    assert_eq!(app.get(&path).await.status(), StatusCode::FOUND);
    assert_eq!(app.get(&path).await.status(), StatusCode::GONE);
    // A cap set on a link that was already followed counts those visits.
    let open = app.link("https://e.com/open").await;
    let open_path = format!("/{}", open["short_code"].as_str().unwrap());
    for _ in 0..2 {
        assert_eq!(app.get(&open_path).await.status(), StatusCode::FOUND);
    }
    app.put(&format!("/urls/{}", open["id"]), json!({"max_visits": 3}))
        .await;
    let stats = app.get_json(&format!("/urls/{}/stats", open["id"])).await;
    assert_eq!(stats["visits_left"], 1);
    assert_eq!(app.get(&open_path).await.status(), StatusCode::FOUND);
    assert_eq!(app.get(&open_path).await.status(), StatusCode::GONE);
}

pub async fn policy_fields_are_validated(backend: Backend) {
    let app = TestApp::new(backend).await;
    for (body, field) in [
        (json!({"redirect_type": 303}), "redirect_type"),
        (json!({"redirect_type": "301"}), "redirect_type"),
        (json!({"max_visits": 0}), "max_visits"),
        (json!({"max_visits": 1.5}), "max_visits"),
        (json!({"expires_at": "next tuesday"}), "expires_at"),
        (json!({"expires_at": 1767225599}), "expires_at"),
        (
            json!({"fallback_url": "javascript:alert(1)"}),
            "fallback_url",
        ),
    ] {
        let mut create = body.clone();
        create["original_url"] = json!("https://e.com/v");
        let message = expect_error(app.post("/urls", create).await, StatusCode::BAD_REQUEST).await;
        assert!(message.contains(field), "{body}: {message}");
    }
    let url = app.link("https://e.com/v").await;
    let message = expect_error(
        app.put(&format!("/urls/{}", url["id"]), json!({"max_visits": -1}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(message.contains("max_visits"), "{message}");
    // Nothing was changed or created by the refusals.
    let listed = app.get_json("/urls").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let unchanged = app.get_json(&format!("/urls/{}", url["id"])).await;
    assert_eq!(unchanged, url);
    assert_eq!(url["redirect_type"], 302);
    assert_eq!(url["max_visits"], Value::Null);
    assert_eq!(url["fallback_url"], Value::Null);
}

/// Two replicas (one database; on PostgreSQL, one Redis too) hammer one capped link, each
/// from a warm cache: exactly `max_visits` redirects are answered, and recorded.
pub async fn a_visit_cap_holds_exactly_across_two_replicas(backend: Backend) {
    const CAP: usize = 25;
    const PER_REPLICA: usize = 40;
    let db = Arc::new(crate::common::TestDatabase::new(backend).await);
    let (redis, prefix) = (redis_url(), unique_prefix());
    let mut flags = vec!["--auth-mode", "open", "--redis-key-prefix", prefix.as_str()];
    if backend != Backend::Sqlite {
        flags.extend(["--redis-url", redis.as_str()]);
    }
    let a = Arc::new(TestApp::start(db.clone(), &flags).await);
    let b = Arc::new(TestApp::start(db.clone(), &flags).await);
    let url = a
        .create_url(json!({"original_url": "https://e.com/cap", "max_visits": CAP}))
        .await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    // Both replicas have the link cached before the race.
    for app in [&a, &b] {
        app.request(reqwest::Method::HEAD, &path)
            .send()
            .await
            .unwrap();
    }
    let mut redirects = tokio::task::JoinSet::new();
    for n in 0..2 * PER_REPLICA {
        let app = if n % 2 == 0 { a.clone() } else { b.clone() };
        let path = path.clone();
        redirects.spawn(async move { app.get(&path).await.status() });
    }
    let (mut found, mut gone) = (0, 0);
    while let Some(status) = redirects.join_next().await {
        match status.unwrap() {
            StatusCode::FOUND => found += 1,
            StatusCode::GONE => gone += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((found, gone), (CAP, 2 * PER_REPLICA - CAP));
    let stats = a.get_json(&format!("/urls/{}/stats", url["id"])).await;
    assert_eq!(stats["redirect_count"], CAP);
    assert_eq!(stats["visits_left"], 0);
    assert_eq!(redirect_events(&a, &url).await, CAP);
}
