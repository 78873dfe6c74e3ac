use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::domain::{
    Email, LinkPolicy, LinkSettings, PasswordHashed, RedirectType, Rules, ShortCode, TargetUrl,
    Timestamp, timestamp,
};

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    #[serde(serialize_with = "timestamp::serialize")]
    #[schema(value_type = String, example = "2026-04-03T12:00:00")]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: Email,
}

#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub username: Option<String>,
    pub email: Option<Email>,
}

/// What deleting a user did to the rest of the data.
#[derive(Debug, Clone, PartialEq)]
pub struct UserDeletion {
    /// The user's URLs that were active and are now deactivated.
    pub deactivated: Vec<Url>,
    /// The ids of the user's keys that were live and are now revoked: the
    /// replicas must hear of them ([`crate::keys::KeyCheck::revoked`]).
    pub revoked_keys: Vec<i64>,
}

/// One row of a users CSV (`id` and `created_at` may be absent).
#[derive(Debug, Clone)]
pub struct ImportedUser {
    /// 1-based line number in the file, for error reports.
    pub line: u64,
    pub id: Option<i64>,
    pub username: String,
    pub email: Email,
    pub created_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub imported: u64,
    /// Lines skipped because the email (or explicit id) already existed.
    pub skipped_lines: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct Url {
    pub id: i64,
    pub user_id: Option<i64>,
    pub short_code: String,
    pub original_url: String,
    pub title: Option<String>,
    pub is_active: bool,
    #[serde(serialize_with = "timestamp::serialize")]
    #[schema(value_type = String, example = "2026-04-03T12:00:00")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "timestamp::serialize")]
    #[schema(value_type = String, example = "2026-04-03T12:00:00")]
    pub updated_at: Timestamp,
    /// The status of the redirect: 301, 302 (the default), 307 or 308.
    #[sqlx(try_from = "i16")]
    #[schema(value_type = i64, example = 302)]
    pub redirect_type: RedirectType,
    /// From this time on the link answers 410 (or sends visitors to
    /// `fallback_url`); `null`: never.
    #[serde(serialize_with = "timestamp::serialize_opt")]
    #[schema(value_type = Option<String>, example = "2026-12-31T23:59:59")]
    pub expires_at: Option<Timestamp>,
    /// After this many visits the link answers 410 (or sends visitors to
    /// `fallback_url`); `null`: no limit.
    pub max_visits: Option<i64>,
    /// Where an expired or used-up link sends visitors instead of answering
    /// 410; `null`: nowhere.
    pub fallback_url: Option<String>,
    /// Whether visitors must give the link's password first. The password is never shown
    /// (nor its hash).
    #[serde(rename = "password_protected", serialize_with = "is_set")]
    #[schema(value_type = bool, rename = "password_protected")]
    pub password_hash: Option<String>,
    /// Rules that send some visitors elsewhere, tried in order; `[]`: none.
    #[sqlx(try_from = "String")]
    pub rules: Rules,
    /// Whether the short URL's query is added to the target's.
    pub forward_query: bool,
    /// Visits counted against `max_visits` (while it is set). Internal: the
    /// stats report it.
    #[serde(skip)]
    pub visits: i64,
    /// Bumped by every write: caches never replace a newer entry with an
    /// older one. Internal, not part of the API.
    #[serde(skip)]
    pub version: i64,
}

fn is_set<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(value.is_some())
}

/// A stored hash, or none (a value that is not one, which no write of ours stores, is
/// logged and left out: the link then asks for no password rather than refusing everyone).
fn stored_password(url_id: i64, hash: Option<&str>) -> Option<PasswordHashed> {
    let hash = hash?;
    let parsed = PasswordHashed::stored(hash);
    if parsed.is_none() {
        tracing::error!(url_id, "stored password hash is not a PHC string; ignored");
    }
    parsed
}

