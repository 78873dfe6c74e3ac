//! The one implementation of [`Store`] over SQL, shared by PostgreSQL and
//! SQLite. Both accept the same `$N` placeholders and `RETURNING`, so each
//! statement is written once; what genuinely differs (row locks, id
//! sequences) is a [`Dialect`], implemented in `postgres.rs` and `sqlite.rs`.

use async_trait::async_trait;
use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool,
    QueryBuilder, Transaction, Type,
};

use super::*;
use crate::domain::{ShortCode, Timestamp, now};

pub const USER_COLUMNS: &str = "id, username, email, created_at";
pub const URL_COLUMNS: &str =
    "id, user_id, short_code, original_url, title, is_active, created_at, updated_at, version";
pub const EVENT_COLUMNS: &str = "id, url_id, user_id, event_type, timestamp, details";

pub const PING: &str = "SELECT 1";

pub const INSERT_USER: &str = "INSERT INTO users (username, email, created_at) VALUES ($1, $2, $3) \
     RETURNING id, username, email, created_at";
pub const GET_LIVE_USER: &str =
    "SELECT id, username, email, created_at FROM users WHERE id = $1 AND deleted_at IS NULL";
pub const UPDATE_USER: &str = "UPDATE users SET username = COALESCE($2, username), \
     email = COALESCE($3, email) WHERE id = $1 AND deleted_at IS NULL \
     RETURNING id, username, email, created_at";
pub const SOFT_DELETE_USER: &str =
    "UPDATE users SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL";
/// Records a `deleted` event for every active URL of a user being deleted;
/// runs before [`Dialect::DEACTIVATE_USER_URLS`] in the same transaction.
pub const OWNER_DELETED_EVENTS: &str = "INSERT INTO events (url_id, user_id, event_type, timestamp, details) \
     SELECT id, user_id, 'deleted', $2, $3 FROM urls WHERE user_id = $1 AND is_active";

pub const INSERT_URL: &str = "INSERT INTO urls \
     (user_id, short_code, original_url, title, is_active, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, TRUE, $5, $5) \
     RETURNING id, user_id, short_code, original_url, title, is_active, created_at, updated_at, \
     version";
pub const GET_URL: &str = "SELECT id, user_id, short_code, original_url, title, is_active, \
     created_at, updated_at, version FROM urls WHERE id = $1";
pub const UPDATE_URL: &str = "UPDATE urls SET original_url = $2, title = $3, is_active = $4, \
     updated_at = $5, version = version + 1 WHERE id = $1 \
     RETURNING id, user_id, short_code, original_url, title, is_active, created_at, updated_at, \
     version";
pub const RESOLVE: &str = "SELECT short_code, id AS url_id, user_id, original_url, is_active, \
     version FROM urls WHERE short_code = $1";
/// The most recently created active URLs, for cache warm-up (served by the
/// `(is_active, id)` index, read backwards).
pub const RECENT_ACTIVE_TARGETS: &str = "SELECT short_code, id AS url_id, user_id, original_url, \
     is_active, version FROM urls WHERE is_active ORDER BY id DESC LIMIT $1";
pub const USER_IS_LIVE: &str = "SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL";
pub const URL_EXISTS: &str = "SELECT id FROM urls WHERE id = $1";

pub const INSERT_EVENT: &str = "INSERT INTO events (url_id, user_id, event_type, timestamp, details) \
     VALUES ($1, $2, $3, $4, $5) \
     RETURNING id, url_id, user_id, event_type, timestamp, details";
/// Counts of every event type but `redirect` (which can number millions
/// and is counted in `redirect_counts` instead), from the partial index of
/// exactly those rows (`events_url_id_counted_type_idx`; the predicate is
/// written as the index's, so even a generic prepared plan uses it).
pub const EVENT_COUNTS_FOR_URL: &str = "SELECT event_type, COUNT(*) FROM events \
     WHERE url_id = $1 AND event_type <> 'redirect' \
     GROUP BY event_type";
/// A URL's counter rows, one per click-writer shard that has counted it
/// (summed by the caller: a few rows, one primary-key range).
pub const REDIRECT_COUNTERS: &str =
    "SELECT redirect_count, last_redirect_at FROM redirect_counts WHERE url_id = $1";
