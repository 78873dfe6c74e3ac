use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::domain::now;
use crate::store::Click;

/// Follows a short code: 302 to the original URL, recording a `redirect`
/// event. Unknown and inactive codes are 404 and record nothing. `HEAD`
/// answers the same but records nothing: link checkers are not visitors.
#[utoipa::path(get, path = "/{short_code}", tag = "redirect",
    responses((status = 302, description = "Location: the original URL"),
              (status = 404, body = ErrorBody)))]
pub async fn follow(
    State(state): State<AppState>,
    method: Method,
    Path(code): Path<String>,
) -> ApiResult<Response> {
    let target = state.store.resolve(&code).await?;
    let Some(target) = target.filter(|t| t.is_active) else {
        state
            .metrics
            .redirects
            .with_label_values(&["not_found"])
            .inc();
        return Err(ApiError::NotFound(
            "no active link with this short code".into(),
        ));
    };
    let location = HeaderValue::from_str(&target.original_url).map_err(|_| {
        tracing::error!(
            url_id = target.url_id,
            "stored URL is not a valid header value"
        );
        ApiError::Internal
    })?;
    let click = Click {
        url_id: target.url_id,
        user_id: target.user_id,
        short_code: code,
        at: now(),
    };
    if method == Method::HEAD {
        // Not a visit.
    } else if let Err(err) = state.clicks.record(click).await {
        // The visitor still gets their redirect; the lost click is counted
        // and logged so that it is never lost silently.
        state.metrics.clicks_dropped.inc();
        tracing::error!(error = %err, url_id = target.url_id, "click not recorded");
    }
    state.metrics.redirects.with_label_values(&["found"]).inc();
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}