impl Url {
    pub fn target(&self) -> RedirectTarget {
        RedirectTarget {
            short_code: self.short_code.clone(),
            url_id: self.id,
            user_id: self.user_id,
            original_url: self.original_url.clone(),
            is_active: self.is_active,
            version: self.version,
            policy: LinkPolicy::of(LinkSettings {
                redirect_type: self.redirect_type,
                expires_at: self.expires_at,
                max_visits: self.max_visits,
                fallback_url: self.fallback_url.clone(),
                password: stored_password(self.id, self.password_hash.as_deref()),
                rules: self.rules.clone(),
                forward_query: self.forward_query,
            }),
        }
    }
}

/// A link's policy as given on creation (all of it) or in a change (what is
/// `Some` changes; `Some(None)` clears).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyPatch {
    pub redirect_type: Option<RedirectType>,
    pub expires_at: Option<Option<Timestamp>>,
    pub max_visits: Option<Option<i64>>,
    pub fallback_url: Option<Option<TargetUrl>>,
    /// `Some(Some(hash))` sets a (new) password, `Some(None)` removes it.
    pub password: Option<Option<PasswordHashed>>,
    /// `Some(rules)` replaces them all (`Some` of none removes them).
    pub rules: Option<Rules>,
    pub forward_query: Option<bool>,
}

impl PolicyPatch {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone)]
pub struct NewUrl {
    pub user_id: Option<i64>,
    pub original_url: TargetUrl,
    pub title: Option<String>,
    pub policy: PolicyPatch,
}

#[derive(Debug, Clone, Default)]
pub struct UrlPatch {
    pub original_url: Option<TargetUrl>,
    /// `Some(None)` clears the title.
    pub title: Option<Option<String>>,
    pub is_active: Option<bool>,
    pub policy: PolicyPatch,
}

impl UrlPatch {
    pub fn is_empty(&self) -> bool {
        self.original_url.is_none()
            && self.title.is_none()
            && self.is_active.is_none()
            && self.policy.is_empty()
    }

    /// The `updated` events this patch causes on `current`: one per field
    /// whose value actually changes, as `{"field", "new_value"}`.
    pub fn changes(&self, current: &Url) -> Vec<Value> {
        let mut changes = Vec::new();
        let mut change = |field: &str, new_value: Value| {
            let mut details = Map::new();
            details.insert("field".into(), field.into());
            details.insert("new_value".into(), new_value);
            changes.push(Value::Object(details));
        };
        if let Some(url) = &self.original_url
            && url.as_str() != current.original_url
        {
            change("original_url", url.as_str().into());
        }
        if let Some(title) = &self.title
            && *title != current.title
        {
            change("title", title.clone().map_or(Value::Null, Value::from));
        }
        if let Some(active) = self.is_active
            && active != current.is_active
        {
            change("is_active", active.into());
        }
        let policy = &self.policy;
        if let Some(kind) = policy.redirect_type
            && kind != current.redirect_type
        {
            change("redirect_type", kind.status().into());
        }
        if let Some(at) = policy.expires_at
            && at != current.expires_at
        {
            let at = at.map(|at| at.format(timestamp::API_FORMAT).to_string());
            change("expires_at", at.map_or(Value::Null, Value::from));
        }
        if let Some(max) = policy.max_visits
            && max != current.max_visits
        {
            change("max_visits", max.map_or(Value::Null, Value::from));
        }
        if let Some(url) = &policy.fallback_url
            && url.as_ref().map(TargetUrl::as_str) != current.fallback_url.as_deref()
        {
            let url = url.as_ref().map(|u| Value::from(u.as_str()));
            change("fallback_url", url.unwrap_or(Value::Null));
        }
        // Never the password nor its hash: only that one was set (each new one is a change:
        // salted hashes of the same password differ) or removed.
        match &policy.password {
            Some(Some(_)) => change("password", "set".into()),
            Some(None) if current.password_hash.is_some() => change("password", Value::Null),
            _ => {}
        }
        if let Some(rules) = &policy.rules
            && *rules != current.rules
        {
            change("rules", serde_json::to_value(rules).unwrap_or(Value::Null));
        }
        if let Some(forward) = policy.forward_query
            && forward != current.forward_query
        {
            change("forward_query", forward.into());
        }
        changes
    }
}

