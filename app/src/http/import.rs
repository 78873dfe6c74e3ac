//! `POST /urls/import`: links from another shortener's CSV export (Bitly, YOURLS, Shlink) or
//! from this one's, each with its own code, idempotently.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{QueryParams, csv_upload};
use super::params::{ImportOwner, LinksUpload};
use super::state::AppState;
use super::users::UPLOAD_LIMIT;
use crate::import::{MAX_IMPORTED_LINES, read_links};
use crate::keys::Caller;
use crate::seed::csv::LineError;
use crate::store::{Imported, ImportedUrl};

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    /// Links created.
    imported: u64,
    /// Lines whose code already names a link to the same target (imported before): left
    /// as they are.
    existing: u64,
    /// Lines that were not imported, with the reason (a line that does not read, a target
    /// the deployment refuses, a code another link has): the first 100.
    errors: Vec<LineError>,
    /// Such lines beyond those listed in `errors`.
    errors_omitted: u64,
}

/// Imports links, each with its own code, from a CSV in multipart field `file`: a Bitly,
/// YOURLS, Shlink or Kutt export, or this service's own (`GET /urls/export`), recognised by
/// its column names. Idempotent: a code that already names a link to the same target is
/// left as it is (`existing`); a code another link has is reported, never overwritten. At
/// most 10 000 lines per file, written in one transaction.
#[utoipa::path(post, path = "/urls/import", tag = "urls", params(ImportOwner),
    request_body(content_type = "multipart/form-data", content = LinksUpload,
        description = "field `file`: a CSV of links"),
    responses((status = 200, body = ImportReport),
              (status = 400, body = ErrorBody, description = "No `file` field, a file without a target or code column, or more than 10 000 lines"),
              (status = 404, body = ErrorBody, description = "`user_id` names no user")))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<ImportReport>> {
    let owner = caller.user_filter(query.int("user_id")?)?;
    let file = csv_upload(form, UPLOAD_LIMIT).await?;
    // Up to 16 MiB of CSV: parsed on a blocking thread, not a runtime worker.
    let mut parsed =
        tokio::task::spawn_blocking(move || read_links(file.as_ref(), MAX_IMPORTED_LINES))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "CSV parser failed");
                ApiError::Internal
            })?
            .map_err(|e| ApiError::invalid_field("file", e))?;
    let mut lines = Vec::new();
    let mut urls = Vec::new();
    for row in std::mem::take(&mut parsed.rows) {
        // The deployment's target policy, as for any other link.
        if let Err(error) = state.target_policy.check(&row.target) {
            parsed.bad_line(row.line, format!("target: {error}"));
            continue;
        }
        lines.push(row.line);
        urls.push(ImportedUrl {
            code: row.code,
            original_url: row.target,
            title: row.title,
            created_at: row.created_at,
            expires_at: row.expires_at,
            max_visits: row.max_visits,
        });
    }
    let outcomes = state.links.import(owner, urls, caller.actor()).await?;
    let (mut imported, mut existing) = (0, 0);
    for (line, outcome) in lines.into_iter().zip(outcomes) {
        match outcome {
            Imported::New(_) => imported += 1,
            Imported::Existing => existing += 1,
            Imported::Taken => {
                parsed.bad_line(line, "short code: taken by another link".into());
            }
        }
    }
    parsed.errors.sort_by_key(|e| e.line);
    Ok(Json(ImportReport {
        imported,
        existing,
        errors: parsed.errors,
        errors_omitted: parsed.errors_omitted,
    }))
}
