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

/// One statement as a `&'static str`: string literals and column lists,
/// each list written only here. `EVENT` is an event's columns but `id` (as
/// inserts name them); `TARGET`, [`RedirectTarget`]'s.
macro_rules! sql {
    (@ USER) => { "id, username, email, created_at" };
    (@ URL) => { "id, user_id, short_code, original_url, title, is_active, created_at, updated_at, \
         redirect_type, expires_at, max_visits, fallback_url, password_hash, rules, forward_query, \
         visits, version" };
    (@ EVENT) => { "url_id, user_id, event_type, timestamp, details" };
    (@ ATTRIBUTED_EVENT) => { "url_id, user_id, event_type, timestamp, details, source, key_id" };
    (@ API_KEY) => { "id, name, scope, user_id, prefix, bootstrap, created_at, created_by, \
         expires_at, revoked_at, last_used_at" };
    (@ COUNTER) => { "url_id, shard, redirect_count, last_redirect_at" };
    // Records batch `$b` as writer `$w`'s last committed one (at `$t`); the
    // placeholders are given, as the statement runs alone and inside another.
    (@ (RECORD_WRITER_PROGRESS $w:literal $b:literal $t:literal)) => { concat!(
        "INSERT INTO click_writers (writer, last_batch, updated_at) VALUES (", $w, ", ", $b, ", ", $t,
        ") ON CONFLICT (writer) DO UPDATE SET \
         last_batch = excluded.last_batch, updated_at = excluded.updated_at") };
    // A click batch's per-URL deltas (rows of `COUNTER`) added to the counter rows they
    // meet; `$greatest` is the backend's two-argument maximum.
    (@ (ADD_TO_COUNTERS $greatest:literal)) => { concat!(
        " ON CONFLICT (url_id, shard) DO UPDATE SET \
         redirect_count = redirect_counts.redirect_count + excluded.redirect_count, \
         last_redirect_at = ", $greatest, "(redirect_counts.last_redirect_at, excluded.last_redirect_at)") };
    (@ TARGET) => { "short_code, id AS url_id, user_id, original_url, is_active, version, \
         redirect_type, expires_at, max_visits, fallback_url, password_hash, rules, forward_query" };
    (@ $text:literal) => { $text };
    ($($part:tt)+) => { concat!($(sql!(@ $part)),+) };
}
pub(super) use sql;

const PING: &str = "SELECT 1";

const INSERT_USER: &str = sql!("INSERT INTO users (username, email, created_at) \
     VALUES ($1, $2, $3) RETURNING " USER);
const GET_LIVE_USER: &str = sql!("SELECT " USER " FROM users WHERE id = $1 AND deleted_at IS NULL");
const UPDATE_USER: &str = sql!("UPDATE users SET username = COALESCE($2, username), \
     email = COALESCE($3, email) WHERE id = $1 AND deleted_at IS NULL RETURNING " USER);
const SOFT_DELETE_USER: &str =
    "UPDATE users SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL";
/// Records a `deleted` event for every active URL of a user being deleted;
/// runs before [`Dialect::DEACTIVATE_USER_URLS`] in the same transaction.
const OWNER_DELETED_EVENTS: &str = sql!("INSERT INTO events (" ATTRIBUTED_EVENT ") \
     SELECT id, user_id, 'deleted', $2, $3, 'service', $4 FROM urls WHERE user_id = $1 AND is_active");
/// A deleted user's keys stop working with them: the ids of those revoked
/// now, for the replicas that may hold them on trust.
const REVOKE_USER_KEYS: &str =
    "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL RETURNING id";

const INSERT_URL: &str = sql!("INSERT INTO urls \
     (user_id, short_code, original_url, title, is_active, created_at, updated_at, \
     redirect_type, expires_at, max_visits, fallback_url, password_hash, rules, forward_query) \
     VALUES ($1, $2, $3, $4, TRUE, $5, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING " URL);
/// An imported link with its own code and creation time; nothing when the code is taken.
const IMPORT_URL: &str = sql!("INSERT INTO urls \
     (user_id, short_code, original_url, title, is_active, created_at, updated_at, \
     expires_at, max_visits) VALUES ($1, $2, $3, $4, TRUE, $5, $5, $6, $7) \
     ON CONFLICT (short_code) DO NOTHING RETURNING " URL);
const TARGET_OF_CODE: &str = "SELECT original_url FROM urls WHERE short_code = $1";
pub(super) const GET_URL: &str = sql!("SELECT " URL " FROM urls WHERE id = $1");
const UPDATE_URL: &str = sql!("UPDATE urls SET original_url = $2, title = $3, is_active = $4, \
     updated_at = $5, redirect_type = $6, expires_at = $7, max_visits = $8, fallback_url = $9, \
     visits = $10, password_hash = $11, rules = $12, forward_query = $13, version = version + 1 \
     WHERE id = $1 RETURNING " URL);
/// A link's clicks per hour over `[$2, $3)` (all shards).
const ANALYTICS_HOURLY: &str = "SELECT hour, CAST(SUM(clicks) AS BIGINT) FROM click_rollups \
     WHERE url_id = $1 AND hour >= $2 AND hour < $3 GROUP BY hour ORDER BY hour";