#[derive(Debug, Clone, Default)]
pub struct UrlFilter {
    pub user_id: Option<i64>,
    pub is_active: Option<bool>,
    /// The link with this code (exact, case-sensitive), if the other filters hold.
    pub short_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UrlStats {
    pub url: Url,
    pub redirect_count: i64,
    #[serde(serialize_with = "timestamp::serialize_opt")]
    #[schema(value_type = Option<String>, example = "2026-04-03T12:00:00")]
    pub last_redirect_at: Option<Timestamp>,
    /// Count of every event type recorded for this URL.
    #[schema(value_type = Object)]
    pub events_by_type: std::collections::BTreeMap<String, i64>,
    /// Visits left before `max_visits` is reached; `null` without a limit.
    pub visits_left: Option<i64>,
}

/// What the redirect path needs, and nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget {
    pub short_code: String,
    pub url_id: i64,
    pub user_id: Option<i64>,
    pub original_url: String,
    pub is_active: bool,
    pub version: i64,
    /// `None` for the default policy (most links: nothing more to keep).
    pub policy: Option<Box<LinkPolicy>>,
}

impl RedirectTarget {
    pub fn redirect_type(&self) -> RedirectType {
        self.policy
            .as_ref()
            .map_or(RedirectType::Found, |p| p.redirect_type)
    }

    /// Whether each visit must reserve one of a limited number first.
    pub fn is_capped(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.max_visits.is_some())
    }
}

/// A [`RedirectTarget`] as read (`sql!`'s `TARGET` columns).
#[derive(Debug, sqlx::FromRow)]
pub struct TargetRow {
    short_code: String,
    url_id: i64,
    user_id: Option<i64>,
    original_url: String,
    is_active: bool,
    version: i64,
    #[sqlx(try_from = "i16")]
    redirect_type: RedirectType,
    expires_at: Option<Timestamp>,
    max_visits: Option<i64>,
    fallback_url: Option<String>,
    password_hash: Option<String>,
    #[sqlx(try_from = "String")]
    rules: Rules,
    forward_query: bool,
}

impl From<TargetRow> for RedirectTarget {
    fn from(row: TargetRow) -> Self {
        Self {
            policy: LinkPolicy::of(LinkSettings {
                redirect_type: row.redirect_type,
                expires_at: row.expires_at,
                max_visits: row.max_visits,
                fallback_url: row.fallback_url,
                password: stored_password(row.url_id, row.password_hash.as_deref()),
                rules: row.rules,
                forward_query: row.forward_query,
            }),
            short_code: row.short_code,
            url_id: row.url_id,
            user_id: row.user_id,
            original_url: row.original_url,
            is_active: row.is_active,
            version: row.version,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct Event {
    pub id: i64,
    pub url_id: i64,
    pub user_id: Option<i64>,
    pub event_type: String,
    #[serde(serialize_with = "timestamp::serialize")]
    #[schema(value_type = String, example = "2026-04-03T12:00:00")]
    pub timestamp: Timestamp,
    #[schema(value_type = Object)]
    pub details: sqlx::types::Json<Value>,
    /// Who wrote the event: `service` (the service itself, as the result of
    /// a change or a redirect) or `client` (posted to `POST /events`).
    #[sqlx(try_from = "String")]
    pub source: EventSource,
    /// The API key that made the change or posted the event; `null` when no
    /// key did (redirects, the seed, `AUTH_MODE=open`).
    pub key_id: Option<i64>,
}

/// Who wrote an event. Counts and audits read only the service's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventSource {
    Service,
    Client,
}

impl EventSource {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "service" => Ok(Self::Service),
            "client" => Ok(Self::Client),
            _ => Err("must be `service` or `client`".to_owned()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Client => "client",
        }
    }
}

impl TryFrom<String> for EventSource {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

/// Who asked for a change: the API key that made the request, when there
/// was one. Recorded on every event the change writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actor {
    pub key_id: Option<i64>,
}

impl Actor {
    /// No key: `AUTH_MODE=open`, the command line, the seed loader.
    pub const NONE: Self = Self { key_id: None };
}

/// An event posted by a client (always `source = client`).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub url_id: i64,
    pub user_id: i64,
    pub event_type: String,
    pub details: Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub url_id: Option<i64>,
    pub user_id: Option<i64>,
    pub event_type: Option<String>,
    pub source: Option<EventSource>,
}

