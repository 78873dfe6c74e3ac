//! The HTTP contract, end to end over real HTTP, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, TestApp, expect_error, expect_json};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shortener::config::AuthMode;

every_backend!(
    request_ids_are_echoed_or_assigned_uniquely,
    concurrent_redirects_to_one_link_are_each_counted_once,
    health_reports_database_and_cache,
    users_crud,
    user_validation,
    duplicate_email_is_conflict_case_insensitively,
    usernames_may_repeat,
    deleting_a_user_deactivates_their_urls_and_frees_the_email,
    urls_crud_and_events,
    same_url_twice_gives_two_codes,
    redirect_records_an_event_visible_at_once,
    inactive_and_unknown_codes_do_not_redirect_or_record,
    update_reaches_the_redirect_at_once,
    deleting_a_url_is_soft_and_idempotent,
    url_validation_rules,
    custom_short_codes,
    bodies_that_are_not_objects_are_400,
    wrong_types_name_the_field,
    unknown_references_are_404,
    events_api,
    pagination_and_filters,
    bulk_user_import,
    shorten_quick_path,
    stats,
    errors_are_always_json,
    api_key_mode_guards_management_endpoints,
    openapi_document_lists_every_route,
    metrics_are_exported,
    head_requests_redirect_without_recording,
    clients_cannot_forge_redirect_events,
    empty_user_update_is_refused,
);

async fn health_reports_database_and_cache(backend: Backend) {
    let app = TestApp::new(backend).await;
    let body = expect_json(app.get("/health").await, StatusCode::OK).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    assert!(body["cache"].is_string());
    for probe in ["/livez", "/readyz"] {
        assert_eq!(app.get(probe).await.status(), StatusCode::OK);
    }
}