/// Recomputes the redirect counters from the events, after a seed load:
/// every URL's count ends up in shard 0.
pub const CLEAR_REDIRECT_COUNTERS: &str = "DELETE FROM redirect_counts";
pub const RECOUNT_REDIRECTS: &str = "INSERT INTO redirect_counts \
     (url_id, shard, redirect_count, last_redirect_at) \
     SELECT url_id, 0, COUNT(*), MAX(timestamp) FROM events WHERE event_type = 'redirect' \
     GROUP BY url_id";

pub const SEED_USER: &str = "INSERT INTO users (id, username, email, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
pub const SEED_URL: &str = "INSERT INTO urls (id, user_id, short_code, original_url, title, \
     is_active, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT DO NOTHING";
pub const SEED_EVENT: &str = "INSERT INTO events (id, url_id, user_id, event_type, timestamp, \
     details) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

/// Most rows a multi-row INSERT carries: 4 parameters a click keeps the
/// statement far below both backends' bind-parameter limits.
pub const CLICKS_PER_STATEMENT: usize = 1000;

/// `SELECT … FROM urls WHERE <filter>` for `GET /urls`.
pub fn push_url_filter<DB: Database>(qb: &mut QueryBuilder<DB>, filter: &UrlFilter)
where
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    bool: for<'t> Encode<'t, DB> + Type<DB>,
{
    qb.push(" WHERE TRUE");
    if let Some(user_id) = filter.user_id {
        qb.push(" AND user_id = ").push_bind(user_id);
    }
    if let Some(active) = filter.is_active {
        qb.push(" AND is_active = ").push_bind(active);
    }
}

/// `… FROM events WHERE <filter>` for `GET /events`.
pub fn push_event_filter<DB: Database>(qb: &mut QueryBuilder<DB>, filter: &EventFilter)
where
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
{
    qb.push(" WHERE TRUE");
    if let Some(url_id) = filter.url_id {
        qb.push(" AND url_id = ").push_bind(url_id);
    }
    if let Some(user_id) = filter.user_id {
        qb.push(" AND user_id = ").push_bind(user_id);
    }
    if let Some(event_type) = &filter.event_type {
        qb.push(" AND event_type = ").push_bind(event_type.clone());
    }
}

/// Appends the page: after a cursor (`id > after_id`, any depth at the
/// cost of one index seek) or at an offset (bounded by the HTTP layer).
/// Must follow a `WHERE`.
pub fn push_page<DB: Database>(qb: &mut QueryBuilder<DB>, page: super::Page)
where
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    if let Some(after) = page.after_id {
        qb.push(" AND id > ").push_bind(after);
    }
    qb.push(" ORDER BY id LIMIT ").push_bind(page.limit());
    if page.after_id.is_none() {
        qb.push(" OFFSET ").push_bind(page.offset());
    }
}

/// Reads the planner's row estimate from `EXPLAIN (FORMAT JSON)` output.
fn planned_rows(plan: &Value) -> Option<i64> {
    plan.get(0)?
        .get("Plan")?
        .get("Plan Rows")?
        .as_f64()
        .map(|rows| rows as i64)
}

/// What differs between the SQL backends.
pub trait Dialect: Database {
    /// `SELECT <url columns> FROM urls WHERE id = $1`, locking the row for
    /// the rest of the transaction where the backend has row locks.
    const LOCK_URL: &'static str;
    /// Imports one user row; a NULL id takes the next id; a row whose id or
    /// live email exists is skipped (`RETURNING id` yields nothing).
    const IMPORT_USER: &'static str;
    /// Deactivates every active URL of user `$1` at time `$2`, returning
    /// them; `updated_at` moves forward by at least a second, as for any
    /// other write (see `next_updated_at`).
    const DEACTIVATE_USER_URLS: &'static str;
    /// The statement that moves `table`'s id generator past its largest id
    /// after rows were inserted with explicit ids, if the backend needs one.
    fn sync_sequence(table: &str) -> Option<String>;
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// Writes a click batch's events and its per-URL counter deltas
    /// (sorted by `url_id`) in `tx`, when the backend has a better way than
    /// the portable multi-row `VALUES` statements (`None`: use those).
    fn write_clicks<'t>(
        _tx: &'t mut sqlx::Transaction<'static, Self>,
        _clicks: &'t [Click],
        _counters: &'t [(i64, (i64, Timestamp))],
        _shard: i16,
    ) -> Option<futures_util::future::BoxFuture<'t, Result<(), sqlx::Error>>> {
        None
    }
    /// How many click batches may be written at once: PostgreSQL overlaps
    /// their commits; SQLite has a single writer.
    const CONCURRENT_WRITERS: usize;
    /// Lists count matching rows exactly up to this many; beyond it, the
    /// total is the planner's estimate (an exact count would read every
    /// matching row). `None`: always exact.
    const COUNT_CAP: Option<i64>;
}

