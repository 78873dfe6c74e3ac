//! `GET /urls/{id}/qr`: the link's short URL as a QR code, read back by a decoder.

use crate::common::{Backend, TestApp, expect_error};
use reqwest::StatusCode;
use shortener::config::AuthMode;

/// The text the QR code at `path` holds.
async fn decode(app: &TestApp, path: &str) -> String {
    let res = app.get(path).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    assert_eq!(res.headers()["content-type"], "image/png");
    let png = res.bytes().await.unwrap();
    let image = image::load_from_memory(&png).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "{path}");
    grids[0].decode().unwrap().1
}

pub async fn a_links_qr_code_holds_its_short_url(backend: Backend) {
    let app = TestApp::new(backend).await;
    let url = app.link("https://e.com/printed").await;
    let code = url["short_code"].as_str().unwrap();
    let path = format!("/urls/{}/qr", url["id"]);
    // Without PUBLIC_BASE_URL the short URL is under the Host the request came to.
    let short_url = format!("{}/{code}", app.base);
    assert_eq!(decode(&app, &format!("{path}?format=png")).await, short_url);
    let png = app.get(&format!("{path}?format=png&size=512")).await;
    let image = image::load_from_memory(&png.bytes().await.unwrap()).unwrap();
    assert!(image.width() >= 512 && image.width() == image.height());
    // SVG is the default.
    let svg = app.get(&path).await;
    assert_eq!(svg.status(), StatusCode::OK);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().contains("<svg"));
    // A deactivated link keeps its code: one already printed still means the same link.
    assert_eq!(
        app.delete(&format!("/urls/{}", url["id"])).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(decode(&app, &format!("{path}?format=png")).await, short_url);

    for (query, field) in [
        ("format=gif", "format"),
        ("size=63", "size"),
        ("size=2049", "size"),
        ("size=big", "size"),
    ] {
        let message = expect_error(
            app.get(&format!("{path}?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(message.contains(field), "{query}: {message}");
    }
    expect_error(app.get("/urls/999999/qr").await, StatusCode::NOT_FOUND).await;
}

pub async fn qr_codes_need_a_key_that_may_see_the_link(backend: Backend) {
    let app = TestApp::with_auth(backend, AuthMode::ApiKey).await;
    let url = app.link("https://e.com/secret").await;
    let path = format!("/urls/{}/qr", url["id"]);
    let anonymous = app
        .client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let text = decode(&app, &format!("{path}?format=png")).await;
    assert!(
        text.ends_with(url["short_code"].as_str().unwrap()),
        "{text}"
    );
}
