//! Rule-based targets and query forwarding, through the production serve path on every
//! backend: the first rule a visitor meets gives the target, every other visitor goes to
//! `original_url`, and every one of them is a click.

use std::sync::Arc;

use crate::common::{Backend, TestApp, expect_error, expect_json, redis_url, unique_prefix};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) \
    AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const PIXEL: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn ruled() -> Value {
    json!([
        {"device": "ios", "target": "https://apps.apple.com/app/x"},
        {"device": "android", "target": "https://play.google.com/store/x"},
        {"device": "mobile", "language": "de", "target": "https://m.example.de/"},
        {"language": "fr", "target": "https://example.fr/?ref=short#top"},
        {"query": {"name": "variant", "value": "b"}, "target": "https://example.com/b"},
        {"query": {"name": "beta"}, "target": "https://example.com/beta"}
    ])
}

/// A visitor's request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// Where `path` sends a visitor with these headers.
async fn location(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = app.request(Method::GET, path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND, "{path} {headers:?}");
    res.headers()["location"].to_str().unwrap().to_owned()
}

async fn redirect_events(app: &TestApp, url: &Value) -> usize {
    let path = format!(
        "/events?url_id={}&event_type=redirect&per_page=100",
        url["id"]
    );
    app.get_json(&path).await.as_array().unwrap().len()
}

