//! Storage: one trait, two implementations (PostgreSQL for production, an
//! embedded SQLite file for laptops and demos). Both pass the same contract
//! test suite (`tests/store_contract.rs`).
//!
//! Rules every implementation keeps:
//! - every list is paginated and served by an index;
//! - a write and the events it causes commit together or not at all;
//! - users are soft-deleted, so events and URLs never point at nothing.

mod connect;
pub mod migrations;
mod model;
pub mod postgres;
pub mod sql;
pub mod sqlite;
mod transient;

use std::sync::Arc;

use async_trait::async_trait;

pub use connect::{connect, migrate};
pub use migrations::{MigrationName, MigrationReport, NotMigrated, Schema};
pub use model::*;
use transient::{is_login_refused, is_transient_error};

use crate::domain::ShortCode;

/// How many fresh codes to try before giving up on a generated short code.
/// With 62^7 codes, needing more than one is already vanishingly rare.
const SHORT_CODE_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(Entity),
    #[error("{0}")]
    Conflict(Conflict),
    /// The database cannot be reached (or timed out): callers answer 503.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// `serve` may not migrate, and the schema is not this build's.
    #[error(transparent)]
    NotMigrated(#[from] NotMigrated),
}

impl StoreError {
    /// The server refused the login (SQLSTATE 28P01 or 28000): a wrong password, or a role
    /// that does not exist yet.
    pub fn is_login_refused(&self) -> bool {
        match self {
            StoreError::Database(err) | StoreError::Unavailable(err) => is_login_refused(err),
            StoreError::Migration(sqlx::migrate::MigrateError::Execute(err)) => {
                is_login_refused(err)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    User,
    Url,
    ApiKey,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::User => "user",
            Entity::Url => "url",
            Entity::ApiKey => "api key",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    EmailTaken,
    ShortCodeTaken,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conflict::EmailTaken => "a user with this email already exists",
            Conflict::ShortCodeTaken => "this short code is already taken",
        })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        // Transient: the database or PgBouncer is away, restarting or
        // saturated, or the transaction lost a race (see `transient.rs`).
        // The same work may succeed when retried.
        if is_transient_error(&err) {
            return StoreError::Unavailable(err);
        }
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                // Constraint names are the same in both backends' migrations.
                let msg = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
                if msg.contains("short_code") {
                    StoreError::Conflict(Conflict::ShortCodeTaken)
                } else if msg.contains("email") {
                    StoreError::Conflict(Conflict::EmailTaken)
                } else {
                    StoreError::Database(err)
                }
            }
            _ => StoreError::Database(err),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What a handler needs from storage; see the module docs for the rules.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip, for `/health`.
    async fn ping(&self) -> StoreResult<()>;

    /// Connections of the main pool, for metrics.
    fn pool_stats(&self) -> PoolStats;

    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    async fn get_user(&self, id: i64) -> StoreResult<User>;
    async fn list_users(&self, page: Page) -> StoreResult<Listing<User>>;
    async fn update_user(&self, id: i64, patch: UserPatch) -> StoreResult<User>;
    /// Soft-deletes the user, deactivates every active URL they own and
    /// records a `deleted` event (`reason: owner_deleted`) for each.
    /// Also revokes the user's keys.
    async fn delete_user(&self, id: i64, by: Actor) -> StoreResult<UserDeletion>;
    /// Inserts users (explicit ids allowed); rows whose id or email already
    /// exists are skipped and reported, never overwritten.
    async fn import_users(&self, users: Vec<ImportedUser>) -> StoreResult<ImportOutcome>;