/// A link's clicks per referrer, browser, operating system and device over `[$2, $3)` (all
/// shards, all hours), as `(dimension, value, clicks)` rows (`analytics::Dimension`'s names).
macro_rules! breakdown {
    ($first:literal $(, $column:literal)*) => {
        concat!(breakdown!(@ $first) $(, " UNION ALL ", breakdown!(@ $column))*)
    };
    (@ $column:literal) => {
        concat!("SELECT '", $column, "', ", $column, ", CAST(SUM(clicks) AS BIGINT) \
             FROM click_rollups WHERE url_id = $1 AND hour >= $2 AND hour < $3 GROUP BY ",
             $column)
    };
}
const ANALYTICS_BREAKDOWN: &str = breakdown!("referrer", "browser", "os", "device");
/// A link's unique visitors per day over `[$2, $3]`.
const ANALYTICS_VISITORS: &str = "SELECT day, COUNT(*) FROM visitor_days \
     WHERE url_id = $1 AND day >= $2 AND day <= $3 GROUP BY day ORDER BY day";
const ADD_VISITOR_SALT: &str =
    "INSERT INTO visitor_salts (day, salt) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const VISITOR_SALT: &str = "SELECT salt FROM visitor_salts WHERE day = $1";
const FORGET_VISITOR_SALTS: &str = "DELETE FROM visitor_salts WHERE day < $1";
/// A URL's redirects so far (all shards): where its visits start when a cap is set.
const REDIRECT_TOTAL: &str = "SELECT CAST(COALESCE(SUM(redirect_count), 0) AS BIGINT) \
     FROM redirect_counts WHERE url_id = $1";
/// Takes one of URL `$1`'s visits: its new count, or no row when its cap is reached. The row
/// lock (PostgreSQL) or the single writer (SQLite) orders concurrent takers, so no more
/// than `max_visits` ever succeed, whichever replicas they come through.
const TAKE_VISIT: &str = "UPDATE urls SET visits = visits + 1 \
     WHERE id = $1 AND (max_visits IS NULL OR visits < max_visits) RETURNING visits";
const RESOLVE: &str = sql!("SELECT " TARGET " FROM urls WHERE short_code = $1");
/// The most recently created active URLs, for cache warm-up (served by the
/// `(is_active, id)` index, read backwards).
const RECENT_ACTIVE_TARGETS: &str =
    sql!("SELECT " TARGET " FROM urls WHERE is_active ORDER BY id DESC LIMIT $1");
const USER_IS_LIVE: &str = "SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL";
const URL_EXISTS: &str = "SELECT id FROM urls WHERE id = $1";

const INSERT_EVENT: &str = sql!("INSERT INTO events (" ATTRIBUTED_EVENT ") \
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, " ATTRIBUTED_EVENT);
/// Counts of every event type but `redirect` (which can number millions
/// and is counted in `redirect_counts` instead), from the partial index of
/// exactly those rows (`events_url_id_other_type_idx`; the predicate is
/// written as the index's, so even a generic prepared plan uses it).
/// Only the service's own events count: a client may post an event of any
/// type but `redirect`.
pub const EVENT_COUNTS_FOR_URL: &str = "SELECT event_type, COUNT(*) FROM events \
     WHERE url_id = $1 AND event_type <> 'redirect' AND source = 'service' \
     GROUP BY event_type";
/// A URL's counter rows, one per click-writer shard that has counted it
/// (summed by the caller: a few rows, one primary-key range).
const REDIRECT_COUNTERS: &str =
    "SELECT redirect_count, last_redirect_at FROM redirect_counts WHERE url_id = $1";
/// Recomputes the redirect counters from the events, after a seed load:
/// every URL's count ends up in shard 0.
const CLEAR_REDIRECT_COUNTERS: &str = "DELETE FROM redirect_counts";
const RECOUNT_REDIRECTS: &str = sql!("INSERT INTO redirect_counts (" COUNTER ") \
     SELECT url_id, 0, COUNT(*), MAX(timestamp) FROM events WHERE event_type = 'redirect' \
     GROUP BY url_id");

const INSERT_API_KEY: &str = sql!("INSERT INTO api_keys \
     (name, scope, user_id, secret_sha256, prefix, created_at, created_by, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING " API_KEY);
const GET_API_KEY: &str = sql!("SELECT " API_KEY " FROM api_keys WHERE id = $1");
/// Revokes key `$1` at `$2`; a key already revoked keeps its first time.
const REVOKE_API_KEY: &str = sql!("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) \
     WHERE id = $1 RETURNING " API_KEY);
/// Accepts the key whose hash is `$1` at time `$2`, recording the use:
/// the key row, or none for an unknown, revoked or expired key. Bootstrap
/// rows are never accepted here (their key is checked against the
/// environment).
const USE_API_KEY: &str = sql!("UPDATE api_keys SET last_used_at = $2 \
     WHERE secret_sha256 = $1 AND NOT bootstrap AND revoked_at IS NULL \
     AND (expires_at IS NULL OR expires_at > $2) RETURNING " API_KEY);
