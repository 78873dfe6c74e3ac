//! Streamed CSV exports of links and events: the table is walked in keyset pages of
//! [`CHUNK`] rows (one index seek each, no transaction held between them), and each page is
//! written to the response as soon as it is read, so memory stays flat whatever the size.
//! A failure after the first page can no longer change the status: it is logged and the
//! response is cut short (no final chunk), which every HTTP client reports as an error.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;

use super::error::{ApiResult, ErrorBody};
use super::extract::QueryParams;
use super::params::{EventFilters, UrlFilters};
use super::state::AppState;
use super::urls::url_filter;
use crate::domain::{Timestamp, timestamp};
use crate::keys::Caller;
use crate::store::{Event, EventFilter, StoreResult, Url, UrlFilter};

/// Rows read per query.
pub const CHUNK: u32 = 1000;

/// The columns of `GET /urls/export`: the URL object's fields, in its order.
const URL_COLUMNS: [&str; 15] = [
    "id",
    "user_id",
    "short_code",
    "original_url",
    "title",
    "is_active",
    "created_at",
    "updated_at",
    "redirect_type",
    "expires_at",
    "max_visits",
    "fallback_url",
    "password_protected",
    "rules",
    "forward_query",
];

/// The columns of `GET /events/export`: the event object's fields, `details` as JSON.
const EVENT_COLUMNS: [&str; 8] = [
    "id",
    "url_id",
    "user_id",
    "event_type",
    "timestamp",
    "details",
    "source",
    "key_id",
];

fn time(t: &Timestamp) -> String {
    t.format(timestamp::API_FORMAT).to_string()
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// A table that is exported: its columns, how one row reads, and how a page of rows is
/// fetched.
trait Exported: Sized + Send + 'static {
    type Filter: Clone + Send + Sync + 'static;
    const FILE: &'static str;
    const COLUMNS: &'static [&'static str];
    fn id(&self) -> i64;
    fn record(&self) -> Vec<String>;
    fn page(
        store: &crate::store::DynStore,
        filter: Self::Filter,
        after: i64,
    ) -> impl Future<Output = StoreResult<Vec<Self>>> + Send;
}

impl Exported for Url {
    type Filter = UrlFilter;
    const FILE: &'static str = "attachment; filename=\"urls.csv\"";
    const COLUMNS: &'static [&'static str] = &URL_COLUMNS;
    fn id(&self) -> i64 {
        self.id
    }
    fn record(&self) -> Vec<String> {
        let u = self;
        vec![
            u.id.to_string(),
            optional(u.user_id),
            u.short_code.clone(),
            u.original_url.clone(),
            u.title.clone().unwrap_or_default(),
            u.is_active.to_string(),
            time(&u.created_at),
            time(&u.updated_at),
            u.redirect_type.status().to_string(),
            optional(u.expires_at.as_ref().map(time)),
            optional(u.max_visits),
            u.fallback_url.clone().unwrap_or_default(),
            // Whether it has one; never the password nor its hash.
            u.password_hash.is_some().to_string(),
            u.rules.stored_form(),
            u.forward_query.to_string(),
        ]
    }
    async fn page(
        store: &crate::store::DynStore,
        filter: UrlFilter,
        after: i64,
    ) -> StoreResult<Vec<Self>> {
        store.urls_after(filter, after, CHUNK).await
    }
}

impl Exported for Event {
    type Filter = EventFilter;
    const FILE: &'static str = "attachment; filename=\"events.csv\"";
    const COLUMNS: &'static [&'static str] = &EVENT_COLUMNS;
    fn id(&self) -> i64 {
        self.id
    }
    fn record(&self) -> Vec<String> {
        let e = self;
        vec![
            e.id.to_string(),
            e.url_id.to_string(),
            optional(e.user_id),
            e.event_type.clone(),
            time(&e.timestamp),
            e.details.0.to_string(),
            e.source.as_str().to_owned(),
            optional(e.key_id),
        ]
    }
    async fn page(
        store: &crate::store::DynStore,
        filter: EventFilter,
        after: i64,
    ) -> StoreResult<Vec<Self>> {
        store.events_after(filter, after, CHUNK).await
    }
}

/// Every URL the key may see (filtered as `GET /urls` is), as CSV with a header line,
/// by id.
#[utoipa::path(get, path = "/urls/export", tag = "urls", params(UrlFilters),
    responses((status = 200, description = "The URLs, one line each, after a header line",
                  content_type = "text/csv", body = String),
              (status = 400, body = ErrorBody, description = "A bad filter parameter")))]
pub async fn urls(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<Response> {
    let filter = url_filter(&caller, &query)?;
    Ok(csv::<Url>(&state, filter))
}

/// Every event the key may see (filtered as `GET /events` is), as CSV with a header line,
/// by id; `details` is the JSON object.
#[utoipa::path(get, path = "/events/export", tag = "events", params(EventFilters),
    responses((status = 200, description = "The events, one line each, after a header line",
                  content_type = "text/csv", body = String),
              (status = 400, body = ErrorBody, description = "A bad filter parameter")))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<Response> {
    let filter = super::events::filter(&state, caller, &query).await?;
    Ok(csv::<Event>(&state, filter))
}

/// The response streaming `T`'s header line and then every row of it `filter` lets through,
/// page after page, as CSV.
fn csv<T: Exported>(state: &AppState, filter: T::Filter) -> Response {
    let store = state.store.clone();
    let pages = futures_util::stream::try_unfold(Some(0_i64), move |after| {
        let (store, filter) = (store.clone(), filter.clone());
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let page = T::page(&store, filter, after).await?;
            let next = if page.len() < CHUNK as usize {
                None
            } else {
                page.last().map(T::id)
            };
            let lines = lines(page.iter().map(T::record))?;
            Ok::<_, ExportError>(Some((lines, next)))
        }
    });
    let head = futures_util::stream::once(async move { lines(std::iter::once(T::COLUMNS)) });
    let body = head.chain(pages).map(|chunk| {
        chunk.inspect_err(|error| {
            tracing::error!(%error, "export cut short");
        })
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static(T::FILE),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// `records` as CSV lines.
fn lines<I>(records: impl Iterator<Item = I>) -> Result<Bytes, ExportError>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut out = csv::Writer::from_writer(Vec::new());
    for record in records {
        out.write_record(record)?;
    }
    let bytes = out
        .into_inner()
        .map_err(|error| ExportError::Csv(error.into_error().into()))?;
    Ok(Bytes::from(bytes))
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("reading the rows failed: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("writing CSV failed: {0}")]
    Csv(#[from] csv::Error),
}
