//! Extractors that turn raw requests into typed input or a JSON 400, and
//! [`listing`], the answer to the page a [`QueryParams`] asked for.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::store::{Listing, Page};

/// Largest JSON body accepted; CSV uploads have their own, larger limit
/// (`users::UPLOAD_LIMIT`).
pub(super) const MAX_JSON_BODY: usize = 64 * 1024;

/// A JSON object body deserialized into `T`.
///
/// Refuses (400) a missing or non-JSON Content-Type, bodies that are not
/// JSON, JSON that is not an object, and fields of the wrong type, naming the
/// field: `{"error": "user_id: invalid type: string \"x\", expected i64",
/// "details": {"user_id": [...]}}`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::bad_request(
                "expected a JSON object body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("request body is too large".into())
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::bad_request(format!(
                "request body must be a JSON object, not {}",
                json_kind(&value)
            )));
        }
        serde_path_to_error::deserialize(value)
            .map(JsonBody)
            .map_err(|err| field_error(&err))
    }
}

fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Names the field a serde error is about. serde reports a missing field at
/// the parent's path, with the name in the message.
fn field_error(err: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let message = err.inner().to_string();
    let path = err.path().to_string();
    let field = if path == "." || path.is_empty() {
        message
            .split('`')
            .nth(1)
            .filter(|_| message.starts_with("missing field"))
            .unwrap_or("body")
            .to_owned()
    } else {
        path
    };
    let problem = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    ApiError::invalid_field(&field, problem)
}

/// Query-string parameters, parsed one by one with a 400 naming the bad one.
pub struct QueryParams(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Self(
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}

impl QueryParams {
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.0
            .get(name)
            .map(|raw| {
                raw.trim().parse::<i64>().map_err(|_| {
                    ApiError::invalid_field(name, format!("'{raw}' is not an integer"))
                })
            })
            .transpose()
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.0
            .get(name)
            .map(|raw| match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::invalid_field(
                    name,
                    format!("'{raw}' is not true or false"),
                )),
            })
            .transpose()
    }

    /// The parameter as given, empty included (an empty value is then refused as any other
    /// that does not parse, where absence has a meaning of its own).
    pub fn given(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn text(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// `page` (default 1) and `per_page` (default 25, capped at 100), or
    /// `after_id` (a keyset cursor: the rows after that id).
    pub fn page(&self) -> Result<Page, ApiError> {
        let page = self.int("page")?.unwrap_or(1);
        if page < 1 {
            return Err(ApiError::invalid_field("page", "must be at least 1"));
        }
        let per_page = self
            .int("per_page")?
            .unwrap_or(i64::from(Page::DEFAULT_PER_PAGE));
        if per_page < 1 {
            return Err(ApiError::invalid_field("per_page", "must be at least 1"));
        }
        let per_page = per_page.min(i64::from(Page::MAX_PER_PAGE));
        let after_id = self.int("after_id")?;
        if after_id.is_some() && page != 1 {
            return Err(ApiError::bad_request(
                "give either page or after_id, not both",
            ));
        }
        // An offset is read and thrown away row by row: past this depth,
        // page with after_id (one index seek at any depth).
        if (page - 1).saturating_mul(per_page) > Page::MAX_OFFSET {
            return Err(ApiError::invalid_field(
                "page",
                format!(
                    "too deep: at most {} rows can be skipped; continue with after_id=<last id>",
                    Page::MAX_OFFSET
                ),
            ));
        }
        Ok(Page {
            page: u32::try_from(page).unwrap_or(1),
            per_page: u32::try_from(per_page).unwrap_or(Page::DEFAULT_PER_PAGE),
            after_id,
        })
    }
}

/// A listing as the API returns it: the page as a JSON array and the total
/// in `X-Total-Count`.
pub fn listing<T: serde::Serialize>(listing: Listing<T>) -> Response {
    let mut response = axum::Json(listing.items).into_response();
    let headers = response.headers_mut();
    headers.insert("x-total-count", header::HeaderValue::from(listing.total));
    if listing.estimated {
        headers.insert(
            "x-total-count-estimated",
            header::HeaderValue::from_static("true"),
        );
    }
    response
}

/// A numeric `{id}` path segment. Anything else names no row: 404, like a
/// missing one.
pub struct PathId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("not found".into()))?;
        raw.parse()
            .map(PathId)
            .map_err(|_| ApiError::NotFound(format!("no resource with id '{raw}'")))
    }
}

/// `Option<Option<T>>` for PATCH-like bodies: absent → `None`,
/// `null` → `Some(None)`, a value → `Some(Some(v))`.
pub fn nullable<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(de).map(Some)
}

/// An `i64` body field that also takes a JSON number written with a zero
/// fraction (`3.0`, `1e3`): JSON has one number type, and JSON Schema's
/// `integer` (what the OpenAPI document promises) admits those. A real
/// fraction or a value outside `i64` is still a 400 naming the field.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    de.deserialize_any(WholeNumber)
}

