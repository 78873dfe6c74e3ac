//! API keys for teams: issuing, scopes, rotation, revocation, expiry, and
//! who each event says made it.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use shortener::config::AuthMode;

use crate::common::{Backend, TestApp, TestDatabase, expect_error, expect_json};

/// A request to `app` with `key` (not the admin key).
async fn call(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let req = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(key);
    let req = match body {
        Some(body) => req.json(&body),
        None => req,
    };
    req.send().await.unwrap()
}

/// Issues a key with the admin key; the answer's JSON.
async fn issue(app: &TestApp, body: Value) -> Value {
    expect_json(app.post("/keys", body).await, StatusCode::CREATED).await
}

fn secret(issued: &Value) -> String {
    issued["secret"].as_str().unwrap().to_owned()
}

pub async fn keys_are_shown_once_and_kept_only_as_a_hash(backend: Backend) {
    let app = TestApp::with_auth(backend, AuthMode::ApiKey).await;
    let issued = issue(&app, json!({"name": "ci pipeline", "scope": "admin"})).await;
    let key = secret(&issued);
    assert!(key.starts_with("shk_") && key.len() == 36, "{key}");
    assert_eq!(issued["prefix"], key[..12]);
    assert_eq!(issued["scope"], "admin");
    assert!(issued["expires_at"].is_null());
    // Never shown again: not by id, not in the list.
    let id = issued["id"].as_i64().unwrap();
    let shown = app.get_json(&format!("/keys/{id}")).await;
    assert!(shown.get("secret").is_none(), "{shown}");
    let listed = app.get_json("/keys").await;
    assert!(!listed.to_string().contains(&key[12..]), "{listed}");
    // And it works, as an admin key.
    let res = call(&app, &key, Method::GET, "/users", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Its use is recorded.
    let shown = app.get_json(&format!("/keys/{id}")).await;
    assert!(shown["last_used_at"].is_string(), "{shown}");

    // Bad requests change nothing.
    for (body, field) in [
        (json!({"name": "", "scope": "admin"}), "name"),
        (json!({"name": "x", "scope": "root"}), "scope"),
        (json!({"name": "x", "scope": "user"}), "user_id"),
        (
            json!({"name": "x", "scope": "admin", "user_id": 1}),
            "user_id",
        ),
        (
            json!({"name": "x", "scope": "admin", "expires_in_days": 0}),
            "expires_in_days",
        ),
    ] {
        let message = expect_error(app.post("/keys", body).await, StatusCode::BAD_REQUEST).await;
        assert!(message.starts_with(field), "{message}");
    }
    let res = app
        .post(
            "/keys",
            json!({"name": "x", "scope": "user", "user_id": 999_999}),
        )
        .await;
    expect_error(res, StatusCode::NOT_FOUND).await;
    let listed = app.get("/keys").await;
    assert_eq!(listed.headers()["x-total-count"], "2"); // ADMIN_API_KEY's row and ours
}

pub async fn a_user_key_sees_and_changes_only_its_user(backend: Backend) {
    let app = TestApp::with_auth(backend, AuthMode::ApiKey).await;
    let ada = app.create_user("ada", "ada@example.com").await;
    let bob = app.create_user("bob", "bob@example.com").await;
    let (ada_id, bob_id) = (ada["id"].as_i64().unwrap(), bob["id"].as_i64().unwrap());
    let ada_url = app
        .create_url(json!({"original_url": "https://e.com/ada", "user_id": ada_id}))
        .await;
    let bob_url = app
        .create_url(json!({"original_url": "https://e.com/bob", "user_id": bob_id}))
        .await;
    let anon_url = app.link("https://e.com/nobody").await;
    let key = secret(
        &issue(
            &app,
            json!({"name": "ada's", "scope": "user", "user_id": ada_id}),
        )
        .await,
    );
    let get = |path: String| {
        let key = key.clone();
        let app = &app;
        async move { call(app, &key, Method::GET, &path, None).await }
    };

    // Lists are filtered to ada.
    let urls = expect_json(get("/urls".into()).await, StatusCode::OK).await;
    let ids: Vec<_> = urls
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].clone())
        .collect();
    assert_eq!(ids, vec![ada_url["id"].clone()]);
    // By code too: another user's code is not found (the ShortLink sync relies on it to
    // tell a code of its own from one made by someone else).
    for (url, found) in [(&ada_url, 1), (&bob_url, 0), (&anon_url, 0)] {
        let code = url["short_code"].as_str().unwrap();
        let list = expect_json(
            get(format!("/urls?short_code={code}")).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(list.as_array().unwrap().len(), found, "{code}: {list}");
    }
    let users = expect_json(get("/users".into()).await, StatusCode::OK).await;
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["id"], ada_id);
    let events = expect_json(get("/events".into()).await, StatusCode::OK).await;
    assert!(!events.as_array().unwrap().is_empty());
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_id"] == ada_id),
        "{events}"
    );

    // Anyone else's data is 403, whichever way it is asked for; users and
    // keys are the admin's.
    let mut refused: Vec<(Method, String, Option<Value>)> = Vec::new();
    for url in [&bob_url, &anon_url] {
        let id = url["id"].as_i64().unwrap();
        for path in ["", "/stats", "/events"] {
            refused.push((Method::GET, format!("/urls/{id}{path}"), None));
        }
        let deactivate = json!({"is_active": false});
        refused.push((Method::PUT, format!("/urls/{id}"), Some(deactivate)));
        refused.push((Method::DELETE, format!("/urls/{id}"), None));
        let note = json!({"url_id": id, "user_id": ada_id, "event_type": "note"});
        refused.push((Method::POST, "/events".into(), Some(note)));
        refused.push((Method::GET, format!("/events?url_id={id}"), None));
    }
    for path in [
        format!("/urls?user_id={bob_id}"),
        format!("/events?user_id={bob_id}"),
        format!("/users/{bob_id}"),
        "/keys".into(),
    ] {
        refused.push((Method::GET, path, None));
    }
    let bobs = json!({"original_url": "https://e.com/x", "user_id": bob_id});
    let eve = json!({"username": "eve", "email": "eve@example.com"});
    let admin_key = json!({"name": "more", "scope": "admin"});
    refused.extend([
        (Method::POST, "/urls".into(), Some(bobs)),
        (Method::POST, "/users".into(), Some(eve)),
        (Method::DELETE, format!("/users/{ada_id}"), None),
        (Method::POST, "/keys".into(), Some(admin_key)),
    ]);
    for (method, path, body) in refused {
        let res = call(&app, &key, method.clone(), &path, body).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {path}");
        expect_error(res, StatusCode::FORBIDDEN).await;
    }
    // Nothing of bob's changed.
    let bob_now = app.get_json(&format!("/urls/{}", bob_url["id"])).await;
    assert_eq!(bob_now, bob_url);
    assert_eq!(app.get("/keys").await.headers()["x-total-count"], "2");

    // Its own user's data it may read and change; what it creates is ada's.
    let own = format!("/urls/{}", ada_url["id"]);
    expect_json(get(own.clone()).await, StatusCode::OK).await;
    let res = call(
        &app,
        &key,
        Method::PUT,
        &own,
        Some(json!({"title": "mine"})),
    )
    .await;
    assert_eq!(expect_json(res, StatusCode::OK).await["title"], "mine");
    for (path, body) in [
        ("/urls", json!({"original_url": "https://e.com/new"})),
        ("/shorten", json!({"url": "https://e.com/quick"})),
    ] {
        let res = call(&app, &key, Method::POST, path, Some(body)).await;
        assert_eq!(
            expect_json(res, StatusCode::CREATED).await["user_id"],
            ada_id
        );
    }
    let body = json!({"url_id": ada_url["id"], "user_id": ada_id, "event_type": "note"});
    let res = call(&app, &key, Method::POST, "/events", Some(body)).await;
    expect_json(res, StatusCode::CREATED).await;
}