    /// Imports links with their own codes for `user_id` (a live user, or none), in one
    /// transaction: each whose code is free is created (with a `created` event saying
    /// `"imported": true`); a code already taken is left as it is, and reported as
    /// [`Imported::Existing`] when its link has the same target (an import run again),
    /// [`Imported::Taken`] otherwise. Outcomes in the order of `urls`.
    async fn import_urls(
        &self,
        user_id: Option<i64>,
        urls: Vec<ImportedUrl>,
        by: Actor,
    ) -> StoreResult<Vec<Imported>>;
    /// Inserts a URL with exactly this short code, plus its `created` event.
    async fn insert_url(&self, url: NewUrl, code: &ShortCode, by: Actor) -> StoreResult<Url>;
    async fn get_url(&self, id: i64) -> StoreResult<Url>;
    async fn list_urls(&self, filter: UrlFilter, page: Page) -> StoreResult<Listing<Url>>;
    /// Up to `limit` URLs matching `filter` with an id above `after_id`, by id, uncounted:
    /// one index seek per call, for exports that walk the whole table.
    async fn urls_after(
        &self,
        filter: UrlFilter,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<Url>>;
    /// How many URLs are active (for the `shortener_urls_active` gauge), as
    /// list totals count: exact up to the backend's cap, the planner's
    /// estimate beyond it.
    async fn count_active_urls(&self) -> StoreResult<i64>;
    /// Applies the patch and records one `updated` event per changed field.
    async fn update_url(&self, id: i64, patch: UrlPatch, by: Actor) -> StoreResult<Url>;
    /// Deactivates the URL with a `deleted` event; a second call changes
    /// nothing and records nothing.
    async fn deactivate_url(&self, id: i64, reason: &str, by: Actor) -> StoreResult<Url>;
    async fn url_stats(&self, id: i64) -> StoreResult<UrlStats>;
    /// The redirect lookup: one indexed read by short code.
    async fn resolve(&self, code: &str) -> StoreResult<Option<RedirectTarget>>;

    /// Up to `limit` of the most recently created active URLs, newest first
    /// (cache warm-up).
    async fn recent_active_targets(&self, limit: i64) -> StoreResult<Vec<RedirectTarget>>;

    /// Records an event posted by a client (`source = client`).
    async fn create_event(&self, event: NewEvent, by: Actor) -> StoreResult<Event>;
    async fn list_events(&self, filter: EventFilter, page: Page) -> StoreResult<Listing<Event>>;
    /// A link's analytics from `from` (inclusive) to `to` (exclusive): its clicks per hour,
    /// its clicks per referrer, browser, operating system and device over the range, and its
    /// unique visitors per day (each day the range touches). Read from the
    /// rollups the click writer keeps, never from the events.
    async fn url_analytics(
        &self,
        url_id: i64,
        from: crate::domain::Timestamp,
        to: crate::domain::Timestamp,
    ) -> StoreResult<AnalyticsRows>;
    /// The visitor salt of `day`: the one stored, or `fresh` when none is yet (stored then).
    /// Salts of days before the one before `day` are deleted.
    async fn visitor_salt(&self, day: chrono::NaiveDate, fresh: Vec<u8>) -> StoreResult<Vec<u8>>;
    /// As [`Store::urls_after`], for events.
    async fn events_after(
        &self,
        filter: EventFilter,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<Event>>;
    /// Appends many `redirect` events and adds them to the URLs' redirect
    /// counters, in one transaction, recording `origin` as its writer's
    /// last committed batch. Concurrent calls should use different
    /// `shard`s: each shard has its own counter row per URL, so they do not
    /// wait for one another's row locks.
    async fn record_clicks(
        &self,
        clicks: &[Click],
        shard: i16,
        origin: BatchOrigin,
    ) -> StoreResult<()>;
    /// Records a visit to a capped link (`max_visits`) if one is left: takes
    /// it and writes the click (to shard `shard`'s counters) in one
    /// transaction, or writes nothing and returns `false` when the cap is
    /// reached. Exact across replicas: never more than `max_visits` succeed.
    async fn record_visit(&self, click: &Click, shard: i16) -> StoreResult<bool>;
    /// Writes spilled click batches back, each exactly once: a batch's id is
    /// recorded in the same transaction as its clicks, and a batch whose id
    /// is already recorded is skipped, as is one whose `origin` write did
    /// commit after all. One transaction for all of `batches`; returns how
    /// many clicks were written (the rest had been).
    async fn record_spilled_clicks(&self, batches: &[ClickBatch], shard: i16)
    -> StoreResult<usize>;
    /// Stores a new key (its hash); a `user_id` must name a live user.
    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey>;
    async fn get_api_key(&self, id: i64) -> StoreResult<ApiKey>;
    async fn list_api_keys(&self, page: Page) -> StoreResult<Listing<ApiKey>>;
    /// Revokes a key; revoking it again changes nothing.
    async fn revoke_api_key(&self, id: i64) -> StoreResult<ApiKey>;
    /// The live key with this hash, recording that it was used now; `None`
    /// for an unknown, revoked, expired or bootstrap key.
    async fn use_api_key(&self, secret_sha256: &str) -> StoreResult<Option<ApiKey>>;
    /// The id of the row that names `ADMIN_API_KEY` (hash given), made on
    /// first use.
    async fn bootstrap_api_key(&self, secret_sha256: &str, prefix: &str) -> StoreResult<i64>;

    /// Most `record_clicks` calls worth running at once on this backend.
    fn click_writers_limit(&self) -> usize;

    /// Loads the platform's seed files (explicit ids), skipping rows already
    /// present, then moves id sequences past the largest id.
    async fn load_seed(&self, seed: SeedData) -> StoreResult<SeedOutcome>;

    /// Creates a URL with a fresh random short code, retrying on the rare
    /// collision (the unique index makes this safe across replicas).
    async fn create_url_with_generated_code(&self, url: NewUrl, by: Actor) -> StoreResult<Url> {
        for _ in 0..SHORT_CODE_ATTEMPTS {
            match self
                .insert_url(url.clone(), &ShortCode::generate(), by)
                .await
            {
                Err(StoreError::Conflict(Conflict::ShortCodeTaken)) => continue,
                other => return other,
            }
        }
        Err(StoreError::Conflict(Conflict::ShortCodeTaken))
    }
}

pub type DynStore = Arc<dyn Store>;