pub async fn rules_choose_the_target_by_device_language_and_query(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://example.com/", "rules": ruled()}))
        .await;
    assert_eq!(url["rules"], ruled(), "rules are shown as given");
    assert_eq!(url["forward_query"], false);
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    let cases: [(Headers, &str, &str); 8] = [
        (
            &[("user-agent", IPHONE)],
            "",
            "https://apps.apple.com/app/x",
        ),
        (
            &[("user-agent", PIXEL), ("accept-language", "de")],
            "",
            "https://play.google.com/store/x",
        ),
        (
            &[("user-agent", WINDOWS), ("accept-language", "de")],
            "",
            "https://example.com/",
        ),
        (
            &[
                ("user-agent", WINDOWS),
                ("accept-language", "fr-CA, en;q=0.8"),
            ],
            "",
            "https://example.fr/?ref=short#top",
        ),
        (
            &[("accept-language", "en, fr;q=0")],
            "",
            "https://example.com/",
        ),
        (&[], "?variant=b", "https://example.com/b"),
        (&[], "?variant=a&beta", "https://example.com/beta"),
        (
            &[("user-agent", WINDOWS)],
            "?variant=a",
            "https://example.com/",
        ),
    ];
    for (headers, query, expected) in cases {
        let got = location(&app, &format!("{path}{query}"), headers).await;
        assert_eq!(got, expected, "{headers:?} {query}");
    }
    assert_eq!(
        redirect_events(&app, &url).await,
        cases.len(),
        "each is a click"
    );

    // A change of rules reaches the redirect at once; `null` removes them.
    let id = url["id"].as_i64().unwrap();
    let changed = expect_json(
        app.put(
            &format!("/urls/{id}"),
            json!({"rules": [{"device": "desktop", "target": "https://desk.example/"}]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["rules"][0]["device"], "desktop");
    assert_eq!(
        location(&app, &path, &[("user-agent", WINDOWS)]).await,
        "https://desk.example/"
    );
    assert_eq!(
        location(&app, &path, &[("user-agent", IPHONE)]).await,
        "https://example.com/"
    );
    let cleared = expect_json(
        app.put(&format!("/urls/{id}"), json!({"rules": null}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["rules"], json!([]));
    assert_eq!(
        location(&app, &path, &[("user-agent", WINDOWS)]).await,
        "https://example.com/"
    );
    // Each change is one `updated` event with the new rules.
    let events = app
        .get_json(&format!("/events?url_id={id}&event_type=updated"))
        .await;
    let fields: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["details"]["field"])
        .collect();
    assert_eq!(fields, [&json!("rules"), &json!("rules")], "{events}");
    assert_eq!(events[1]["details"]["new_value"], json!([]));
}

pub async fn a_link_forwards_its_query_only_when_asked(backend: Backend) {
    let app = TestApp::new(backend).await;
    let plain = app.link("https://example.com/p?own=1").await;
    let plain_path = format!("/{}?utm_source=mail", plain["short_code"].as_str().unwrap());
    assert_eq!(
        location(&app, &plain_path, &[]).await,
        "https://example.com/p?own=1"
    );

    let url = app
        .create_url(json!({
            "original_url": "https://example.com/p?own=1#part",
            "forward_query": true,
            "rules": [{"query": {"name": "to", "value": "b"}, "target": "https://b.example/"}]
        }))
        .await;
    assert_eq!(url["forward_query"], true);
    let code = url["short_code"].as_str().unwrap();
    assert_eq!(
        location(&app, &format!("/{code}?utm_source=mail&x=%20y"), &[]).await,
        "https://example.com/p?own=1&utm_source=mail&x=%20y#part"
    );
    assert_eq!(
        location(&app, &format!("/{code}?to=b"), &[]).await,
        "https://b.example/?to=b"
    );
    assert_eq!(
        location(&app, &format!("/{code}"), &[]).await,
        "https://example.com/p?own=1#part"
    );
    // Turned off by a change, as any other field.
    expect_json(
        app.put(
            &format!("/urls/{}", url["id"]),
            json!({"forward_query": false}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        location(&app, &format!("/{code}?utm_source=mail"), &[]).await,
        "https://example.com/p?own=1#part"
    );
}

pub async fn bad_rules_are_refused_with_the_reason_and_change_nothing(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://example.com/keep").await;
    let id = url["id"].as_i64().unwrap();
    let bad: [(Value, &str); 9] = [
        (
            json!([{"target": "https://a.example/"}]),
            "needs a condition",
        ),
        (
            json!([{"device": "tablet", "target": "https://a.example/"}]),
            "unknown variant",
        ),
        (
            json!([{"device": null, "language": "fr", "target": "https://a.example/"}]),
            "rules",
        ),
        (
            json!([{"language": "fr_FR", "target": "https://a.example/"}]),
            "not a language tag",
        ),
        (
            json!([{"language": "fr", "target": "ftp://a.example/"}]),
            "rule 0: target",
        ),
        (
            json!([{"language": "fr", "target": "http://10.0.0.1/"}]),
            "private network",
        ),
        (
            json!([{"query": {"name": ""}, "target": "https://a.example/"}]),
            "must not be empty",
        ),
        (
            json!([{"language": "fr", "when": "now", "target": "https://a.example/"}]),
            "unknown field",
        ),
        (
            Value::Array(vec![
                json!({"device": "ios", "target": "https://a.example/"});
                17
            ]),
            "at most 16",
        ),
    ];
    for (rules, reason) in bad {
        let message = expect_error(
            app.post(
                "/urls",
                json!({"original_url": "https://example.com/", "rules": rules}),
            )
            .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(message.contains(reason), "{rules}: {message}");
        let message = expect_error(
            app.put(
                &format!("/urls/{id}"),
                json!({"rules": rules, "title": "changed"}),
            )
            .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(message.contains(reason), "{rules}: {message}");
    }
    expect_error(
        app.put(&format!("/urls/{id}"), json!({"forward_query": "yes"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let after = app.get_json(&format!("/urls/{id}")).await;
    assert_eq!(after, url, "nothing changed");
}

/// A replica that learns of the link through Redis (not the database) applies its rules
/// and forwarding: the shared cache carries them.
pub async fn rules_hold_through_the_shared_cache(backend: Backend) {
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
        .create_url(json!({
            "original_url": "https://example.com/|pipe",
            "forward_query": true,
            "rules": [{"language": "fr", "target": "https://example.fr/|x"},
                      {"query": {"name": "a|b"}, "target": "https://q.example/"}]
        }))
        .await;
    let path = format!("/{}", url["short_code"].as_str().unwrap());
    assert_eq!(location(&a, &path, &[]).await, "https://example.com/|pipe");
    let b = TestApp::start(db.clone(), &flags).await;
    let res = b
        .request(Method::GET, &format!("{path}?z=1"))
        .header("accept-language", "fr")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "HIT", "answered from Redis");
    assert_eq!(res.headers()["location"], "https://example.fr/|x?z=1");
    assert_eq!(
        location(&b, &format!("{path}?a%7Cb=1"), &[]).await,
        "https://q.example/?a%7Cb=1"
    );
}