/// One answered redirect, to be written as a `redirect` event (a `bot_visit` event, not
/// counted, when `bot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    pub url_id: i64,
    pub user_id: Option<i64>,
    pub short_code: String,
    pub at: Timestamp,
    /// A bot's visit ([`crate::bots`]). Absent from clicks spilled by builds before bots were
    /// told apart (read as `false`), and left out when `false`, so that such builds read
    /// this one's spill too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bot: bool,
    /// For the analytics (not for bots' visits): the `User-Agent` and the `Referer` (each
    /// cut to `analytics::MAX_HEADER_KEPT` bytes), and the visitor's salted daily hash (the
    /// address itself is never kept). Absent in older builds' spills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor: Option<i64>,
}

/// A link to import with its own code ([`Store::import_urls`](super::Store::import_urls)).
#[derive(Debug, Clone)]
pub struct ImportedUrl {
    pub code: ShortCode,
    pub original_url: TargetUrl,
    pub title: Option<String>,
    /// When the link was made where it came from (default: now).
    pub created_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub max_visits: Option<i64>,
}

/// What became of one imported link.
#[derive(Debug, Clone, PartialEq)]
pub enum Imported {
    /// Created, with a `created` event.
    New(Box<Url>),
    /// A link with this code and this target was there already (imported before): unchanged.
    Existing,
    /// The code is another link's: unchanged.
    Taken,
}

/// A link's analytics as stored ([`Store::url_analytics`](super::Store::url_analytics)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalyticsRows {
    /// Clicks per hour (hours without any are left out).
    pub hourly: Vec<(Timestamp, i64)>,
    /// Clicks per dimension (`referrer`, `browser`, `os`, `device`) and value over the range.
    pub breakdown: Vec<(String, String, i64)>,
    /// Unique visitors per day (days without any are left out).
    pub daily_visitors: Vec<(chrono::NaiveDate, i64)>,
}

/// Which direct write a batch was: the click writer (a random id, renamed
/// after every failed write) and the batch's number in that writer's
/// sequence (1, 2, 3, …; one write at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOrigin {
    pub writer: i64,
    pub seq: i64,
}

/// Clicks kept while the database was away, under an id that makes writing
/// them back idempotent (see [`Store::record_spilled_clicks`](super::Store::record_spilled_clicks)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickBatch {
    pub id: i64,
    pub clicks: Vec<Click>,
    /// The direct write that failed before these clicks were spilled, if
    /// any: it may have committed all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<BatchOrigin>,
}

/// A page request, already validated (page ≥ 1, 1 ≤ per_page ≤ 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub per_page: u32,
    /// Keyset cursor: rows with a larger id (then `page` is 1).
    pub after_id: Option<i64>,
}

impl Page {
    pub const DEFAULT_PER_PAGE: u32 = 25;
    pub const MAX_PER_PAGE: u32 = 100;
    /// Deepest offset a page may start at.
    pub const MAX_OFFSET: i64 = 10_000;

    /// `limit` rows after id `after_id` (a keyset page).
    pub fn after(after_id: i64, limit: u32) -> Self {
        Self {
            page: 1,
            per_page: limit,
            after_id: Some(after_id),
        }
    }

    pub fn limit(self) -> i64 {
        i64::from(self.per_page)
    }

    pub fn offset(self) -> i64 {
        // Saturating: (2^32 - 1)^2 does not fit an i64.
        i64::from(self.page.saturating_sub(1)).saturating_mul(i64::from(self.per_page))
    }
}