async fn users_crud(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    let id = user["id"].as_i64().unwrap();
    assert_eq!(user["username"], "ada");
    assert_eq!(user["email"], "ada@example.com");
    let created = user["created_at"].as_str().unwrap();
    assert_eq!(created.len(), 19, "YYYY-MM-DDTHH:MM:SS, got {created}");
    assert_eq!(&created[10..11], "T");

    let fetched = expect_json(app.get(&format!("/users/{id}")).await, StatusCode::OK).await;
    assert_eq!(fetched, user);

    let updated = expect_json(
        app.put(&format!("/users/{id}"), json!({"username": "ada2"}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["username"], "ada2");
    assert_eq!(updated["email"], "ada@example.com");

    let res = app.delete(&format!("/users/{id}")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    expect_error(
        app.get(&format!("/users/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_error(
        app.delete(&format!("/users/{id}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_error(
        app.put("/users/999", json!({"username": "x"})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_error(app.get("/users/abc").await, StatusCode::NOT_FOUND).await;
}

async fn user_validation(backend: Backend) {
    let app = TestApp::new(backend).await;
    for body in [
        json!({"username": "ada"}),
        json!({"email": "ada@example.com"}),
        json!({"username": "ada", "email": "not-an-email"}),
        json!({"username": 5, "email": "ada@example.com"}),
        json!({"username": "ada", "email": ["a@b.co"]}),
        json!({"username": "", "email": "ada@example.com"}),
    ] {
        expect_error(
            app.post("/users", body.clone()).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let user = app.create_user("ada", "ada@example.com").await;
    let id = user["id"].as_i64().unwrap();
    let msg = expect_error(
        app.put(&format!("/users/{id}"), json!({"email": 42})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("email"), "{msg}");
    let unchanged = expect_json(app.get(&format!("/users/{id}")).await, StatusCode::OK).await;
    assert_eq!(unchanged, user, "a refused update changes nothing");
}

async fn duplicate_email_is_conflict_case_insensitively(backend: Backend) {
    let app = TestApp::new(backend).await;
    app.create_user("ada", "ada@example.com").await;
    let res = app
        .post(
            "/users",
            json!({"username": "ada", "email": "ADA@example.com"}),
        )
        .await;
    expect_error(res, StatusCode::CONFLICT).await;
    let bob = app.create_user("bob", "bob@example.com").await;
    let res = app
        .put(
            &format!("/users/{}", bob["id"]),
            json!({"email": "ada@example.com"}),
        )
        .await;
    expect_error(res, StatusCode::CONFLICT).await;
}

async fn usernames_may_repeat(backend: Backend) {
    let app = TestApp::new(backend).await;
    let a = app.create_user("sam", "sam1@example.com").await;
    let b = app.create_user("sam", "sam2@example.com").await;
    assert_ne!(a["id"], b["id"]);
}

async fn deleting_a_user_deactivates_their_urls_and_frees_the_email(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    let uid = user["id"].as_i64().unwrap();
    let url = app
        .create_url(json!({"original_url": "https://example.com/a", "user_id": uid}))
        .await;
    let code = url["short_code"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/users/{uid}")).await.status(),
        StatusCode::NO_CONTENT
    );

    // The URL still exists (nothing dangles), is inactive, and says why.
    let after = expect_json(
        app.get(&format!("/urls/{}", url["id"])).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(after["is_active"], false);
    assert_eq!(after["user_id"], uid);
    expect_error(app.get(&format!("/{code}")).await, StatusCode::NOT_FOUND).await;
    let events = expect_json(
        app.get(&format!("/events?url_id={}&event_type=deleted", url["id"]))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(events.as_array().unwrap().len(), 1);
    assert_eq!(events[0]["details"], json!({"reason": "owner_deleted"}));

    // The address may sign up again.
    app.create_user("ada", "ada@example.com").await;
    // Events can no longer be attributed to the deleted user.
    let res = app
        .post(
            "/events",
            json!({"url_id": url["id"], "user_id": uid, "event_type": "click"}),
        )
        .await;
    expect_error(res, StatusCode::NOT_FOUND).await;
}

async fn urls_crud_and_events(backend: Backend) {
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

    let events = expect_json(app.get(&format!("/urls/{id}/events")).await, StatusCode::OK).await;
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

    let updates = expect_json(
        app.get(&format!("/events?url_id={id}&event_type=updated"))
            .await,
        StatusCode::OK,
    )
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
    let again = expect_json(
        app.get(&format!("/events?url_id={id}&event_type=updated"))
            .await,
        StatusCode::OK,
    )
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

async fn same_url_twice_gives_two_codes(backend: Backend) {
    let app = TestApp::new(backend).await;
    let a = app
        .create_url(json!({"original_url": "https://example.com/same"}))
        .await;
    let b = app
        .create_url(json!({"original_url": "https://example.com/same"}))
        .await;
    assert_ne!(a["id"], b["id"]);
    assert_ne!(a["short_code"], b["short_code"]);
    let code = a["short_code"].as_str().unwrap();
    assert!(
        code.len() >= 6 && code.chars().all(|c| c.is_ascii_alphanumeric()),
        "{code}"
    );
}

async fn redirect_records_an_event_visible_at_once(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    let url = app
        .create_url(json!({"url": "https://example.com/go", "user_id": user["id"]}))
        .await;
    let code = url["short_code"].as_str().unwrap();
    for n in 1..=3 {
        let res = app.get(&format!("/{code}")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(res.headers()["location"], "https://example.com/go");
        let events = expect_json(
            app.get(&format!("/events?url_id={}&event_type=redirect", url["id"]))
                .await,
            StatusCode::OK,
        )
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

async fn inactive_and_unknown_codes_do_not_redirect_or_record(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://example.com/off"}))
        .await;
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
    let redirects = expect_json(app.get("/events?event_type=redirect").await, StatusCode::OK).await;
    assert_eq!(redirects, json!([]));
}

async fn update_reaches_the_redirect_at_once(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://example.com/old"}))
        .await;
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

async fn deleting_a_url_is_soft_and_idempotent(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://example.com/del"}))
        .await;
    let id = url["id"].as_i64().unwrap();
    for _ in 0..2 {
        assert_eq!(
            app.delete(&format!("/urls/{id}")).await.status(),
            StatusCode::NO_CONTENT
        );
    }
    let after = expect_json(app.get(&format!("/urls/{id}")).await, StatusCode::OK).await;
    assert_eq!(after["is_active"], false);
    let deleted = expect_json(
        app.get(&format!("/events?url_id={id}&event_type=deleted"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        deleted.as_array().unwrap().len(),
        1,
        "a repeated delete records nothing"
    );
    assert_eq!(deleted[0]["details"], json!({"reason": "user_requested"}));
    expect_error(app.delete("/urls/99999").await, StatusCode::NOT_FOUND).await;
}

async fn url_validation_rules(backend: Backend) {
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

async fn custom_short_codes(backend: Backend) {
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

async fn bodies_that_are_not_objects_are_400(backend: Backend) {
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
    let url = app
        .create_url(json!({"original_url": "https://example.com"}))
        .await;
    let res = app
        .request(reqwest::Method::PUT, &format!("/urls/{}", url["id"]))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    expect_error(res, StatusCode::BAD_REQUEST).await;
}

async fn wrong_types_name_the_field(backend: Backend) {
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
    let url = app
        .create_url(json!({"original_url": "https://e.com"}))
        .await;
    let res = app
        .put(&format!("/urls/{}", url["id"]), json!({"is_active": "yes"}))
        .await;
    assert!(
        expect_error(res, StatusCode::BAD_REQUEST)
            .await
            .contains("is_active")
    );
}

async fn unknown_references_are_404(backend: Backend) {
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
    let url = app
        .create_url(json!({"original_url": "https://e.com"}))
        .await;
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

async fn events_api(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    let url = app
        .create_url(json!({"original_url": "https://e.com", "user_id": user["id"]}))
        .await;
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
    let filtered = expect_json(
        app.get(&format!(
            "/events?user_id={}&event_type=qr_scan",
            user["id"]
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    expect_error(app.get("/events?url_id=abc").await, StatusCode::BAD_REQUEST).await;
}

async fn pagination_and_filters(backend: Backend) {
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
    let page2 = expect_json(app.get("/urls?page=2&per_page=25").await, StatusCode::OK).await;
    assert_eq!(page2.as_array().unwrap().len(), 5);
    assert!(page2[0]["id"].as_i64() > first[24]["id"].as_i64());
    let capped = expect_json(app.get("/urls?per_page=1000").await, StatusCode::OK).await;
    assert_eq!(
        capped.as_array().unwrap().len(),
        30,
        "per_page is capped at 100, not refused"
    );
    let beyond = expect_json(app.get("/urls?page=9").await, StatusCode::OK).await;
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
    // Keyset paging: the rows after an id, any depth.
    let after = first[24]["id"].as_i64().unwrap();
    let next = expect_json(
        app.get(&format!("/urls?after_id={after}")).await,
        StatusCode::OK,
    )
    .await;
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

async fn bulk_user_import(backend: Backend) {
    let app = TestApp::new(backend).await;
    app.create_user("existing", "taken@example.com").await;
    let csv = "id,username,email,created_at\n\
               10,ada,ada@example.com,2025-01-02 03:04:05\n\
               11,bob,not-an-email,2025-01-02 03:04:05\n\
               12,cy,TAKEN@example.com,2025-01-02 03:04:05\n\
               13,ada,ada2@example.com,\n";
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::text(csv).file_name("users.csv"),
    );
    let res = app
        .request(reqwest::Method::POST, "/users/bulk")
        .multipart(form)
        .send()
        .await
        .unwrap();
    let report = expect_json(res, StatusCode::CREATED).await;
    assert_eq!(report["count"], 2);
    assert_eq!(report["imported"], 2);
    assert_eq!(report["duplicates"], 1);
    assert_eq!(report["errors"][0]["line"], 3);
    let ada = expect_json(app.get("/users/10").await, StatusCode::OK).await;
    assert_eq!(ada["created_at"], "2025-01-02T03:04:05");
    // New rows get ids past the imported ones.
    let next = app.create_user("new", "new@example.com").await;
    assert!(next["id"].as_i64().unwrap() > 13);

    // Without ids, and with columns in another order.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::text("email,username\nz@example.com,zed\n").file_name("u.csv"),
    );
    let res = app
        .request(reqwest::Method::POST, "/users/bulk")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(expect_json(res, StatusCode::CREATED).await["imported"], 1);

    let empty = reqwest::multipart::Form::new().text("other", "x");
    let res = app
        .request(reqwest::Method::POST, "/users/bulk")
        .multipart(empty)
        .send()
        .await
        .unwrap();
    assert!(
        expect_error(res, StatusCode::BAD_REQUEST)
            .await
            .contains("file")
    );
    let res = app.post("/users/bulk", json!({"file": "x"})).await;
    assert!(
        expect_error(res, StatusCode::BAD_REQUEST)
            .await
            .contains("multipart")
    );
}

async fn shorten_quick_path(backend: Backend) {
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

async fn stats(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://e.com/s"}))
        .await;
    let code = url["short_code"].as_str().unwrap();
    for _ in 0..4 {
        app.get(&format!("/{code}")).await;
    }
    let stats = expect_json(
        app.get(&format!("/urls/{}/stats", url["id"])).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(stats["url"]["id"], url["id"]);
    assert_eq!(stats["redirect_count"], 4);
    assert_eq!(stats["events_by_type"]["created"], 1);
    assert!(stats["last_redirect_at"].is_string());
}

async fn errors_are_always_json(backend: Backend) {
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

async fn api_key_mode_guards_management_endpoints(backend: Backend) {
    let app = TestApp::with_auth(backend, AuthMode::ApiKey).await;
    let url = app
        .create_url(json!({"original_url": "https://e.com/k"}))
        .await;
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
    assert_eq!(
        expect_json(app.get("/urls/1").await, StatusCode::OK).await["is_active"],
        true
    );
}

async fn openapi_document_lists_every_route(backend: Backend) {
    let app = TestApp::new(backend).await;
    let doc = expect_json(app.get("/openapi.json").await, StatusCode::OK).await;
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

async fn metrics_are_exported(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://e.com/m"}))
        .await;
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

async fn head_requests_redirect_without_recording(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app
        .create_url(json!({"original_url": "https://e.com/h"}))
        .await;
    let res = app
        .request(
            reqwest::Method::HEAD,
            &format!("/{}", url["short_code"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let stats = expect_json(
        app.get(&format!("/urls/{}/stats", url["id"])).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(stats["redirect_count"], 0);
}

async fn clients_cannot_forge_redirect_events(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    let url = app
        .create_url(json!({"original_url": "https://e.com/f", "user_id": user["id"]}))
        .await;
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

async fn empty_user_update_is_refused(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    expect_error(
        app.put(&format!("/users/{}", user["id"]), json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

async fn concurrent_redirects_to_one_link_are_each_counted_once(backend: Backend) {
    const REDIRECTS: usize = 300;
    let app = std::sync::Arc::new(TestApp::new(backend).await);
    let url = app
        .create_url(json!({"original_url": "https://e.com/hot"}))
        .await;
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
    let stats = expect_json(
        app.get(&format!("/urls/{}/stats", url["id"])).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(stats["redirect_count"], REDIRECTS);
    let mut ids = std::collections::HashSet::new();
    for page in 1..=REDIRECTS.div_ceil(100) + 1 {
        let events = expect_json(
            app.get(&format!(
                "/events?url_id={}&event_type=redirect&per_page=100&page={page}",
                url["id"]
            ))
            .await,
            StatusCode::OK,
        )
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

async fn request_ids_are_echoed_or_assigned_uniquely(backend: Backend) {
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