pub async fn read_only_keys_change_nothing(backend: Backend) {
    let app = TestApp::with_auth(backend, AuthMode::ApiKey).await;
    let (user, url) = app.user_with_link("https://e.com/ro").await;
    let key = secret(&issue(&app, json!({"name": "dashboard", "scope": "read-only"})).await);
    for path in [
        "/users",
        "/urls",
        "/events",
        &format!("/urls/{}/stats", url["id"]),
    ] {
        let res = call(&app, &key, Method::GET, path, None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let id = url["id"].as_i64().unwrap();
    for (method, path, body) in [
        (
            Method::POST,
            "/urls".to_owned(),
            Some(json!({"original_url": "https://e.com/n"})),
        ),
        (
            Method::POST,
            "/shorten".to_owned(),
            Some(json!({"url": "https://e.com/n"})),
        ),
        (
            Method::PUT,
            format!("/urls/{id}"),
            Some(json!({"title": "changed"})),
        ),
        (Method::DELETE, format!("/urls/{id}"), None),
        (Method::DELETE, format!("/users/{}", user["id"]), None),
        (
            Method::POST,
            "/events".to_owned(),
            Some(json!({"url_id": id, "user_id": user["id"], "event_type": "note"})),
        ),
        (
            Method::POST,
            "/keys".to_owned(),
            Some(json!({"name": "x", "scope": "admin"})),
        ),
    ] {
        let res = call(&app, &key, method.clone(), &path, body).await;
        let message = expect_error(res, StatusCode::FORBIDDEN).await;
        assert!(message.contains("read-only"), "{method} {path}: {message}");
    }
    assert_eq!(app.get_json(&format!("/urls/{id}")).await, url);
    assert_eq!(app.get("/urls").await.headers()["x-total-count"], "1");
    // Bound to a user, it reads only that user's data.
    let bound = secret(
        &issue(
            &app,
            json!({"name": "ada ro", "scope": "read-only", "user_id": user["id"]}),
        )
        .await,
    );
    let other = app.link("https://e.com/other").await;
    let res = call(
        &app,
        &bound,
        Method::GET,
        &format!("/urls/{}", other["id"]),
        None,
    )
    .await;
    expect_error(res, StatusCode::FORBIDDEN).await;
    let res = call(&app, &bound, Method::GET, &format!("/urls/{id}"), None).await;
    assert_eq!(res.status(), StatusCode::OK);
}

pub async fn keys_rotate_and_revoke_without_downtime(backend: Backend) {
    let app = TestApp::with_auth(backend, AuthMode::ApiKey).await;
    let old = issue(&app, json!({"name": "deploy", "scope": "admin"})).await;
    let new = issue(
        &app,
        json!({"name": "deploy (next)", "scope": "admin", "expires_in_days": 90}),
    )
    .await;
    assert!(new["expires_at"].is_string());
    // Both work at once: clients move over at their pace.
    for key in [&old, &new] {
        let res = call(&app, &secret(key), Method::GET, "/urls", None).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let old_id = old["id"].as_i64().unwrap();
    let res = app.delete(&format!("/keys/{old_id}")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // Refused at once on this replica (it had just been accepted), the
    // other still accepted; revoking again changes nothing.
    let res = call(&app, &secret(&old), Method::GET, "/urls", None).await;
    assert!(res.headers().contains_key("www-authenticate"));
    expect_error(res, StatusCode::UNAUTHORIZED).await;
    let res = call(&app, &secret(&new), Method::GET, "/urls", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let revoked = app.get_json(&format!("/keys/{old_id}")).await;
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(
        app.delete(&format!("/keys/{old_id}")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get_json(&format!("/keys/{old_id}")).await["revoked_at"],
        revoked["revoked_at"]
    );
    // ADMIN_API_KEY is replaced by changing it, not revoked here.
    let keys = app.get_json("/keys").await;
    let bootstrap = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["bootstrap"] == true)
        .unwrap();
    let res = app.delete(&format!("/keys/{}", bootstrap["id"])).await;
    expect_error(res, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        app.delete("/keys/999999").await.status(),
        StatusCode::NOT_FOUND
    );
}

pub async fn expired_keys_and_deleted_users_keys_are_refused(backend: Backend) {
    let db = std::sync::Arc::new(TestDatabase::new(backend).await);
    let app = TestApp::on(db.clone(), AuthMode::ApiKey, None).await;
    let user = app.create_user("ada", "ada@example.com").await;
    let bound = secret(
        &issue(
            &app,
            json!({"name": "ada", "scope": "user", "user_id": user["id"]}),
        )
        .await,
    );
    let expiring = issue(
        &app,
        json!({"name": "short-lived", "scope": "admin", "expires_in_days": 1}),
    )
    .await;
    // A day later (the clock is the database's rows: move the expiry back).
    let expired_at = shortener::domain::now() - chrono::Duration::seconds(1);
    set_expiry(&db, expiring["id"].as_i64().unwrap(), expired_at).await;
    let res = call(&app, &secret(&expiring), Method::GET, "/urls", None).await;
    expect_error(res, StatusCode::UNAUTHORIZED).await;
    // A deleted user's keys stop working with them.
    assert_eq!(
        call(&app, &bound, Method::GET, "/urls", None)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.delete(&format!("/users/{}", user["id"])).await.status(),
        StatusCode::NO_CONTENT
    );
    // (another replica, which has not seen this key accepted)
    let other = TestApp::on(db, AuthMode::ApiKey, None).await;
    let res = call(&other, &bound, Method::GET, "/urls", None).await;
    expect_error(res, StatusCode::UNAUTHORIZED).await;
}

/// Moves a key's expiry, as time passing would.
async fn set_expiry(db: &TestDatabase, id: i64, at: shortener::domain::Timestamp) {
    if db.url.starts_with("sqlite") {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let url = db.migration_url.as_deref().unwrap_or(&db.url);
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

pub async fn events_say_who_wrote_them(backend: Backend) {
    let app = TestApp::with_auth(backend, AuthMode::ApiKey).await;
    let user = app.create_user("ada", "ada@example.com").await;
    let issued = issue(
        &app,
        json!({"name": "team", "scope": "user", "user_id": user["id"]}),
    )
    .await;
    let (key, key_id) = (secret(&issued), issued["id"].clone());
    let res = call(
        &app,
        &key,
        Method::POST,
        "/urls",
        Some(json!({"original_url": "https://e.com/a"})),
    )
    .await;
    let url = expect_json(res, StatusCode::CREATED).await;
    let id = url["id"].as_i64().unwrap();
    let res = call(
        &app,
        &key,
        Method::PUT,
        &format!("/urls/{id}"),
        Some(json!({"title": "t"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    // A client posts events that look like the service's own.
    for event_type in ["created", "updated", "deleted"] {
        let body = json!({"url_id": id, "user_id": user["id"], "event_type": event_type});
        let res = call(&app, &key, Method::POST, "/events", Some(body)).await;
        let event = expect_json(res, StatusCode::CREATED).await;
        assert_eq!(event["source"], "client");
        assert_eq!(event["key_id"], key_id);
    }
    let events = app
        .get_json(&format!("/events?url_id={id}&source=service"))
        .await;
    let kinds: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "updated"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["key_id"] == key_id && e["source"] == "service"),
        "{events}"
    );
    let all = app.get(&format!("/events?url_id={id}")).await;
    assert_eq!(all.headers()["x-total-count"], "5");
    // Counts are the service's alone.
    let stats = app.get_json(&format!("/urls/{id}/stats")).await;
    assert_eq!(stats["events_by_type"], json!({"created": 1, "updated": 1}));
    // ADMIN_API_KEY's changes name its row.
    let res = app.delete(&format!("/urls/{id}")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let deleted = app
        .get_json(&format!(
            "/events?url_id={id}&event_type=deleted&source=service"
        ))
        .await;
    let keys = app.get_json("/keys").await;
    let bootstrap = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["bootstrap"] == true)
        .unwrap();
    assert_eq!(deleted[0]["key_id"], bootstrap["id"]);
    expect_error(
        app.get("/events?source=someone").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}