impl Default for Page {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: Self::DEFAULT_PER_PAGE,
            after_id: None,
        }
    }
}

/// One page of rows and the number of rows matching the filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub total: i64,
    /// `total` is the planner's estimate (too many rows to count cheaply).
    pub estimated: bool,
}

/// What a key may do. `user` keys are bound to one user (see
/// [`ApiKey::user_id`]); `read-only` keys may be bound to one or see all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyScope {
    /// Everything, including managing keys.
    Admin,
    /// Reads and changes one user's URLs and events, nothing else.
    User,
    /// Reads only (everything, or one user's data when bound).
    ReadOnly,
}

impl KeyScope {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "admin" => Ok(Self::Admin),
            "user" => Ok(Self::User),
            "read-only" => Ok(Self::ReadOnly),
            _ => Err("must be one of `admin`, `user`, `read-only`".to_owned()),
        }
    }
}

impl TryFrom<String> for KeyScope {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Self::parse(&raw)
    }
}

impl std::fmt::Display for KeyScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::ReadOnly => "read-only",
        })
    }
}

/// An API key as stored: never the key itself, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub scope: KeyScope,
    /// The user a `user` (or bound `read-only`) key is limited to.
    pub user_id: Option<i64>,
    /// The key's first characters, to recognise it by.
    pub prefix: String,
    /// Stands for `ADMIN_API_KEY` (checked against the environment, not
    /// looked up: this row only names it in events).
    pub bootstrap: bool,
    #[serde(serialize_with = "timestamp::serialize")]
    #[schema(value_type = String, example = "2026-04-03T12:00:00")]
    pub created_at: Timestamp,
    /// The key that created this one (`null`: the command line).
    pub created_by: Option<i64>,
    #[serde(serialize_with = "timestamp::serialize_opt")]
    #[schema(value_type = Option<String>, example = "2026-07-03T12:00:00")]
    pub expires_at: Option<Timestamp>,
    #[serde(serialize_with = "timestamp::serialize_opt")]
    #[schema(value_type = Option<String>)]
    pub revoked_at: Option<Timestamp>,
    /// When the key was last accepted, to within a minute.
    #[serde(serialize_with = "timestamp::serialize_opt")]
    #[schema(value_type = Option<String>)]
    pub last_used_at: Option<Timestamp>,
}

impl ApiKey {
    /// Whether the key is accepted at `at`.
    pub fn is_live(&self, at: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expiry| expiry > at)
    }
}

/// A key to create; `secret_sha256` is the hash of the key handed out.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub scope: KeyScope,
    pub user_id: Option<i64>,
    pub secret_sha256: String,
    pub prefix: String,
    pub expires_at: Option<Timestamp>,
    pub created_by: Option<i64>,
}

/// Rows of the platform's seed files, as parsed by [`crate::seed`].
#[derive(Debug, Clone, Default)]
pub struct SeedData {
    pub users: Vec<ImportedUser>,
    pub urls: Vec<Url>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedOutcome {
    pub users: u64,
    pub urls: u64,
    pub events: u64,
}

impl UrlStats {
    pub fn new(
        url: Url,
        counts: Vec<(String, i64)>,
        redirect_count: i64,
        last_redirect_at: Option<Timestamp>,
    ) -> Self {
        let mut events_by_type: std::collections::BTreeMap<_, _> = counts.into_iter().collect();
        if redirect_count > 0 {
            events_by_type.insert("redirect".to_owned(), redirect_count);
        }
        Self {
            visits_left: url.max_visits.map(|max| (max - url.visits).max(0)),
            url,
            redirect_count,
            last_redirect_at,
            events_by_type,
        }
    }
}

/// `updated_at` after a write: now, but always at least one second after the
/// previous value, so that every write shows a new `updated_at` at the API's
/// one-second resolution (clients use it to notice changes).
pub fn next_updated_at(current: &Url) -> Timestamp {
    crate::domain::now().max(current.updated_at + chrono::Duration::seconds(1))
}

/// A snapshot of a connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections (in use + idle).
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}