/// A [`Store`] on any SQL backend with a [`Dialect`]. Reads use `pool`;
/// writes use `writer`, which is the same pool on PostgreSQL and a single
/// connection on SQLite (one writer per file, so writers queue in-process
/// instead of failing with `SQLITE_BUSY`).
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    pub(super) writer: Pool<DB>,
}

/// The few steps several operations share.
impl<DB: Dialect> SqlStore<DB>
where
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Timestamp: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Json<Value>: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB> + Type<DB>,
    Option<String>: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Option<Timestamp>: for<'r> Decode<'r, DB> + Type<DB>,
{
    /// One page of `SELECT columns <from>` in id order, and how many rows
    /// `<from>` matches. `from` pushes ` FROM … WHERE …`.
    async fn page_of<T>(
        &self,
        columns: &str,
        page: Page,
        from: impl Fn(&mut QueryBuilder<DB>),
    ) -> StoreResult<Listing<T>>
    where
        T: for<'r> sqlx::FromRow<'r, DB::Row> + Send + Unpin,
    {
        let mut select = QueryBuilder::<DB>::new(format!("SELECT {columns}"));
        from(&mut select);
        push_page(&mut select, page);
        let mut count = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM (SELECT 1");
        from(&mut count);
        if let Some(cap) = DB::COUNT_CAP {
            count.push(" LIMIT ").push_bind(cap + 1);
        }
        count.push(") AS matching");
        let items = select.build_query_as::<T>().fetch_all(&self.pool);
        let counted = count.build_query_scalar::<i64>().fetch_one(&self.pool);
        let (items, counted) = tokio::try_join!(items, counted)?;
        if DB::COUNT_CAP.is_none_or(|cap| counted <= cap) {
            return Ok(Listing {
                items,
                total: counted,
                estimated: false,
            });
        }
        let mut explain = QueryBuilder::<DB>::new("EXPLAIN (FORMAT JSON) SELECT 1");
        from(&mut explain);
        let (plan,): (Json<Value>,) = explain.build_query_as().fetch_one(&self.pool).await?;
        let estimate = planned_rows(&plan.0).unwrap_or(counted).max(counted);
        Ok(Listing {
            items,
            total: estimate,
            estimated: true,
        })
    }

    async fn lock_url(tx: &mut Transaction<'static, DB>, id: i64) -> StoreResult<Url> {
        sqlx::query_as::<DB, Url>(DB::LOCK_URL)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound(Entity::Url))
    }

    async fn sync_sequence(
        tx: &mut Transaction<'static, DB>,
        table: &'static str,
    ) -> StoreResult<()> {
        if let Some(statement) = DB::sync_sequence(table) {
            sqlx::query::<DB>(AssertSqlSafe(statement))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn insert_event_in(
        tx: &mut Transaction<'static, DB>,
        url: &Url,
        event_type: &'static str,
        details: Value,
    ) -> StoreResult<()> {
        sqlx::query::<DB>(INSERT_EVENT)
            .bind(url.id)
            .bind(url.user_id)
            .bind(event_type)
            .bind(now())
            .bind(Json(details))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl<DB: Dialect> Store for SqlStore<DB>
where
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Timestamp: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Json<Value>: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB> + Type<DB>,
    Option<String>: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Option<Timestamp>: for<'r> Decode<'r, DB> + Type<DB>,
{
    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            open: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query(PING).execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.create_user", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "create_user"))]
    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        Ok(sqlx::query_as(INSERT_USER)
            .bind(user.username)
            .bind(user.email.as_str())
            .bind(now())
            .fetch_one(&self.writer)
            .await?)
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.get_user", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "get_user"))]
    async fn get_user(&self, id: i64) -> StoreResult<User> {
        sqlx::query_as(GET_LIVE_USER)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound(Entity::User))
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.list_users", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "list_users"))]
    async fn list_users(&self, page: Page) -> StoreResult<Listing<User>> {
        self.page_of(USER_COLUMNS, page, |qb| {
            qb.push(" FROM users WHERE deleted_at IS NULL");
        })
        .await
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.update_user", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "update_user"))]
    async fn update_user(&self, id: i64, patch: UserPatch) -> StoreResult<User> {
        sqlx::query_as(UPDATE_USER)
            .bind(id)
            .bind(patch.username)
            .bind(patch.email.map(|e| e.as_str().to_owned()))
            .fetch_optional(&self.writer)
            .await?
            .ok_or(StoreError::NotFound(Entity::User))
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.delete_user", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "delete_user"))]
    async fn delete_user(&self, id: i64) -> StoreResult<UserDeletion> {
        let at = now();
        let mut tx = self.writer.begin().await?;
        let deleted = DB::rows_affected(
            &sqlx::query(SOFT_DELETE_USER)
                .bind(id)
                .bind(at)
                .execute(&mut *tx)
                .await?,
        );
        if deleted == 0 {
            return Err(StoreError::NotFound(Entity::User));
        }
        sqlx::query(OWNER_DELETED_EVENTS)
            .bind(id)
            .bind(at)
            .bind(Json(json!({"reason": "owner_deleted"})))
            .execute(&mut *tx)
            .await?;
        let deactivated = sqlx::query_as(DB::DEACTIVATE_USER_URLS)
            .bind(id)
            .bind(at)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(UserDeletion { deactivated })
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.import_users", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "import_users"))]
    async fn import_users(&self, users: Vec<ImportedUser>) -> StoreResult<ImportOutcome> {
        let mut outcome = ImportOutcome::default();
        let mut tx = self.writer.begin().await?;
        // Explicit ids first, then move the sequence past them, so that rows
        // without an id never draw a number that is already taken.
        let (explicit, generated): (Vec<_>, Vec<_>) =
            users.into_iter().partition(|u| u.id.is_some());
        for (batch, sync_after) in [(explicit, true), (generated, false)] {
            for user in batch {
                let inserted: Option<i64> = sqlx::query_scalar(DB::IMPORT_USER)
                    .bind(user.id)
                    .bind(user.username)
                    .bind(user.email.as_str())
                    .bind(user.created_at.unwrap_or_else(now))
                    .fetch_optional(&mut *tx)
                    .await?;
                match inserted {
                    Some(_) => outcome.imported += 1,
                    None => outcome.skipped_lines.push(user.line),
                }
            }
            if sync_after {
                Self::sync_sequence(&mut tx, "users").await?;
            }
        }
        tx.commit().await?;
        outcome.skipped_lines.sort_unstable();
        Ok(outcome)
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.insert_url", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "insert_url"))]
    async fn insert_url(&self, url: NewUrl, code: &ShortCode) -> StoreResult<Url> {
        let mut tx = self.writer.begin().await?;
        if let Some(user_id) = url.user_id {
            sqlx::query_scalar::<_, i64>(USER_IS_LIVE)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound(Entity::User))?;
        }
        let created: Url = sqlx::query_as(INSERT_URL)
            .bind(url.user_id)
            .bind(code.as_str())
            .bind(url.original_url.as_str())
            .bind(url.title)
            .bind(now())
            .fetch_one(&mut *tx)
            .await?;
        let details =
            json!({"short_code": created.short_code, "original_url": created.original_url});
        Self::insert_event_in(&mut tx, &created, "created", details).await?;
        tx.commit().await?;
        Ok(created)
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.get_url", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "get_url"))]
    async fn get_url(&self, id: i64) -> StoreResult<Url> {
        sqlx::query_as(GET_URL)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound(Entity::Url))
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.list_urls", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "list_urls"))]
    async fn list_urls(&self, filter: UrlFilter, page: Page) -> StoreResult<Listing<Url>> {
        self.page_of(URL_COLUMNS, page, |qb| {
            qb.push(" FROM urls");
            push_url_filter(qb, &filter);
        })
        .await
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.update_url", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "update_url"))]
    async fn update_url(&self, id: i64, patch: UrlPatch) -> StoreResult<Url> {
        let mut tx = self.writer.begin().await?;
        let current = Self::lock_url(&mut tx, id).await?;
        let changes = patch.changes(&current);
        let updated: Url = sqlx::query_as(UPDATE_URL)
            .bind(id)
            .bind(
                patch
                    .original_url
                    .map_or(current.original_url.clone(), |u| u.to_string()),
            )
            .bind(patch.title.unwrap_or_else(|| current.title.clone()))
            .bind(patch.is_active.unwrap_or(current.is_active))
            .bind(next_updated_at(&current))
            .fetch_one(&mut *tx)
            .await?;
        for details in changes {
            Self::insert_event_in(&mut tx, &updated, "updated", details).await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.deactivate_url", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "deactivate_url"))]
    async fn deactivate_url(&self, id: i64, reason: &str) -> StoreResult<Url> {
        let mut tx = self.writer.begin().await?;
        let current = Self::lock_url(&mut tx, id).await?;
        if !current.is_active {
            return Ok(current);
        }
        let updated: Url = sqlx::query_as(UPDATE_URL)
            .bind(id)
            .bind(current.original_url.clone())
            .bind(current.title.clone())
            .bind(false)
            .bind(next_updated_at(&current))
            .fetch_one(&mut *tx)
            .await?;
        Self::insert_event_in(&mut tx, &updated, "deleted", json!({"reason": reason})).await?;
        tx.commit().await?;
        Ok(updated)
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.url_stats", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "url_stats"))]
    async fn url_stats(&self, id: i64) -> StoreResult<UrlStats> {
        let url = self.get_url(id).await?;
        let counts = sqlx::query_as::<_, (String, i64)>(EVENT_COUNTS_FOR_URL)
            .bind(id)
            .fetch_all(&self.pool);
        let shards = sqlx::query_as::<_, (i64, Timestamp)>(REDIRECT_COUNTERS)
            .bind(id)
            .fetch_all(&self.pool);
        let (counts, shards) = tokio::try_join!(counts, shards)?;
        let redirect_count = shards.iter().map(|(count, _)| count).sum();
        let last_redirect_at = shards.iter().map(|(_, at)| *at).max();
        Ok(UrlStats::new(url, counts, redirect_count, last_redirect_at))
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.resolve", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "resolve"))]
    async fn resolve(&self, code: &str) -> StoreResult<Option<RedirectTarget>> {
        Ok(sqlx::query_as(RESOLVE)
            .bind(code)
            .fetch_optional(&self.pool)
            .await?)
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.recent_active_targets", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "recent_active_targets"))]
    async fn recent_active_targets(&self, limit: i64) -> StoreResult<Vec<RedirectTarget>> {
        Ok(sqlx::query_as(RECENT_ACTIVE_TARGETS)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.create_event", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "create_event"))]
    async fn create_event(&self, event: NewEvent) -> StoreResult<Event> {
        let url = sqlx::query_scalar::<_, i64>(URL_EXISTS)
            .bind(event.url_id)
            .fetch_optional(&self.pool);
        let user = sqlx::query_scalar::<_, i64>(USER_IS_LIVE)
            .bind(event.user_id)
            .fetch_optional(&self.pool);
        match tokio::try_join!(url, user)? {
            (None, _) => return Err(StoreError::NotFound(Entity::Url)),
            (_, None) => return Err(StoreError::NotFound(Entity::User)),
            _ => {}
        }
        Ok(sqlx::query_as(INSERT_EVENT)
            .bind(event.url_id)
            .bind(event.user_id)
            .bind(event.event_type)
            .bind(now())
            .bind(Json(Value::Object(event.details)))
            .fetch_one(&self.writer)
            .await?)
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.list_events", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "list_events"))]
    async fn list_events(&self, filter: EventFilter, page: Page) -> StoreResult<Listing<Event>> {
        self.page_of(EVENT_COLUMNS, page, |qb| {
            qb.push(" FROM events");
            push_event_filter(qb, &filter);
        })
        .await
    }

    fn click_writers_limit(&self) -> usize {
        DB::CONCURRENT_WRITERS
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.record_clicks", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "record_clicks", db.operation.batch.size = clicks.len(), shortener.counter_shard = shard))]
    async fn record_clicks(&self, clicks: &[Click], shard: i16) -> StoreResult<()> {
        if clicks.is_empty() {
            return Ok(());
        }
        // Per URL: how many clicks, and the latest.
        let mut per_url: std::collections::BTreeMap<i64, (i64, Timestamp)> = Default::default();
        for click in clicks {
            let entry = per_url.entry(click.url_id).or_insert((0, click.at));
            entry.0 += 1;
            entry.1 = entry.1.max(click.at);
        }
        let per_url: Vec<_> = per_url.into_iter().collect();
        let mut tx = self.writer.begin().await?;
        let written = match DB::write_clicks(&mut tx, clicks, &per_url, shard) {
            Some(write) => {
                write.await?;
                true
            }
            None => false,
        };
        if written {
            tx.commit().await?;
            return Ok(());
        }
        for chunk in clicks.chunks(CLICKS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<DB>::new(
                "INSERT INTO events (url_id, user_id, event_type, timestamp, details) ",
            );
            insert.push_values(chunk, |mut row, click| {
                row.push_bind(click.url_id)
                    .push_bind(click.user_id)
                    .push_bind("redirect")
                    .push_bind(click.at)
                    .push_bind(Json(json!({"short_code": click.short_code})));
            });
            insert.build().execute(&mut *tx).await?;
        }
        for chunk in per_url.chunks(CLICKS_PER_STATEMENT) {
            // Each writer counts into its own shard's rows, so concurrent
            // writers of one replica never wait on each other. Writers of
            // different replicas may share a shard number; they take the row
            // locks in url_id order (the map is sorted), so they queue
            // instead of deadlocking.
            let mut counters = QueryBuilder::<DB>::new(
                "INSERT INTO redirect_counts (url_id, shard, redirect_count, last_redirect_at) ",
            );
            counters.push_values(chunk, |mut row, (url_id, (count, at))| {
                row.push_bind(*url_id)
                    .push_bind(i64::from(shard))
                    .push_bind(*count)
                    .push_bind(*at);
            });
            counters.push(
                " ON CONFLICT (url_id, shard) DO UPDATE SET \
                 redirect_count = redirect_counts.redirect_count + excluded.redirect_count, \
                 last_redirect_at = CASE WHEN excluded.last_redirect_at > \
                 redirect_counts.last_redirect_at THEN excluded.last_redirect_at \
                 ELSE redirect_counts.last_redirect_at END",
            );
            counters.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(target = "shortener::trace", name = "db.load_seed", level = "debug", skip_all, fields(otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME), db.operation.name = "load_seed"))]
    async fn load_seed(&self, seed: SeedData) -> StoreResult<SeedOutcome> {
        let mut tx = self.writer.begin().await?;
        let mut outcome = SeedOutcome::default();
        for user in seed.users {
            outcome.users += DB::rows_affected(
                &sqlx::query(SEED_USER)
                    .bind(user.id)
                    .bind(user.username)
                    .bind(user.email.as_str())
                    .bind(user.created_at.unwrap_or_else(now))
                    .execute(&mut *tx)
                    .await?,
            );
        }
        for url in seed.urls {
            outcome.urls += DB::rows_affected(
                &sqlx::query(SEED_URL)
                    .bind(url.id)
                    .bind(url.user_id)
                    .bind(url.short_code)
                    .bind(url.original_url)
                    .bind(url.title)
                    .bind(url.is_active)
                    .bind(url.created_at)
                    .bind(url.updated_at)
                    .execute(&mut *tx)
                    .await?,
            );
        }
        for event in seed.events {
            outcome.events += DB::rows_affected(
                &sqlx::query(SEED_EVENT)
                    .bind(event.id)
                    .bind(event.url_id)
                    .bind(event.user_id)
                    .bind(event.event_type)
                    .bind(event.timestamp)
                    .bind(event.details)
                    .execute(&mut *tx)
                    .await?,
            );
        }
        sqlx::query(CLEAR_REDIRECT_COUNTERS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(RECOUNT_REDIRECTS).execute(&mut *tx).await?;
        for table in ["users", "urls", "events"] {
            Self::sync_sequence(&mut tx, table).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}
