//! Importing links from CSV exports (Bitly, YOURLS, Shlink, this service's own) through the
//! production serve path on every backend: idempotent, never overwriting, each imported link
//! redirecting at once.

use crate::common::{Backend, TestApp, expect_error, expect_json};
use reqwest::{Method, StatusCode};
use serde_json::Value;

async fn import(app: &TestApp, path: &str, csv: &str) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::text(csv.to_owned()).file_name("links.csv"),
    );
    app.request(Method::POST, path)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn location(app: &TestApp, code: &str) -> Option<String> {
    let res = app.get(&format!("/{code}")).await;
    (res.status() == StatusCode::FOUND)
        .then(|| res.headers()["location"].to_str().unwrap().to_owned())
}

pub async fn links_import_from_other_shorteners_idempotently(backend: Backend) {
    let app = TestApp::new(backend).await;
    // A code a replica has looked up and remembers as missing redirects once imported.
    assert_eq!(location(&app, "3xYz9").await, None);
    let taken = app
        .create_url(
            serde_json::json!({"original_url": "https://mine.example/", "short_code": "kept-1"}),
        )
        .await;
    let bitly = "Title,Long URL,Bitly Link,Created,Clicks\n\
                 Launch,https://e.com/launch,https://bit.ly/3xYz9,2024-01-02T03:04:05+0000,12\n\
                 Other,https://e.com/other,https://bit.ly/kept-1,2024-01-02T03:04:05+0000,1\n\
                 Bad,ftp://e.com/x,https://bit.ly/bad01,2024-01-02T03:04:05+0000,1\n\
                 Inside,http://10.0.0.1/x,https://bit.ly/priv1,2024-01-02T03:04:05+0000,1\n";
    let report = expect_json(import(&app, "/urls/import", bitly).await, StatusCode::OK).await;
    assert_eq!(report["imported"], 1, "{report}");
    assert_eq!(report["existing"], 0, "{report}");
    let errors: Vec<(i64, &str)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_i64().unwrap(), e["error"].as_str().unwrap()))
        .collect();
    assert_eq!(errors.len(), 3, "{report}");
    assert_eq!(errors[0].0, 3);
    assert!(errors[0].1.contains("taken by another link"), "{report}");
    assert!(errors[1].1.starts_with("target"), "{report}");
    assert!(errors[2].1.contains("private network"), "{report}");
    assert_eq!(
        location(&app, "3xYz9").await.as_deref(),
        Some("https://e.com/launch")
    );
    assert_eq!(
        location(&app, "kept-1").await.as_deref(),
        Some("https://mine.example/")
    );
    let links = app.get_json("/urls?per_page=100").await;
    let launch = links
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["short_code"] == "3xYz9")
        .unwrap()
        .clone();
    assert_eq!(launch["title"], "Launch");
    assert_eq!(launch["created_at"], "2024-01-02T03:04:05");
    let events = app
        .get_json(&format!(
            "/events?url_id={}&event_type=created",
            launch["id"]
        ))
        .await;
    assert_eq!(events[0]["details"]["imported"], true, "{events}");
    assert_eq!(taken["original_url"], "https://mine.example/");

    // Again: nothing changes, and it says so.
    let again = expect_json(import(&app, "/urls/import", bitly).await, StatusCode::OK).await;
    assert_eq!(
        (again["imported"].as_i64(), again["existing"].as_i64()),
        (Some(0), Some(1))
    );
    let count = |v: &Value| v.as_array().unwrap().len();
    assert_eq!(
        count(&app.get_json("/urls?per_page=100").await),
        count(&links)
    );

    // YOURLS and Shlink exports, and this service's own export read back.
    let yourls = "keyword,url,title,timestamp,ip,clicks\nhandbook,https://e.com/docs,Docs,2024-01-02 03:04:05,1.2.3.4,7\n";
    let shlink = "createdAt,domain,shortCode,shortUrl,longUrl,title,tags,visitsCount\n\
                  2024-01-02T03:04:05+00:00,,shl01,https://s.test/shl01,https://e.com/s,,,0\n";
    for csv in [yourls, shlink] {
        let report = expect_json(import(&app, "/urls/import", csv).await, StatusCode::OK).await;
        assert_eq!(report["imported"], 1, "{report}");
    }
    assert_eq!(
        location(&app, "handbook").await.as_deref(),
        Some("https://e.com/docs")
    );
    assert_eq!(
        location(&app, "shl01").await.as_deref(),
        Some("https://e.com/s")
    );
    let export = app.get("/urls/export").await.text().await.unwrap();
    let round_trip = expect_json(import(&app, "/urls/import", &export).await, StatusCode::OK).await;
    assert_eq!(round_trip["imported"], 0, "{round_trip}");
    assert_eq!(
        round_trip["existing"].as_i64().unwrap() as usize,
        count(&links) + 2
    );
}

pub async fn bad_imports_are_refused_with_the_reason(backend: Backend) {
    let app = TestApp::new(backend).await;
    for (csv, reason) in [
        ("title,clicks\nx,1\n", "no target column"),
        ("url,title\nhttps://e.com/,x\n", "no short code column"),
    ] {
        let message = expect_error(
            import(&app, "/urls/import", csv).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(message.contains(reason), "{message}");
    }
    let too_many = format!(
        "code,url\n{}",
        (0..10_001)
            .map(|i| format!("c{i:05},https://e.com/{i}\n"))
            .collect::<String>()
    );
    let message = expect_error(
        import(&app, "/urls/import", &too_many).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(message.contains("more than 10000 lines"), "{message}");
    assert_eq!(
        app.get_json("/urls").await,
        serde_json::json!([]),
        "nothing imported"
    );
    let message = expect_error(
        import(
            &app,
            "/urls/import?user_id=999999",
            "code,url\nabc,https://e.com/\n",
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(message.contains("user"), "{message}");
    let no_form = app
        .post_raw("/urls/import", "text/csv", "code,url\nabc,https://e.com/\n")
        .await;
    expect_error(no_form, StatusCode::BAD_REQUEST).await;
}