/// The row that names `ADMIN_API_KEY` in events, made once per key.
const INSERT_BOOTSTRAP_KEY: &str = "INSERT INTO api_keys \
     (name, scope, secret_sha256, prefix, bootstrap, created_at) \
     VALUES ('ADMIN_API_KEY', 'admin', $1, $2, TRUE, $3) \
     ON CONFLICT (secret_sha256) DO NOTHING";
const KEY_ID_BY_HASH: &str = "SELECT id FROM api_keys WHERE secret_sha256 = $1";

const SEED_USER: &str =
    sql!("INSERT INTO users (" USER ") VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING");
const SEED_URL: &str = "INSERT INTO urls (id, user_id, short_code, original_url, title, \
     is_active, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT DO NOTHING";
const SEED_EVENT: &str = sql!("INSERT INTO events (id, " EVENT ") VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING");

/// Awaits `body` (an `async` block) in the client span of store operation
/// `op`: `db.<op>`, with any `extra` span fields.
macro_rules! traced {
    ($op:literal, $body:expr $(, $($extra:tt)+)?) => {{
        let span = tracing::debug_span!(target: crate::telemetry::TRACE_TARGET, concat!("db.", $op),
            otel.kind = "client", db.system.name = crate::telemetry::db_system(DB::NAME),
            db.operation.name = $op $(, $($extra)+)?);
        tracing::Instrument::instrument($body, span).await
    }};
}

/// Records a spilled click batch as written; no row when it already was.
const MARK_BATCH_APPLIED: &str =
    "INSERT INTO click_batches (id, applied_at) VALUES ($1, $2) ON CONFLICT DO NOTHING";
/// Spill files are written back within minutes of the database's return;
/// ids older than this have served their purpose.
const FORGET_APPLIED_BATCHES: &str = "DELETE FROM click_batches WHERE applied_at < $1";
/// Writer `$1`'s last committed batch (0: none). An upsert rather than a
/// read, so that it waits for a transaction of that writer still
/// finishing: that transaction holds the row's lock, or is inserting the
/// same key.
const WRITER_PROGRESS: &str = "INSERT INTO click_writers (writer, last_batch, updated_at) \
     VALUES ($1, 0, $2) ON CONFLICT (writer) DO UPDATE SET updated_at = excluded.updated_at \
     RETURNING last_batch";
const FORGET_WRITERS: &str = "DELETE FROM click_writers WHERE updated_at < $1";
const BATCH_ID_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// Appends ` AND <column> = <value>` when a list filter has a value. Must
/// follow a `WHERE`.
fn push_eq<DB: Database, T>(qb: &mut QueryBuilder<DB>, column: &str, value: Option<T>)
where
    T: for<'t> Encode<'t, DB> + Type<DB>,
{
    if let Some(value) = value {
        qb.push(format_args!(" AND {column} = ")).push_bind(value);
    }
}

/// Appends the page: after a cursor (`id > after_id`, any depth at the
/// cost of one index seek) or at an offset (bounded by the HTTP layer).
/// Must follow a `WHERE`.
fn push_page<DB: Database>(qb: &mut QueryBuilder<DB>, page: super::Page)
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

/// A click batch as [`Dialect::write_clicks`] writes it.
pub struct ClickWrite<'t> {
    pub clicks: &'t [Click],
    /// Per URL: clicks (bots' visits are not) and the latest, by `url_id`.
    pub counters: &'t [(i64, (i64, Timestamp))],
    pub analytics: &'t crate::analytics::BatchRollup,
    pub shard: i16,
    /// The direct write this is, recorded as its writer's last batch.
    pub origin: Option<BatchOrigin>,
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
    fn sync_sequence(_table: &str) -> Option<String> {
        None
    }
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// Writes a click batch's events, its per-URL counter deltas (sorted by `url_id`) and
    /// what it adds to the analytics on `conn`, and records `origin`, when given, as its
    /// writer's last batch (`sql!`'s `RECORD_WRITER_PROGRESS`), in **one call to the database** of
    /// fixed text whatever the batch size: the rows travel as one or a few parameters, not
    /// as bind parameters per row. Atomic by itself when [`Self::CLICK_WRITE_IS_ATOMIC`];
    /// otherwise the caller runs it in a transaction.
    fn write_clicks<'t>(
        conn: &'t mut Self::Connection,
        batch: ClickWrite<'t>,
    ) -> futures_util::future::BoxFuture<'t, Result<(), sqlx::Error>>;
    /// Whether [`Self::write_clicks`] is one statement, atomic without a transaction.
    const CLICK_WRITE_IS_ATOMIC: bool;
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
    /// Visitor rows this store has committed (see `write_clicks_on`).
    pub(super) visitors: crate::analytics::WrittenVisitors,
}

