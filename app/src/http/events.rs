use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiResult, ErrorBody, field};
use super::extract::{JsonBody, QueryParams, listing, whole_number};
use super::params::{EventFilters, Pagination};
use super::state::AppState;
use crate::domain::parse_event_type;
use crate::keys::Caller;
use crate::store::{Event, EventFilter, EventSource, NewEvent, StoreError};

#[derive(Deserialize, ToSchema)]
pub struct CreateEvent {
    #[serde(deserialize_with = "whole_number")]
    url_id: i64,
    #[serde(deserialize_with = "whole_number")]
    user_id: i64,
    event_type: String,
    /// Must be a JSON object when present.
    #[schema(value_type = Option<Object>)]
    details: Option<Map<String, Value>>,
}

#[utoipa::path(get, path = "/events", tag = "events", params(Pagination, EventFilters),
    responses((status = 200, body = [Event]),
              (status = 400, body = ErrorBody, description = "A bad page or filter parameter")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryParams,
) -> ApiResult<axum::response::Response> {
    let filter = filter(&state, caller, &query).await?;
    Ok(listing(
        state.store.list_events(filter, query.page()?).await?,
    ))
}

/// The events `query` asks for that `caller` may see (`GET /events` and its export).
pub(super) async fn filter(
    state: &AppState,
    caller: Caller,
    query: &QueryParams,
) -> ApiResult<EventFilter> {
    let source = query
        .text("source")
        .map(|raw| field("source", EventSource::parse(&raw)))
        .transpose()?;
    let url_id = query.int("url_id")?;
    if let (Some(url_id), Some(_)) = (url_id, caller.bound_user()) {
        // Another user's URL is 403 here as it is by id; one that does not
        // exist lists nothing, as for any key.
        match state.store.get_url(url_id).await {
            Ok(url) => caller.may_see(url.user_id)?,
            Err(StoreError::NotFound(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(EventFilter {
        url_id,
        user_id: caller.user_filter(query.int("user_id")?)?,
        event_type: query.text("event_type"),
        source,
    })
}

#[utoipa::path(post, path = "/events", tag = "events", request_body = CreateEvent,
    responses((status = 201, body = Event), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody, description = "url_id or user_id names nothing")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateEvent>,
) -> ApiResult<(StatusCode, Json<Event>)> {
    if caller.bound_user().is_some() {
        // Only about the key's own user and that user's URLs.
        caller.may_see(Some(body.user_id))?;
        caller.may_see(state.store.get_url(body.url_id).await?.user_id)?;
    }
    let event = NewEvent {
        url_id: body.url_id,
        user_id: body.user_id,
        event_type: field("event_type", parse_event_type(&body.event_type))?,
        details: body.details.unwrap_or_default(),
    };
    Ok((
        StatusCode::CREATED,
        Json(state.store.create_event(event, caller.actor()).await?),
    ))
}