/// [`whole_number`] for an optional field (absent or `null`: `None`).
pub fn optional_whole_number<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<i64>, D::Error> {
    de.deserialize_option(OptionalWholeNumber)
}

/// [`whole_number`] for a field of a change, where `null` clears:
/// absent → `None`, `null` → `Some(None)`.
pub fn nullable_whole_number<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<Option<i64>>, D::Error> {
    optional_whole_number(de).map(Some)
}

struct WholeNumber;

impl serde::de::Visitor<'_> for WholeNumber {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        // The wording serde uses for a plain `i64`, which clients and the
        // docs already know.
        f.write_str("i64")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
        // `i64::MIN` is exactly representable; `i64::MAX` is not, and
        // `2^63` as a float is already out of range.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v) {
            #[allow(clippy::cast_possible_truncation, reason = "whole and in range: exact")]
            Ok(v as i64)
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
        }
    }
}

struct OptionalWholeNumber;

impl<'de> serde::de::Visitor<'de> for OptionalWholeNumber {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("i64 or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Option<i64>, D::Error> {
        whole_number(de).map(Some)
    }
}

/// The CSV file of a `multipart/form-data` upload: exactly one field, `file` (anything else is
/// a client mistake to report, not to skip, as the OpenAPI document says); `limit` is the
/// route's body limit, named in the 413.
pub async fn csv_upload(
    form: Result<axum::extract::Multipart, axum::extract::multipart::MultipartRejection>,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let mut form = form.map_err(|_| {
        ApiError::bad_request("expected a multipart/form-data body with a CSV in field 'file'")
    })?;
    let upload_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "the upload is larger than {} MiB",
                limit / (1024 * 1024)
            ))
        } else {
            ApiError::bad_request(format!("malformed multipart body: {e}"))
        }
    };
    let mut file = None;
    while let Some(part) = form.next_field().await.map_err(upload_error)? {
        match part.name() {
            Some("file") if file.is_none() => {
                file = Some(part.bytes().await.map_err(upload_error)?);
            }
            Some("file") => return Err(ApiError::invalid_field("file", "given more than once")),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected form field '{}': send only 'file'",
                    other.unwrap_or_default()
                )));
            }
        }
    }
    file.ok_or_else(|| ApiError::invalid_field("file", "a CSV file is required"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn query(pairs: &[(&str, Option<String>)]) -> QueryParams {
        QueryParams(
            pairs
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), v)))
                .collect(),
        )
    }

    fn number_or_junk() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            any::<i64>().prop_map(|n| Some(n.to_string())),
            (-3i64..20_000).prop_map(|n| Some(n.to_string())),
            "[ 0-9a-z.+-]{0,25}".prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Any page parameters: a 400 or a page whose math cannot overflow
        /// and whose offset stays within the bound.
        #[test]
        fn page_math_never_overflows(
            page in number_or_junk(),
            per_page in number_or_junk(),
            after_id in number_or_junk(),
        ) {
            let q = query(&[("page", page), ("per_page", per_page), ("after_id", after_id)]);
            if let Ok(p) = q.page() {
                prop_assert!(p.page >= 1);
                prop_assert!((1..=Page::MAX_PER_PAGE).contains(&p.per_page));
                prop_assert!(p.offset() <= Page::MAX_OFFSET);
                prop_assert!(p.after_id.is_none() || p.page == 1);
            }
        }

        /// Any JSON body: an object of the right shape, or a 400 naming why.
        #[test]
        fn whole_numbers_take_integral_json_numbers(n in any::<i64>(), f in any::<f64>()) {
            #[derive(serde::Deserialize)]
            struct Body {
                #[serde(deserialize_with = "whole_number")]
                id: i64,
                #[serde(default, deserialize_with = "optional_whole_number")]
                other: Option<i64>,
            }
            let body: Body = serde_json::from_value(serde_json::json!({"id": n, "other": null})).unwrap();
            prop_assert_eq!(body.id, n);
            prop_assert_eq!(body.other, None);
            let parsed = serde_json::from_value::<Body>(serde_json::json!({"id": f}));
            // 2^63: the first float past `i64::MAX`.
            let limit = 2f64.powi(63);
            let whole = f.is_finite() && f.fract() == 0.0 && (-limit..limit).contains(&f);
            prop_assert_eq!(parsed.is_ok(), whole, "{}", f);
        }
    }

    #[test]
    fn whole_numbers_refuse_fractions_and_strings() {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[serde(deserialize_with = "whole_number")]
            #[allow(dead_code)]
            id: i64,
        }
        for bad in [
            serde_json::json!(1.5),
            serde_json::json!("1"),
            serde_json::json!(1e19),
            serde_json::json!(true),
        ] {
            let err = serde_json::from_value::<Body>(serde_json::json!({"id": bad})).unwrap_err();
            assert!(err.to_string().contains("expected i64"), "{err}");
        }
        assert!(serde_json::from_value::<Body>(serde_json::json!({"id": 3.0})).is_ok());
    }
}