/// The few steps several operations share.
impl<DB: Dialect> SqlStore<DB>
where
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    i16: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Timestamp: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Json<Value>: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB> + Type<DB>,
    Option<String>: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Option<Timestamp>: for<'q> Encode<'q, DB> + Type<DB>,
{
    /// One page of `select <from>` in id order, and how many rows `<from>`
    /// matches. `from` pushes ` FROM … WHERE …`.
    async fn page_of<T>(
        &self,
        select: &'static str,
        page: Page,
        from: impl Fn(&mut QueryBuilder<DB>),
    ) -> StoreResult<Listing<T>>
    where
        T: for<'r> sqlx::FromRow<'r, DB::Row> + Send + Unpin,
    {
        let items = self.rows_of(select, page, &from);
        let (items, (total, estimated)) = tokio::try_join!(items, self.count(&from))?;
        Ok(Listing {
            items,
            total,
            estimated,
        })
    }

    /// The rows of `page` of `select` + `<from>`, without their count.
    async fn rows_of<T>(
        &self,
        select: &'static str,
        page: Page,
        from: impl Fn(&mut QueryBuilder<DB>),
    ) -> StoreResult<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, DB::Row> + Send + Unpin,
    {
        let mut query = QueryBuilder::<DB>::new(select);
        from(&mut query);
        push_page(&mut query, page);
        Ok(query.build_query_as::<T>().fetch_all(&self.pool).await?)
    }

    /// How many rows `<from>` matches, and whether that is the planner's
    /// estimate: exact up to [`Dialect::COUNT_CAP`], estimated beyond.
    async fn count(&self, from: impl Fn(&mut QueryBuilder<DB>)) -> StoreResult<(i64, bool)> {
        let mut count = QueryBuilder::<DB>::new("SELECT COUNT(*) FROM (SELECT 1");
        from(&mut count);
        if let Some(cap) = DB::COUNT_CAP {
            count.push(" LIMIT ").push_bind(cap + 1);
        }
        count.push(") AS matching");
        let counted = count.build_query_scalar().fetch_one(&self.pool).await?;
        if DB::COUNT_CAP.is_none_or(|cap| counted <= cap) {
            return Ok((counted, false));
        }
        let mut explain = QueryBuilder::<DB>::new("EXPLAIN (FORMAT JSON) SELECT 1");
        from(&mut explain);
        let (plan,): (Json<Value>,) = explain.build_query_as().fetch_one(&self.pool).await?;
        Ok((planned_rows(&plan.0).unwrap_or(counted).max(counted), true))
    }

    async fn lock_url(tx: &mut Transaction<'static, DB>, id: i64) -> StoreResult<Url> {
        sqlx::query_as::<DB, Url>(DB::LOCK_URL)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::NotFound(Entity::Url))
    }

    async fn sync_sequence(tx: &mut Transaction<'static, DB>, table: &str) -> StoreResult<()> {
        if let Some(statement) = DB::sync_sequence(table) {
            sqlx::query::<DB>(AssertSqlSafe(statement))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Writes `patch` over `current` (locked by the caller's transaction), as a new version.
    async fn write_url(
        tx: &mut Transaction<'static, DB>,
        current: &Url,
        patch: UrlPatch,
    ) -> StoreResult<Url> {
        let policy = patch.policy;
        let max_visits = policy.max_visits.unwrap_or(current.max_visits);
        // A cap set where there was none counts the redirects so far.
        let visits = if current.max_visits.is_none() && max_visits.is_some() {
            sqlx::query_scalar::<DB, i64>(REDIRECT_TOTAL)
                .bind(current.id)
                .fetch_one(&mut **tx)
                .await?
        } else {
            current.visits
        };
        let fallback_url = match policy.fallback_url {
            Some(url) => url.map(|u| u.to_string()),
            None => current.fallback_url.clone(),
        };
        let password_hash = match policy.password {
            Some(hash) => hash.map(|h| h.as_str().to_owned()),
            None => current.password_hash.clone(),
        };
        Ok(sqlx::query_as(UPDATE_URL)
            .bind(current.id)
            .bind(
                patch
                    .original_url
                    .map_or(current.original_url.clone(), |u| u.to_string()),
            )
            .bind(patch.title.unwrap_or_else(|| current.title.clone()))
            .bind(patch.is_active.unwrap_or(current.is_active))
            .bind(next_updated_at(current))
            .bind(i16::from(
                policy.redirect_type.unwrap_or(current.redirect_type),
            ))
            .bind(policy.expires_at.unwrap_or(current.expires_at))
            .bind(max_visits)
            .bind(fallback_url)
            .bind(visits)
            .bind(password_hash)
            .bind(
                policy
                    .rules
                    .as_ref()
                    .unwrap_or(&current.rules)
                    .stored_form(),
            )
            .bind(policy.forward_query.unwrap_or(current.forward_query))
            .fetch_one(&mut **tx)
            .await?)
    }

    /// Per URL: how many clicks (bots' visits are not), and the latest, in `url_id` order.
    fn per_url(clicks: &[Click]) -> Vec<(i64, (i64, Timestamp))> {
        let mut per_url: std::collections::BTreeMap<i64, (i64, Timestamp)> = Default::default();
        for click in clicks.iter().filter(|c| !c.bot) {
            let entry = per_url.entry(click.url_id).or_insert((0, click.at));
            entry.0 += 1;
            entry.1 = entry.1.max(click.at);
        }
        per_url.into_iter().collect()
    }

    /// Appends `clicks` as `redirect` (or `bot_visit`) events and adds them to shard
    /// `shard`'s counters and analytics on `conn` ([`Dialect::write_clicks`]); records
    /// `origin`, when given, as its writer's last batch. Returns the visitor rows written,
    /// for [`crate::analytics::WrittenVisitors::committed`] once their transaction commits.
    async fn write_clicks_on(
        &self,
        conn: &mut DB::Connection,
        clicks: &[Click],
        shard: i16,
        origin: Option<BatchOrigin>,
    ) -> StoreResult<Vec<crate::analytics::VisitorDay>> {
        let counters = Self::per_url(clicks);
        let mut analytics = crate::analytics::BatchRollup::of(clicks);
        analytics.visitors = self.visitors.unwritten(analytics.visitors);
        let batch = ClickWrite {
            clicks,
            counters: &counters,
            analytics: &analytics,
            shard,
            origin,
        };
        DB::write_clicks(conn, batch).await?;
        Ok(analytics.visitors)
    }

    /// Records one of the service's own events about `url`, made by `by`.
    async fn insert_event_in(
        tx: &mut Transaction<'static, DB>,
        url: &Url,
        event_type: &'static str,
        details: Value,
        by: Actor,
    ) -> StoreResult<()> {
        sqlx::query::<DB>(INSERT_EVENT)
            .bind(url.id)
            .bind(url.user_id)
            .bind(event_type)
            .bind(now())
            .bind(Json(details))
            .bind(EventSource::Service.as_str())
            .bind(by.key_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// `FROM urls WHERE …` for `filter` (lists and exports alike).
fn urls_matching<DB: Dialect>(filter: &UrlFilter) -> impl Fn(&mut QueryBuilder<DB>) + '_
where
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    bool: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
{
    move |qb| {
        qb.push(" FROM urls WHERE TRUE");
        push_eq(qb, "user_id", filter.user_id);
        push_eq(qb, "is_active", filter.is_active);
        push_eq(qb, "short_code", filter.short_code.clone());
    }
}

/// `FROM events WHERE …` for `filter` (lists and exports alike).
fn events_matching<DB: Dialect>(filter: &EventFilter) -> impl Fn(&mut QueryBuilder<DB>) + '_
where
    i64: for<'t> Encode<'t, DB> + Type<DB>,
    String: for<'t> Encode<'t, DB> + Type<DB>,
{
    move |qb| {
        qb.push(" FROM events WHERE TRUE");
        push_eq(qb, "url_id", filter.url_id);
        push_eq(qb, "user_id", filter.user_id);
        // Said outright, so that the partial index of the other types serves it
        // (SQLite uses a partial index only for a query naming its predicate).
        if filter
            .event_type
            .as_deref()
            .is_some_and(|t| t != "redirect")
        {
            qb.push(" AND event_type <> 'redirect'");
        }
        push_eq(qb, "event_type", filter.event_type.clone());
        push_eq(qb, "source", filter.source.map(|s| s.as_str().to_owned()));
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
    i16: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Timestamp: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Json<Value>: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB> + Type<DB>,
    Option<String>: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Option<Timestamp>: for<'q> Encode<'q, DB> + Type<DB>,
    chrono::NaiveDate: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + for<'q> Encode<'q, DB> + Type<DB>,
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

    async fn create_user(&self, user: NewUser) -> StoreResult<User> {
        traced!("create_user", async {
            Ok(sqlx::query_as(INSERT_USER)
                .bind(user.username)
                .bind(user.email.as_str())
                .bind(now())
                .fetch_one(&self.writer)
                .await?)
        })
    }

    async fn get_user(&self, id: i64) -> StoreResult<User> {
        traced!("get_user", async {
            sqlx::query_as(GET_LIVE_USER)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound(Entity::User))
        })
    }

    async fn list_users(&self, page: Page) -> StoreResult<Listing<User>> {
        traced!("list_users", async {
            self.page_of(sql!("SELECT " USER), page, |qb| {
                qb.push(" FROM users WHERE deleted_at IS NULL");
            })
            .await
        })
    }

    async fn update_user(&self, id: i64, patch: UserPatch) -> StoreResult<User> {
        traced!("update_user", async {
            sqlx::query_as(UPDATE_USER)
                .bind(id)
                .bind(patch.username)
                .bind(patch.email.map(|e| e.as_str().to_owned()))
                .fetch_optional(&self.writer)
                .await?
                .ok_or(StoreError::NotFound(Entity::User))
        })
    }

    async fn delete_user(&self, id: i64, by: Actor) -> StoreResult<UserDeletion> {
        traced!("delete_user", async {
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
                .bind(by.key_id)
                .execute(&mut *tx)
                .await?;
            let revoked_keys = sqlx::query_scalar::<_, i64>(REVOKE_USER_KEYS)
                .bind(id)
                .bind(at)
                .fetch_all(&mut *tx)
                .await?;
            let deactivated = sqlx::query_as(DB::DEACTIVATE_USER_URLS)
                .bind(id)
                .bind(at)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(UserDeletion {
                deactivated,
                revoked_keys,
            })
        })
    }

    async fn import_users(&self, users: Vec<ImportedUser>) -> StoreResult<ImportOutcome> {
        traced!("import_users", async {
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
        })
    }

    async fn import_urls(
        &self,
        user_id: Option<i64>,
        urls: Vec<ImportedUrl>,
        by: Actor,
    ) -> StoreResult<Vec<Imported>> {
        let rows = urls.len();
        traced!(
            "import_urls",
            async {
                let mut tx = self.writer.begin().await?;
                if let Some(user_id) = user_id {
                    sqlx::query_scalar::<_, i64>(USER_IS_LIVE)
                        .bind(user_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or(StoreError::NotFound(Entity::User))?;
                }
                let at = now();
                let mut outcomes = Vec::with_capacity(urls.len());
                for url in urls {
                    let created: Option<Url> = sqlx::query_as(IMPORT_URL)
                        .bind(user_id)
                        .bind(url.code.as_str())
                        .bind(url.original_url.as_str())
                        .bind(url.title)
                        .bind(url.created_at.unwrap_or(at))
                        .bind(url.expires_at)
                        .bind(url.max_visits)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let outcome = match created {
                        Some(created) => {
                            let details = json!({"short_code": created.short_code,
                                "original_url": created.original_url, "imported": true});
                            Self::insert_event_in(&mut tx, &created, "created", details, by)
                                .await?;
                            Imported::New(Box::new(created))
                        }
                        None => {
                            let target: Option<String> =
                                sqlx::query_scalar::<_, String>(TARGET_OF_CODE)
                                    .bind(url.code.as_str())
                                    .fetch_optional(&mut *tx)
                                    .await?;
                            if target.as_deref() == Some(url.original_url.as_str()) {
                                Imported::Existing
                            } else {
                                Imported::Taken
                            }
                        }
                    };
                    outcomes.push(outcome);
                }
                tx.commit().await?;
                Ok(outcomes)
            },
            db.operation.batch.size = rows
        )
    }

    async fn insert_url(&self, url: NewUrl, code: &ShortCode, by: Actor) -> StoreResult<Url> {
        traced!("insert_url", async {
            let mut tx = self.writer.begin().await?;
            if let Some(user_id) = url.user_id {
                sqlx::query_scalar::<_, i64>(USER_IS_LIVE)
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::NotFound(Entity::User))?;
            }
            let policy = url.policy;
            let created: Url = sqlx::query_as(INSERT_URL)
                .bind(url.user_id)
                .bind(code.as_str())
                .bind(url.original_url.as_str())
                .bind(url.title)
                .bind(now())
                .bind(i16::from(policy.redirect_type.unwrap_or_default()))
                .bind(policy.expires_at.flatten())
                .bind(policy.max_visits.flatten())
                .bind(policy.fallback_url.flatten().map(|u| u.to_string()))
                .bind(policy.password.flatten().map(|h| h.as_str().to_owned()))
                .bind(policy.rules.unwrap_or_default().stored_form())
                .bind(policy.forward_query.unwrap_or(false))
                .fetch_one(&mut *tx)
                .await?;
            let details =
                json!({"short_code": created.short_code, "original_url": created.original_url});
            Self::insert_event_in(&mut tx, &created, "created", details, by).await?;
            tx.commit().await?;
            Ok(created)
        })
    }

    async fn get_url(&self, id: i64) -> StoreResult<Url> {
        traced!("get_url", async {
            sqlx::query_as(GET_URL)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound(Entity::Url))
        })
    }

    async fn list_urls(&self, filter: UrlFilter, page: Page) -> StoreResult<Listing<Url>> {
        traced!("list_urls", async {
            self.page_of(sql!("SELECT " URL), page, urls_matching(&filter))
                .await
        })
    }

    async fn urls_after(
        &self,
        filter: UrlFilter,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<Url>> {
        traced!("urls_after", async {
            let page = Page::after(after_id, limit);
            self.rows_of(sql!("SELECT " URL), page, urls_matching(&filter))
                .await
        })
    }

    async fn count_active_urls(&self) -> StoreResult<i64> {
        traced!("count_active_urls", async {
            let active = |qb: &mut QueryBuilder<DB>| _ = qb.push(" FROM urls WHERE is_active");
            Ok(self.count(active).await?.0)
        })
    }

    async fn update_url(&self, id: i64, patch: UrlPatch, by: Actor) -> StoreResult<Url> {
        traced!("update_url", async {
            let mut tx = self.writer.begin().await?;
            let current = Self::lock_url(&mut tx, id).await?;
            let changes = patch.changes(&current);
            let updated = Self::write_url(&mut tx, &current, patch).await?;
            for details in changes {
                Self::insert_event_in(&mut tx, &updated, "updated", details, by).await?;
            }
            tx.commit().await?;
            Ok(updated)
        })
    }

    async fn deactivate_url(&self, id: i64, reason: &str, by: Actor) -> StoreResult<Url> {
        traced!("deactivate_url", async {
            let mut tx = self.writer.begin().await?;
            let current = Self::lock_url(&mut tx, id).await?;
            if !current.is_active {
                return Ok(current);
            }
            let deactivate = UrlPatch {
                is_active: Some(false),
                ..UrlPatch::default()
            };
            let updated = Self::write_url(&mut tx, &current, deactivate).await?;
            let details = json!({"reason": reason});
            Self::insert_event_in(&mut tx, &updated, "deleted", details, by).await?;
            tx.commit().await?;
            Ok(updated)
        })
    }

    async fn url_stats(&self, id: i64) -> StoreResult<UrlStats> {
        traced!("url_stats", async {
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
        })
    }

    async fn resolve(&self, code: &str) -> StoreResult<Option<RedirectTarget>> {
        traced!("resolve", async {
            let row: Option<TargetRow> = sqlx::query_as(RESOLVE)
                .bind(code)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(RedirectTarget::from))
        })
    }

    async fn recent_active_targets(&self, limit: i64) -> StoreResult<Vec<RedirectTarget>> {
        traced!("recent_active_targets", async {
            let rows: Vec<TargetRow> = sqlx::query_as(RECENT_ACTIVE_TARGETS)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows.into_iter().map(RedirectTarget::from).collect())
        })
    }

    async fn create_event(&self, event: NewEvent, by: Actor) -> StoreResult<Event> {
        traced!("create_event", async {
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
                .bind(EventSource::Client.as_str())
                .bind(by.key_id)
                .fetch_one(&self.writer)
                .await?)
        })
    }

    async fn list_events(&self, filter: EventFilter, page: Page) -> StoreResult<Listing<Event>> {
        traced!("list_events", async {
            self.page_of(
                sql!("SELECT id, " ATTRIBUTED_EVENT),
                page,
                events_matching(&filter),
            )
            .await
        })
    }

    async fn url_analytics(
        &self,
        url_id: i64,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<AnalyticsRows> {
        traced!("url_analytics", async {
            let hourly = sqlx::query_as::<DB, (Timestamp, i64)>(ANALYTICS_HOURLY)
                .bind(url_id)
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?;
            let breakdown = sqlx::query_as::<DB, (String, String, i64)>(ANALYTICS_BREAKDOWN)
                .bind(url_id)
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?;
            let daily_visitors = sqlx::query_as::<DB, (chrono::NaiveDate, i64)>(ANALYTICS_VISITORS)
                .bind(url_id)
                .bind(from.date())
                // The last day the range touches (`to` is exclusive).
                .bind((to - chrono::TimeDelta::seconds(1)).date())
                .fetch_all(&self.pool)
                .await?;
            Ok(AnalyticsRows {
                hourly,
                breakdown,
                daily_visitors,
            })
        })
    }

    async fn visitor_salt(&self, day: chrono::NaiveDate, fresh: Vec<u8>) -> StoreResult<Vec<u8>> {
        traced!("visitor_salt", async {
            let mut tx = self.writer.begin().await?;
            sqlx::query::<DB>(ADD_VISITOR_SALT)
                .bind(day)
                .bind(fresh)
                .execute(&mut *tx)
                .await?;
            let salt = sqlx::query_scalar::<DB, Vec<u8>>(VISITOR_SALT)
                .bind(day)
                .fetch_one(&mut *tx)
                .await?;
            if let Some(yesterday) = day.pred_opt() {
                sqlx::query::<DB>(FORGET_VISITOR_SALTS)
                    .bind(yesterday)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(salt)
        })
    }

    async fn events_after(
        &self,
        filter: EventFilter,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        traced!("events_after", async {
            let page = Page::after(after_id, limit);
            self.rows_of(
                sql!("SELECT id, " ATTRIBUTED_EVENT),
                page,
                events_matching(&filter),
            )
            .await
        })
    }

    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKey> {
        traced!("create_api_key", async {
            let mut tx = self.writer.begin().await?;
            if let Some(user_id) = key.user_id {
                sqlx::query_scalar::<_, i64>(USER_IS_LIVE)
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(StoreError::NotFound(Entity::User))?;
            }
            let created = sqlx::query_as(INSERT_API_KEY)
                .bind(key.name)
                .bind(key.scope.to_string())
                .bind(key.user_id)
                .bind(key.secret_sha256)
                .bind(key.prefix)
                .bind(now())
                .bind(key.created_by)
                .bind(key.expires_at)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(created)
        })
    }

    async fn get_api_key(&self, id: i64) -> StoreResult<ApiKey> {
        traced!("get_api_key", async {
            sqlx::query_as(GET_API_KEY)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound(Entity::ApiKey))
        })
    }

    async fn list_api_keys(&self, page: Page) -> StoreResult<Listing<ApiKey>> {
        traced!("list_api_keys", async {
            self.page_of(sql!("SELECT " API_KEY), page, |qb| {
                qb.push(" FROM api_keys WHERE TRUE");
            })
            .await
        })
    }

    async fn revoke_api_key(&self, id: i64) -> StoreResult<ApiKey> {
        traced!("revoke_api_key", async {
            sqlx::query_as(REVOKE_API_KEY)
                .bind(id)
                .bind(now())
                .fetch_optional(&self.writer)
                .await?
                .ok_or(StoreError::NotFound(Entity::ApiKey))
        })
    }

    async fn use_api_key(&self, secret_sha256: &str) -> StoreResult<Option<ApiKey>> {
        traced!("use_api_key", async {
            Ok(sqlx::query_as(USE_API_KEY)
                .bind(secret_sha256)
                .bind(now())
                .fetch_optional(&self.writer)
                .await?)
        })
    }

    async fn bootstrap_api_key(&self, secret_sha256: &str, prefix: &str) -> StoreResult<i64> {
        traced!("bootstrap_api_key", async {
            let mut tx = self.writer.begin().await?;
            sqlx::query(INSERT_BOOTSTRAP_KEY)
                .bind(secret_sha256)
                .bind(prefix)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            let id = sqlx::query_scalar(KEY_ID_BY_HASH)
                .bind(secret_sha256)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    fn click_writers_limit(&self) -> usize {
        DB::CONCURRENT_WRITERS
    }

    async fn record_clicks(
        &self,
        clicks: &[Click],
        shard: i16,
        origin: BatchOrigin,
    ) -> StoreResult<()> {
        traced!(
            "record_clicks",
            async {
                if clicks.is_empty() {
                    return Ok(());
                }
                let mut conn = self.writer.acquire().await?;
                if DB::CLICK_WRITE_IS_ATOMIC {
                    let visitors = self
                        .write_clicks_on(&mut conn, clicks, shard, Some(origin))
                        .await?;
                    // One statement: committed.
                    self.visitors.committed(&visitors);
                    return Ok(());
                }
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let visitors = self
                    .write_clicks_on(&mut tx, clicks, shard, Some(origin))
                    .await?;
                tx.commit().await?;
                self.visitors.committed(&visitors);
                Ok(())
            },
            db.operation.batch.size = clicks.len(),
            shortener.counter_shard = shard
        )
    }

    async fn record_visit(&self, click: &Click, shard: i16) -> StoreResult<bool> {
        traced!(
            "record_visit",
            async {
                let mut tx = self.writer.begin().await?;
                let taken = sqlx::query_scalar::<DB, i64>(TAKE_VISIT)
                    .bind(click.url_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if taken.is_none() {
                    return Ok(false);
                }
                let visitors = self
                    .write_clicks_on(&mut tx, std::slice::from_ref(click), shard, None)
                    .await?;
                tx.commit().await?;
                self.visitors.committed(&visitors);
                Ok(true)
            },
            shortener.counter_shard = shard
        )
    }

    async fn record_spilled_clicks(
        &self,
        batches: &[ClickBatch],
        shard: i16,
    ) -> StoreResult<usize> {
        traced!(
            "record_spilled_clicks",
            async {
                let mut tx = self.writer.begin().await?;
                let at = now();
                let mut fresh = Vec::new();
                for batch in batches {
                    let marked = sqlx::query::<DB>(MARK_BATCH_APPLIED)
                        .bind(batch.id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    if DB::rows_affected(&marked) == 0 {
                        continue; // written back before
                    }
                    if let Some(origin) = batch.origin {
                        // Waits for the first write, should it still be
                        // finishing, then reads its writer's last batch.
                        let last: i64 = sqlx::query_scalar::<DB, i64>(WRITER_PROGRESS)
                            .bind(origin.writer)
                            .bind(at)
                            .fetch_one(&mut *tx)
                            .await?;
                        if last >= origin.seq {
                            continue; // the first write did commit
                        }
                    }
                    fresh.extend(batch.clicks.iter().cloned());
                }
                let visitors = if fresh.is_empty() {
                    Vec::new()
                } else {
                    self.write_clicks_on(&mut tx, &fresh, shard, None).await?
                };
                let forget_before = at - BATCH_ID_RETENTION;
                sqlx::query::<DB>(FORGET_APPLIED_BATCHES)
                    .bind(forget_before)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<DB>(FORGET_WRITERS)
                    .bind(forget_before)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.visitors.committed(&visitors);
                Ok(fresh.len())
            },
            db.operation.batch.size = batches.len(),
            shortener.counter_shard = shard
        )
    }

    async fn load_seed(&self, seed: SeedData) -> StoreResult<SeedOutcome> {
        traced!("load_seed", async {
            let mut tx = self.writer.begin().await?;
            let mut outcome = SeedOutcome::default();
            for user in seed.users {
                let query = sqlx::query(SEED_USER)
                    .bind(user.id)
                    .bind(user.username)
                    .bind(user.email.as_str())
                    .bind(user.created_at.unwrap_or_else(now));
                outcome.users += DB::rows_affected(&query.execute(&mut *tx).await?);
            }
            for url in seed.urls {
                let query = sqlx::query(SEED_URL)
                    .bind(url.id)
                    .bind(url.user_id)
                    .bind(url.short_code)
                    .bind(url.original_url)
                    .bind(url.title)
                    .bind(url.is_active)
                    .bind(url.created_at)
                    .bind(url.updated_at);
                outcome.urls += DB::rows_affected(&query.execute(&mut *tx).await?);
            }
            for event in seed.events {
                let query = sqlx::query(SEED_EVENT)
                    .bind(event.id)
                    .bind(event.url_id)
                    .bind(event.user_id)
                    .bind(event.event_type)
                    .bind(event.timestamp)
                    .bind(event.details);
                outcome.events += DB::rows_affected(&query.execute(&mut *tx).await?);
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
        })
    }
}
