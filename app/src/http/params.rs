//! The documented shapes of the path and query parameters the handlers
//! read (and of the bulk upload form): shared by the handlers, which name
//! them in their annotations, and the OpenAPI document, which is generated
//! from those annotations. The values themselves are read by the extractors
//! (`extract.rs`), so their fields are never read here.
#![allow(
    dead_code,
    reason = "the shapes describe parameters and forms for the OpenAPI document only"
)]

use utoipa::{IntoParams, ToSchema};

/// The paging parameters of every list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// Page number, from 1 (default 1). The rows a page skips,
    /// `(page - 1) × per_page`, may be at most 10 000: deeper is 400, and
    /// `after_id` continues from there.
    page: Option<i64>,
    /// Rows per page, from 1 (default 25). More than 100 is served as 100.
    per_page: Option<i64>,
    /// Keyset cursor: the rows with an id greater than this one, in one
    /// index seek at any depth. Together with a `page` other than 1: 400.
    after_id: Option<i64>,
}

/// The filters of `GET /urls`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UrlFilters {
    /// Only this user's URLs.
    user_id: Option<i64>,
    /// Only active (`true`) or inactive (`false`) URLs; `1` and `0` are
    /// accepted too.
    is_active: Option<bool>,
    /// Only the URL with this code (exact, case-sensitive): zero or one row.
    short_code: Option<String>,
}

/// The filters of `GET /events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilters {
    /// Only this URL's events.
    url_id: Option<i64>,
    /// Only this user's events.
    user_id: Option<i64>,
    /// Only events of this type (`created`, `updated`, `deleted`,
    /// `redirect`, or a client's own type).
    event_type: Option<String>,
    /// Only events the service wrote itself (`service`: the audit trail,
    /// what stats count) or those clients posted (`client`).
    #[param(inline)]
    source: Option<crate::store::EventSource>,
}

/// The drawing of `GET /urls/{id}/qr`. The values each takes are added to the document from
/// the handler's own constants (`openapi.rs`, `parameter_rules`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QrParams {
    /// `svg` (the default) or `png`.
    format: Option<String>,
    /// Pixels across, quiet zone included (default 256): the image is the smallest square
    /// of whole-pixel modules at least this wide.
    size: Option<i64>,
}

/// The range and buckets of `GET /urls/{id}/analytics`. The values `granularity` takes and
/// the instants' pattern are added to the document from the handler's own constants
/// (`openapi.rs`, `parameter_rules`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsParams {
    /// Start of the range (RFC 3339, or `YYYY-MM-DDTHH:MM:SS` in UTC), down to its bucket's
    /// start; default: `to` less 7 days (by day) or 24 hours (by hour).
    from: Option<String>,
    /// End of the range (exclusive), up to its bucket's end; default: now.
    to: Option<String>,
    /// `day` (the default) or `hour`: at most 366 days, or 744 hours (31 days).
    granularity: Option<String>,
}

/// Whose links an import makes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportOwner {
    /// The links' owner: a live user (an admin key only; a user-bound key imports for its
    /// user). Absent: no owner.
    user_id: Option<i64>,
}

/// `POST /urls/import`'s form.
#[derive(ToSchema)]
#[allow(dead_code, reason = "the document's description of the upload")]
pub struct LinksUpload {
    /// A CSV of links: a header line naming a target column (`original_url`, `long_url`,
    /// `url`, …) and a code column (`short_code`, `keyword`, `slug`, …) or a short URL column
    /// (`short_url`, `link`, `Bitly Link`, …), in any order, case or spacing; optionally a
    /// title, a creation time, an expiry and a visit cap. Then one link a line, at most
    /// 10 000. Lines that cannot be imported are reported, not fatal.
    #[schema(content_media_type = "text/csv")]
    file: String,
}

/// A PNG image's bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct PngImage(Vec<u8>);

/// `{id}` of an API key.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyId {
    /// The key's id (not the key). A segment that is not an integer names
    /// no key: 404.
    id: i64,
}

/// `{id}` of a user.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserId {
    /// The user's id. A segment that is not an integer names no user: 404.
    id: i64,
}

/// `{id}` of a URL.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UrlId {
    /// The URL's id. A segment that is not an integer names no URL: 404.
    id: i64,
}

/// The form of `POST /users/bulk`.
#[derive(ToSchema)]
pub struct UsersUpload {
    /// A users CSV: a header line naming at least the `username` and
    /// `email` columns (`id` and `created_at` may follow), then one user a
    /// line. Lines that cannot be imported are reported, not fatal.
    #[schema(content_media_type = "text/csv")]
    file: String,
}
