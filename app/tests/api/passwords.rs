//! Password-protected links, through the production serve path on every backend: the
//! password in a header (API clients) or through the form (browsers), wrong ones limited per
//! link and client, and the password never shown, logged in an event or cached in clear.

use std::sync::Arc;

use crate::common::{
    Backend, TestApp, TestDatabase, expect_error, expect_json, redis_url, unique_prefix,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn redirect_events(app: &TestApp, url: &Value) -> usize {
    let path = format!(
        "/events?url_id={}&event_type=redirect&per_page=100",
        url["id"]
    );
    app.get_json(&path).await.as_array().unwrap().len()
}

async fn with_password(app: &TestApp, path: &str, password: &str) -> reqwest::Response {
    app.request(Method::GET, path)
        .header("x-link-password", password)
        .send()
        .await
        .unwrap()
}

async fn form(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    app.request(Method::POST, path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

pub async fn a_protected_link_redirects_only_with_its_password(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://e.com/private", "password": "open sesame"}))
        .await;
    assert_eq!(url["password_protected"], true, "{url}");
    assert!(!url.to_string().contains("sesame") && !url.to_string().contains("argon2"));
    let path = format!("/{}", url["short_code"].as_str().unwrap());

    // No password: 401, as JSON for API clients and as the form for browsers.
    let res = app.get(&path).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().contains_key("www-authenticate"));
    assert_eq!(res.headers()["cache-control"], "no-store");
    let message = expect_error(res, StatusCode::UNAUTHORIZED).await;
    assert!(message.contains("X-Link-Password"), "{message}");
    let page = app
        .request(Method::GET, &path)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    let page = page.text().await.unwrap();
    assert!(page.contains("<form method=\"post\"") && page.contains("name=\"password\""));
    // HEAD neither: a link checker learns nothing more than that it is protected.
    let head = app.request(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(redirect_events(&app, &url).await, 0);

    // A wrong password: 401, no click.
    let res = with_password(&app, &path, "open sesame!").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = form(&app, &path, "password=wrong").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("Wrong password"));
    assert_eq!(redirect_events(&app, &url).await, 0);

    // The right one, in the header: the link's own redirect, and a click.
    let res = with_password(&app, &path, "open sesame").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"], "https://e.com/private");
    assert_eq!(redirect_events(&app, &url).await, 1);
    // Through the form: 303 (the browser follows with a GET), and a click.
    let res = form(&app, &path, "password=open+sesame").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "https://e.com/private");
    assert_eq!(redirect_events(&app, &url).await, 2);
    // A body that is not the form is a 400, and no click.
    let res = app
        .request(Method::POST, &path)
        .header("content-type", "application/json")
        .body("{\"password\":\"open sesame\"}")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(redirect_events(&app, &url).await, 2);

    // Removing the password opens the link at once; the events say a password was set and
    // removed, never what it was.
    let opened = expect_json(
        app.put(&format!("/urls/{}", url["id"]), json!({"password": null}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(opened["password_protected"], false);
    assert_eq!(app.get(&path).await.status(), StatusCode::FOUND);
    let changed = expect_json(
        app.put(
            &format!("/urls/{}", url["id"]),
            json!({"password": "second one"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["password_protected"], true);
    assert_eq!(app.get(&path).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        with_password(&app, &path, "second one").await.status(),
        StatusCode::FOUND
    );
    let events = app
        .get_json(&format!("/urls/{}/events?per_page=100", url["id"]))
        .await
        .to_string();
    assert!(!events.contains("sesame") && !events.contains("second one"));
    assert!(!events.contains("argon2"), "{events}");
    assert!(
        events.contains(r#"{"field":"password","new_value":"set"}"#),
        "{events}"
    );
    assert!(
        events.contains(r#"{"field":"password","new_value":null}"#),
        "{events}"
    );
    // A link without a password redirects from the form too.
    let open = app.link("https://e.com/open").await;
    let res = form(
        &app,
        &format!("/{}", open["short_code"].as_str().unwrap()),
        "password=anything",
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

pub async fn wrong_passwords_are_limited_per_link_and_client(backend: Backend) {
    let app = TestApp::new(backend).await;
    wrong_passwords_until_429(&app, 10).await;
    // The limit is a setting: 3 at once, then one a minute.
    let db = Arc::new(TestDatabase::new(backend).await);
    let flags = [
        "--auth-mode",
        "open",
        "--link-password-burst",
        "3",
        "--link-password-limit-per-minute",
        "1",
    ];
    let strict = TestApp::start(db, &flags).await;
    let allowed = wrong_passwords_until_429(&strict, 3).await;
    assert!(
        allowed < 10,
        "{allowed} wrong passwords before a 429 with a burst of 3"
    );
}

/// Wrong passwords for a fresh link until a 429 (at least `at_least` answered 401 first),
/// then what the limit does: the right password refused, another link not. Returns how many
/// wrong ones were answered 401.
async fn wrong_passwords_until_429(app: &TestApp, at_least: u32) -> u32 {
    let url = app
        .create_url(json!({"original_url": "https://e.com/vault", "password": "right one"}))
        .await;
    let other = app
        .create_url(json!({"original_url": "https://e.com/other", "password": "right one"}))
        .await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    // Wrong ones are answered 401 until the allowance (10 at once, refilled one every 6
    // seconds) is spent; then 429. However slow each check is, at least ten get their 401.
    let mut wrong = 0;
    loop {
        let status = with_password(app, &path, "guess").await.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        wrong += 1;
        assert!(wrong < 100, "never limited");
    }
    assert!(wrong >= at_least, "{wrong}");
    // Now even the right one waits: 429 with Retry-After.
    let res = with_password(app, &path, "right one").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(redirect_events(app, &url).await, 0);
    // Another link of the same client is not affected.
    let res = with_password(
        app,
        &format!("/{}", other["short_code"].as_str().unwrap()),
        "right one",
    )
    .await;
    assert_eq!(res.status(), StatusCode::FOUND);
    wrong
}

pub async fn passwords_are_validated_and_never_shown(backend: Backend) {
    let app = TestApp::new(backend).await;
    for (password, problem) in [
        (json!("abc"), "4 to 128"),
        (json!("    "), "blank"),
        (json!("x".repeat(129)), "4 to 128"),
        (json!(1234), "password"),
    ] {
        let res = app
            .post(
                "/urls",
                json!({"original_url": "https://e.com/p", "password": password}),
            )
            .await;
        let body = expect_json(res, StatusCode::BAD_REQUEST).await;
        assert!(body.to_string().contains(problem), "{password}: {body}");
    }
    let url = app
        .create_url(json!({"original_url": "https://e.com/p", "password": "long enough"}))
        .await;
    for path in [
        format!("/urls/{}", url["id"]),
        format!("/urls/{}/stats", url["id"]),
        "/urls".to_owned(),
    ] {
        let body = app.get_json(&path).await.to_string();
        assert!(body.contains("\"password_protected\":true"), "{body}");
        assert!(
            !body.contains("long enough") && !body.contains("argon2"),
            "{body}"
        );
    }
}

/// A replica that learns of the link through Redis (not the database) still asks for its
/// password: the shared cache carries the hash.
pub async fn a_protected_link_stays_protected_through_the_shared_cache(backend: Backend) {
    let db = Arc::new(crate::common::TestDatabase::new(backend).await);
    let (redis, prefix) = (redis_url(), unique_prefix());
    let flags = [
        "--auth-mode",
        "open",
        "--redis-key-prefix",
        prefix.as_str(),
        "--redis-url",
        redis.as_str(),
    ];
    let a = TestApp::start(db.clone(), &flags).await;
    let url = a
        .create_url(json!({"original_url": "https://e.com/shared", "password": "via redis"}))
        .await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    assert_eq!(a.get(&path).await.status(), StatusCode::UNAUTHORIZED);
    let b = TestApp::start(db.clone(), &flags).await;
    let res = b.get(&path).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["x-cache"], "HIT", "answered from Redis");
    assert_eq!(
        with_password(&b, &path, "via redis").await.status(),
        StatusCode::FOUND
    );
}
