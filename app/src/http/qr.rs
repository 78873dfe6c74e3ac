//! `GET /urls/{id}/qr`: the link's short URL as a QR code, for print (SVG) or for a page
//! (PNG). The code is drawn by the `qrcode` crate and the PNG encoded by `image`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use qrcode::{EcLevel, QrCode};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{PathId, QueryParams};
use super::params::{PngImage, QrParams, UrlId};
use super::state::AppState;
use super::urls::{short_url, visible_url};
use crate::keys::Caller;

/// The image formats a QR code is drawn in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QrFormat {
    Svg,
    Png,
}

impl QrFormat {
    /// The names `format=` takes, in the order the OpenAPI document lists them.
    pub const NAMES: [&'static str; 2] = ["svg", "png"];

    fn parse(name: &str) -> Option<Self> {
        match name {
            "svg" => Some(Self::Svg),
            "png" => Some(Self::Png),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Svg => "image/svg+xml",
            Self::Png => "image/png",
        }
    }
}

/// The sizes `size=` takes, in pixels across (quiet zone included).
pub const MIN_SIZE: i64 = 64;
pub const MAX_SIZE: i64 = 2048;
pub const DEFAULT_SIZE: i64 = 256;

/// Draws `text` as a QR code (error correction level M: a quarter of a printed code may be
/// smudged) in `format`, `size` pixels across at the least: modules are whole pixels, so the
/// image is the smallest such square of at least `size`.
pub fn draw(text: &str, format: QrFormat, size: u32) -> Result<Vec<u8>, QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)?;
    match format {
        QrFormat::Svg => Ok(code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(size, size)
            .build()
            .into_bytes()),
        QrFormat::Png => {
            let image = code
                .render::<image::Luma<u8>>()
                .min_dimensions(size, size)
                .build();
            let mut png = std::io::Cursor::new(Vec::new());
            image.write_to(&mut png, image::ImageFormat::Png)?;
            Ok(png.into_inner())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the text does not fit in a QR code: {0}")]
    TooLong(#[from] qrcode::types::QrError),
    #[error("PNG encoding failed: {0}")]
    Png(#[from] image::ImageError),
}

/// The link's short URL (under `PUBLIC_BASE_URL`, else the request's `Host`) as a QR code.
/// Inactive, expired and used-up links have one too: a code already printed keeps its
/// meaning, and the link may be turned back on.
#[utoipa::path(get, path = "/urls/{id}/qr", tag = "urls", params(UrlId, QrParams),
    responses((status = 200, description = "The QR code of the link's short URL",
                  content((String = "image/svg+xml"), (PngImage = "image/png"))),
              (status = 400, body = ErrorBody, description = "A bad format or size"),
              (status = 404, body = ErrorBody)))]
pub async fn qr(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId,
    headers: HeaderMap,
    query: QueryParams,
) -> ApiResult<Response> {
    let format = match query.text("format") {
        None => QrFormat::Svg,
        Some(name) => QrFormat::parse(&name).ok_or_else(|| {
            ApiError::invalid_field(
                "format",
                format!("must be one of {}", QrFormat::NAMES.join(", ")),
            )
        })?,
    };
    let size = query.int("size")?.unwrap_or(DEFAULT_SIZE);
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return Err(ApiError::invalid_field(
            "size",
            format!("must be from {MIN_SIZE} to {MAX_SIZE} (pixels across)"),
        ));
    }
    let size = u32::try_from(size).map_err(|_| ApiError::Internal)?;
    let url = visible_url(&state, caller, id).await?;
    let text = short_url(&state, &headers, &url.short_code);
    // Up to 2048² pixels: drawn off the request threads.
    let image = tokio::task::spawn_blocking(move || draw(&text, format, size))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(|error| {
            tracing::error!(url_id = id, %error, "QR code not drawn");
            ApiError::Internal
        })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        image,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_png_decodes_to_the_text_it_was_drawn_from() {
        let text = "https://sho.rt/Ab3_x-Z";
        for size in [MIN_SIZE, DEFAULT_SIZE, 301] {
            let size = u32::try_from(size).expect("small");
            let png = draw(text, QrFormat::Png, size).expect("drawn");
            let image = image::load_from_memory(&png).expect("a PNG").to_luma8();
            assert!(image.width() >= size && image.width() == image.height());
            let mut prepared = rqrr::PreparedImage::prepare(image);
            let grids = prepared.detect_grids();
            assert_eq!(grids.len(), 1);
            let (_, content) = grids[0].decode().expect("decodes");
            assert_eq!(content, text);
        }
    }

    #[test]
    fn an_svg_is_square_and_at_least_the_size_asked() {
        let svg = String::from_utf8(draw("https://sho.rt/abc", QrFormat::Svg, 256).expect("drawn"))
            .expect("text");
        assert!(svg.contains("<svg"), "{svg}");
        let width = svg
            .split("width=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|w| w.parse::<u32>().ok())
            .expect("a width");
        assert!(width >= 256, "{width}");
        assert!(svg.contains(&format!("height=\"{width}\"")), "{svg}");
    }

    #[test]
    fn text_too_long_for_any_code_is_an_error_not_a_panic() {
        let text = "x".repeat(8000);
        assert!(matches!(
            draw(&text, QrFormat::Png, 64),
            Err(QrError::TooLong(_))
        ));
    }
}
