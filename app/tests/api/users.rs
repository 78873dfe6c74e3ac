//! Users: CRUD, validation, uniqueness, deletion and bulk import.

use crate::common::{Backend, TestApp, expect_error, expect_json};
use reqwest::StatusCode;
use serde_json::json;

pub async fn users_crud(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    let id = user["id"].as_i64().unwrap();
    assert_eq!(user["username"], "ada");
    assert_eq!(user["email"], "ada@example.com");
    let created = user["created_at"].as_str().unwrap();
    assert_eq!(created.len(), 19, "YYYY-MM-DDTHH:MM:SS, got {created}");
    assert_eq!(&created[10..11], "T");

    let fetched = app.get_json(&format!("/users/{id}")).await;
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

pub async fn user_validation(backend: Backend) {
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
    let unchanged = app.get_json(&format!("/users/{id}")).await;
    assert_eq!(unchanged, user, "a refused update changes nothing");
}

pub async fn duplicate_email_is_conflict_case_insensitively(backend: Backend) {
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

pub async fn usernames_may_repeat(backend: Backend) {
    let app = TestApp::new(backend).await;
    let a = app.create_user("sam", "sam1@example.com").await;
    let b = app.create_user("sam", "sam2@example.com").await;
    assert_ne!(a["id"], b["id"]);
}

pub async fn empty_user_update_is_refused(backend: Backend) {
    let app = TestApp::new(backend).await;
    let user = app.create_user("ada", "ada@example.com").await;
    expect_error(
        app.put(&format!("/users/{}", user["id"]), json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

pub async fn deleting_a_user_deactivates_their_urls_and_frees_the_email(backend: Backend) {
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
    let after = app.get_json(&format!("/urls/{}", url["id"])).await;
    assert_eq!(after["is_active"], false);
    assert_eq!(after["user_id"], uid);
    expect_error(app.get(&format!("/{code}")).await, StatusCode::NOT_FOUND).await;
    let events = app
        .get_json(&format!("/events?url_id={}&event_type=deleted", url["id"]))
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

pub async fn bulk_user_import(backend: Backend) {
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
    let ada = app.get_json("/users/10").await;
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

async fn upload_users(app: &TestApp, csv: String) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::text(csv).file_name("users.csv"),
    );
    app.request(reqwest::Method::POST, "/users/bulk")
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// A large file of bad lines answers with a bounded report (the first 100
/// lines, each message cut short, then a count), and a file of more than
/// 100 000 lines is refused whole.
pub async fn bulk_import_reports_are_bounded(backend: Backend) {
    let app = TestApp::new(backend).await;
    let junk = "x".repeat(2_000);
    let mut csv = String::from("username,email\n");
    for n in 0..5_000 {
        csv.push_str(&format!("u{n},{junk}{n}\n"));
    }
    csv.push_str("good,good@example.com\n");
    let res = upload_users(&app, csv).await;
    let bytes = res.content_length();
    let report = expect_json(res, StatusCode::CREATED).await;
    assert_eq!(report["imported"], 1);
    assert_eq!(report["errors"].as_array().unwrap().len(), 100);
    assert_eq!(report["errors_omitted"], 4_900);
    assert!(
        report["errors"][0]["error"]
            .as_str()
            .unwrap()
            .chars()
            .count()
            <= 201
    );
    assert!(
        bytes.is_some_and(|b| b < 64 * 1024),
        "report of {bytes:?} bytes"
    );

    let mut csv = String::from("username,email\n");
    for n in 0..100_001 {
        csv.push_str(&format!("u,u{n}@e.co\n"));
    }
    let error = expect_error(upload_users(&app, csv).await, StatusCode::BAD_REQUEST).await;
    assert!(error.contains("more than 100000 lines"), "{error}");
    assert_eq!(app.get("/users").await.headers()["x-total-count"], "1");
}
