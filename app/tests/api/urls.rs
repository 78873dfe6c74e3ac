//! Short URLs: CRUD, codes, validation, the quick path, stats and listings.

use crate::common::{Backend, TestApp, expect_error, expect_json};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub async fn urls_crud_and_events(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    let url = app
        .create_url(
            json!({"original_url": "https://example.com/x", "title": "X", "user_id": user["id"]}),
        )
        .await;
    for key in [
        "id",
        "user_id",
        "short_code",
        "original_url",
        "title",
        "is_active",
        "created_at",
        "updated_at",
    ] {
        assert!(url.get(key).is_some(), "URL object lacks {key}: {url}");
    }
    assert_eq!(url["user_id"], user["id"]);
    assert_eq!(url["is_active"], true);
    let id = url["id"].as_i64().unwrap();

    let events = app.get_json(&format!("/urls/{id}/events")).await;
    assert_eq!(events[0]["event_type"], "created");
    assert_eq!(events[0]["details"]["short_code"], url["short_code"]);
    assert!(
        events[0]["details"].is_object(),
        "details is an object, not a string"
    );

    let updated = expect_json(
        app.put(
            &format!("/urls/{id}"),
            json!({"title": "Y", "original_url": "https://example.org/"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["title"], "Y");
    assert_eq!(updated["original_url"], "https://example.org/");
    assert!(updated["updated_at"].as_str().unwrap() > url["updated_at"].as_str().unwrap());

    let updates = app
        .get_json(&format!("/events?url_id={id}&event_type=updated"))
        .await;
    let mut fields: Vec<_> = updates
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["details"]["field"].as_str().unwrap().to_owned(),
                e["details"]["new_value"].clone(),
            )
        })
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fields,
        vec![
            ("original_url".into(), json!("https://example.org/")),
            ("title".into(), json!("Y"))
        ]
    );

    // Setting a field to its current value changes nothing and records nothing.
    app.put(&format!("/urls/{id}"), json!({"title": "Y"})).await;
    let again = app
        .get_json(&format!("/events?url_id={id}&event_type=updated"))
        .await;
    assert_eq!(again.as_array().unwrap().len(), 2);

    // Clearing the title.
    let cleared = expect_json(
        app.put(&format!("/urls/{id}"), json!({"title": null}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cleared["title"], Value::Null);
    expect_error(
        app.put(&format!("/urls/{id}"), json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_error(
        app.put("/urls/424242", json!({"title": "z"})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

pub async fn same_url_twice_gives_two_codes(backend: Backend) {
    let app = TestApp::new(backend).await;
    let a = app.link("https://example.com/same").await;
    let b = app.link("https://example.com/same").await;
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["short_code"], b["short_code"]);
    let code = a["short_code"].as_str().unwrap();
    assert!(
        code.len() >= 6 && code.chars().all(|c| c.is_ascii_alphanumeric()),
        "{code}"
    );
}

pub async fn deleting_a_url_is_soft_and_idempotent(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://example.com/del").await;
    let id = url["id"].as_i64().unwrap();
    for _ in 0..2 {
        assert_eq!(
            app.delete(&format!("/urls/{id}")).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    let after = app.get_json(&format!("/urls/{id}")).await;
    assert_eq!(after["is_active"], false);
    let deleted = app
        .get_json(&format!("/events?url_id={id}&event_type=deleted"))
        .await;
    assert_eq!(
        deleted.as_array().unwrap().len(),
        1,
        "a repeated delete records nothing"
    );
    assert_eq!(deleted[0]["details"], json!({"reason": "user_requested"}));
    expect_error(app.delete("/urls/99999").await, StatusCode::NOT_FOUND).await;
}

pub async fn url_validation_rules(backend: Backend) {
    let app = TestApp::new(backend).await;
    for bad in [
        "hello",
        "example.com",
        "ftp://example.com/f",
        "javascript:alert(1)",
        "http://",
        "",
    ] {
        let msg = expect_error(
            app.post("/urls", json!({"original_url": bad})).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(msg.contains("original_url"), "{bad}: {msg}");
    }
    expect_error(
        app.post("/urls", json!({"title": "no url"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let listed = app.get("/urls").await;
    assert_eq!(
        listed.headers()["x-total-count"],
        "0",
        "refused input changed nothing"
    );
}

pub async fn custom_short_codes(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://example.com", "short_code": "my-link_1"}))
        .await;
    assert_eq!(url["short_code"], "my-link_1");
    let res = app
        .post(
            "/urls",
            json!({"original_url": "https://example.com", "short_code": "my-link_1"}),
        )
        .await;
    expect_error(res, StatusCode::CONFLICT).await;
    for bad in [
        "ab",
        "has space",
        "x".repeat(33).as_str(),
        "health",
        "users",
        "Shorten",
        "metrics",
    ] {
        let res = app
            .post(
                "/urls",
                json!({"original_url": "https://example.com", "short_code": bad}),
            )
            .await;
        expect_error(res, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(app.get("/my-link_1").await.status(), StatusCode::FOUND);
}

pub async fn shorten_quick_path(backend: Backend) {
    let app = TestApp::new(backend).await;
    let res = app
        .post("/shorten", json!({"url": "https://example.com/quick"}))
        .await;
    let body = expect_json(res, StatusCode::CREATED).await;
    let code = body["short_code"].as_str().unwrap();
    assert!(
        body["short_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{code}"))
    );
    assert_eq!(body["original_url"], "https://example.com/quick");
    expect_error(
        app.post("/shorten", json!({"url": "nope"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_error(
        app.post("/shorten", json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let res = app
        .post(
            "/shorten",
            json!({"url": "https://e.com", "short_code": "quick1"}),
        )
        .await;
    assert_eq!(
        expect_json(res, StatusCode::CREATED).await["short_code"],
        "quick1"
    );
}

pub async fn stats(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://e.com/s").await;
    let code = url["short_code"].as_str().unwrap();
    for _ in 0..4 {
        app.get(&format!("/{code}")).await;
    }
    let stats = app.get_json(&format!("/urls/{}/stats", url["id"])).await;
    assert_eq!(stats["url"]["id"], url["id"]);
    assert_eq!(stats["redirect_count"], 4);
    assert_eq!(stats["events_by_type"]["created"], 1);
    assert!(stats["last_redirect_at"].is_string());
}

pub async fn pagination_and_filters(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    for n in 0..30 {
        let owner = if n % 3 == 0 {
            user["id"].clone()
        } else {
            Value::Null
        };
        app.create_url(json!({"original_url": format!("https://e.com/{n}"), "user_id": owner}))
            .await;
    }
    let res = app.get("/urls").await;
    assert_eq!(res.headers()["x-total-count"], "30");
    let first = expect_json(res, StatusCode::OK).await;
    assert_eq!(
        first.as_array().unwrap().len(),
        25,
        "default per_page is 25"
    );
    let page2 = app.get_json("/urls?page=2&per_page=25").await;
    assert_eq!(page2.as_array().unwrap().len(), 5);
    assert!(page2[0]["id"].as_i64() > first[24]["id"].as_i64());
    let capped = app.get_json("/urls?per_page=1000").await;
    assert_eq!(
        capped.as_array().unwrap().len(),
        30,
        "per_page is capped at 100, not refused"
    );
    let beyond = app.get_json("/urls?page=9").await;
    assert_eq!(beyond, json!([]));
    for bad in [
        "page=0",
        "page=-1",
        "page=x",
        "per_page=0",
        "per_page=abc",
        "user_id=abc",
        "is_active=maybe",
    ] {
        expect_error(
            app.get(&format!("/urls?{bad}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let res = app.get(&format!("/urls?user_id={}", user["id"])).await;
    assert_eq!(res.headers()["x-total-count"], "10");
    let mine = expect_json(res, StatusCode::OK).await;
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|u| u["user_id"] == user["id"])
    );
    let some_id = mine[0]["id"].as_i64().unwrap();
    app.delete(&format!("/urls/{some_id}")).await;
    let res = app
        .get(&format!("/urls?user_id={}&is_active=false", user["id"]))
        .await;
    assert_eq!(res.headers()["x-total-count"], "1");
    let res = app.get("/urls?is_active=true").await;
    assert_eq!(res.headers()["x-total-count"], "29");
    // By code: the one link, exact and case-sensitive; with the other filters, or none.
    let code = mine[1]["short_code"].as_str().unwrap();
    let found = app.get_json(&format!("/urls?short_code={code}")).await;
    assert_eq!(found, json!([mine[1]]));
    let with_user = app
        .get_json(&format!("/urls?short_code={code}&user_id={}", user["id"]))
        .await;
    assert_eq!(with_user, found);
    let inactive = app
        .get_json(&format!("/urls?short_code={code}&is_active=false"))
        .await;
    assert_eq!(inactive, json!([]));
    let other_case = code.to_ascii_uppercase();
    if other_case != code {
        let none = app
            .get_json(&format!("/urls?short_code={other_case}"))
            .await;
        assert_eq!(none, json!([]), "codes are case-sensitive");
    }
    assert_eq!(app.get_json("/urls?short_code=").await, json!([]));
    // Keyset paging: the rows after an id, any depth.
    let after = first[24]["id"].as_i64().unwrap();
    let next = app.get_json(&format!("/urls?after_id={after}")).await;
    assert_eq!(next, page2);
    for bad in [
        "after_id=x",
        "after_id=3&page=2",
        "page=100000&per_page=100",
    ] {
        expect_error(
            app.get(&format!("/urls?{bad}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let users = app.get("/users?per_page=1").await;
    assert_eq!(users.headers()["x-total-count"], "1");
}

/// Targets a reader and a browser could read differently, or that point
/// into the network the service runs in, are refused on creation and on
/// change; a deployment may allow private targets and deny domains.
pub async fn hostile_targets_are_refused(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://example.com/fine").await;
    let hostile = [
        "https://good.example@evil.example/x",
        "https://evil.example\\@good.example/",
        "https://example.com/\u{202E}gpj.exe",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/admin",
    ];
    for raw in hostile {
        let res = app.post("/urls", json!({ "original_url": raw })).await;
        let error = expect_error(res, StatusCode::BAD_REQUEST).await;
        assert!(error.contains("original_url"), "{raw}: {error}");
        let res = app
            .put(
                &format!("/urls/{}", url["id"]),
                json!({ "original_url": raw }),
            )
            .await;
        expect_error(res, StatusCode::BAD_REQUEST).await;
    }
    let unchanged = app.get_json(&format!("/urls/{}", url["id"])).await;
    assert_eq!(unchanged["original_url"], "https://example.com/fine");
    let listed = app.get("/urls").await;
    assert_eq!(listed.headers()["x-total-count"], "1");

    let db = app.db.clone();
    drop(app);
    let flags = [
        "--auth-mode",
        "open",
        "--allow-private-targets",
        "true",
        "--denied-target-domains",
        "evil.example,spam.example",
    ];
    let app = TestApp::start(db, &flags).await;
    app.link("http://169.254.169.254/latest/meta-data/").await;
    let res = app
        .post(
            "/urls",
            json!({ "original_url": "https://a.spam.example/" }),
        )
        .await;
    let error = expect_error(res, StatusCode::BAD_REQUEST).await;
    assert!(error.contains("spam.example"), "{error}");
}
