//! The embedded backend: one SQLite file, for laptops, demos and tests.
//! Not for several replicas: SQLite has one writer per file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite};

use futures_util::future::BoxFuture;

use super::StoreResult;
use super::migrations::{self, MigrationReport, Schema};
use super::sql::{ClickWrite, Dialect, GET_URL, SqlStore, sql};
use crate::domain::{Timestamp, now};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A click batch in one call: SQLite has no data-modifying `WITH`, but one query of several
/// statements is one trip to the connection's thread (not one per statement), and its
/// numbered parameters name the same values in every statement. The clicks arrive as one
/// JSON array `$1` of `[url_id, user_id, time, short_code, bot]` (`bot` 1 for a bot's visit,
/// written as a `bot_visit` event); the per-URL deltas of the others for shard `$2` as `$3`,
/// `[url_id, clicks, latest]`; their analytics as `$4`, `[url_id, hour, referrer, browser,
/// os, device, clicks]`, and their visitors of the day as `$5`, `[url_id, day, visitor]`
/// ([`batch_json`]): one statement text whatever the batch size (one prepared statement, no
/// bind parameter per row), the `details` JSON built by SQLite. `jsonb_each` turns each array
/// into binary JSON once, so `->>` reads a field without parsing the element's text again
/// (with `json_each`, a rollup row's seven fields were seven parses: docs/benchmarks.md). Not atomic by itself: it runs in the caller's
/// transaction. `$progress` records the batch as writer `$6`'s last (`$7`, at `$8`), or is
/// empty.
macro_rules! write_clicks {
    ($progress:expr) => {
        concat!(
            $progress,
            sql!("INSERT INTO events (" EVENT ") \
             SELECT value ->> 0, value ->> 1, \
             CASE WHEN value ->> 4 THEN 'bot_visit' ELSE 'redirect' END, \
             datetime(value ->> 2, 'unixepoch'), \
             json_object('short_code', value ->> 3) FROM jsonb_each($1) WHERE true; \
             INSERT INTO click_rollups (url_id, hour, referrer, browser, os, device, shard, clicks) \
             SELECT value ->> 0, datetime(value ->> 1, 'unixepoch'), value ->> 2, value ->> 3, \
             value ->> 4, value ->> 5, $2, value ->> 6 FROM jsonb_each($4) WHERE true \
             ON CONFLICT (url_id, hour, referrer, browser, os, device, shard) DO UPDATE SET \
             clicks = click_rollups.clicks + excluded.clicks; \
             INSERT INTO visitor_days (url_id, day, visitor) \
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM jsonb_each($5) WHERE true \
             ON CONFLICT DO NOTHING; \
             INSERT INTO redirect_counts (" COUNTER ") \
             SELECT value ->> 0, $2, value ->> 1, datetime(value ->> 2, 'unixepoch') \
             FROM jsonb_each($3) WHERE true" (ADD_TO_COUNTERS "max"))
        )
    };
}
const WRITE_CLICKS: &str = write_clicks!("");
const WRITE_CLICKS_OF_WRITER: &str =
    write_clicks!(sql!((RECORD_WRITER_PROGRESS "$6" "$7" "$8") "; "));

/// The batch's rows as the JSON arrays of [`WRITE_CLICKS`] (`$1`, `$3`, `$4`, `$5`), times in
/// Unix seconds (timestamps are whole seconds; SQLite's `datetime(…, 'unixepoch')` writes
/// them as a bound [`Timestamp`] is stored), days as `YYYY-MM-DD` (as a bound date is).
fn batch_json(batch: &ClickWrite<'_>) -> Result<[String; 4], serde_json::Error> {
    let seconds = |at: &Timestamp| at.and_utc().timestamp();
    let clicks: Vec<_> = batch
        .clicks
        .iter()
        .map(|c| {
            let bot = u8::from(c.bot);
            (
                c.url_id,
                c.user_id,
                seconds(&c.at),
                c.short_code.as_str(),
                bot,
            )
        })
        .collect();
    let counters: Vec<_> = batch
        .counters
        .iter()
        .map(|(url_id, (count, at))| (url_id, count, seconds(at)))
        .collect();
    let rollups: Vec<_> = batch
        .analytics
        .rollups
        .iter()
        .map(|r| {
            let k = &r.key;
            let (referrer, browser, os) = (&k.referrer, &k.browser, &k.os);
            (
                k.url_id,
                seconds(&k.hour),
                referrer,
                browser,
                os,
                k.device,
                r.clicks,
            )
        })
        .collect();
    let visitors: Vec<_> = batch
        .analytics
        .visitors
        .iter()
        .map(|v| (v.url_id, v.day.format("%Y-%m-%d").to_string(), v.visitor))
        .collect();
    Ok([
        serde_json::to_string(&clicks)?,
        serde_json::to_string(&counters)?,
        serde_json::to_string(&rollups)?,
        serde_json::to_string(&visitors)?,
    ])
}

pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    // No row locks needed: every write transaction runs on the single
    // writer connection, one at a time.
    const LOCK_URL: &'static str = GET_URL;
    // A NULL id takes the next rowid (max + 1), so no sequence to keep.
    const IMPORT_USER: &'static str = sql!("INSERT INTO users (" USER ") VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING id");

    // Timestamps are 'YYYY-MM-DD HH:MM:SS' text, which orders as time does.
    const DEACTIVATE_USER_URLS: &'static str = sql!("UPDATE urls SET is_active = FALSE, \
         updated_at = max($2, datetime(updated_at, '+1 second')), version = version + 1 \
         WHERE user_id = $1 AND is_active RETURNING " URL);

    const COUNT_CAP: Option<i64> = None;
    const CONCURRENT_WRITERS: usize = 1;
    const CLICK_WRITE_IS_ATOMIC: bool = false;

    fn write_clicks<'t>(
        conn: &'t mut SqliteConnection,
        batch: ClickWrite<'t>,
    ) -> BoxFuture<'t, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let [clicks, counters, rollups, visitors] =
                batch_json(&batch).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let write = match batch.origin {
                Some(_) => sqlx::query(WRITE_CLICKS_OF_WRITER),
                None => sqlx::query(WRITE_CLICKS),
            }
            .bind(clicks)
            .bind(batch.shard)
            .bind(counters)
            .bind(rollups)
            .bind(visitors);
            let write = match batch.origin {
                Some(origin) => write.bind(origin.writer).bind(origin.seq).bind(now()),
                None => write,
            };
            write.execute(conn).await?;
            Ok(())
        })
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file, and applies pending migrations or
    /// checks that none is pending (`schema`).
    pub async fn connect(database_url: &str, schema: Schema) -> StoreResult<Self> {
        let options = options(database_url)?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        match schema {
            Schema::Migrate => {
                let mut conn = writer.acquire().await?;
                migrations::apply(&MIGRATOR, &mut *conn).await?;
            }
            Schema::RequireMigrated => {
                migrations::compare_with(&MIGRATOR, &writer)
                    .await?
                    .require_current()?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self {
            pool,
            writer,
            visitors: Default::default(),
        })
    }
}

fn options(database_url: &str) -> StoreResult<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(database_url)?
        .create_if_missing(true)
        // For a new file: every commit writes each page it changed to the WAL in full, and a
        // click changes a leaf of `events`' per-URL index (clicks of one batch mostly different
        // ones), so smaller pages mean less to write and checkpoint per click (the redirect
        // benchmark: +7 %, p99 6.2 → 4.8 ms; docs/benchmarks.md). An existing file keeps
        // the page size it was made with.
        .page_size(1024)
        // WAL lets readers proceed while the writer commits.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        // Statement journals (every multi-row INSERT of a click batch has one) in memory,
        // not in temporary files: a profile of the redirect path found a quarter of the
        // writer's time in their writes.
        .pragma("temp_store", "memory")
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5)))
}

/// Applies the pending migrations to the file at `database_url` (creating it if missing).
pub async fn migrate(database_url: &str) -> StoreResult<MigrationReport> {
    let mut conn = SqliteConnection::connect_with(&options(database_url)?).await?;
    let report = migrations::apply(&MIGRATOR, &mut conn).await?;
    conn.close().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchOrigin, Click};

    /// The pragmas `options` asks for are what the writer connection runs with.
    #[tokio::test]
    async fn the_writer_runs_with_the_chosen_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = SqliteStore::connect(&url, Schema::Migrate).await.unwrap();
        let pragma = |sql: &'static str| {
            let writer = store.writer.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&writer)
                    .await
                    .unwrap()
            }
        };
        // 2: MEMORY.
        assert_eq!(pragma("PRAGMA temp_store").await, 2);
        // 1: NORMAL.
        assert_eq!(pragma("PRAGMA synchronous").await, 1);
        assert_eq!(pragma("PRAGMA page_size").await, 1024);
    }

    /// Event types other than `redirect` are listed from the partial indexes clicks never
    /// write (migration 0006). SQLite uses a partial index only for a query that names its
    /// predicate, as `list_events` does.
    #[tokio::test]
    async fn other_event_types_are_listed_from_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = SqliteStore::connect(&url, Schema::Migrate).await.unwrap();
        for (query, index) in [
            (
                "SELECT * FROM events WHERE TRUE AND event_type <> 'redirect' \
                 AND event_type = 'updated' ORDER BY id LIMIT 25 OFFSET 0",
                "events_other_type_idx",
            ),
            (
                "SELECT * FROM events WHERE TRUE AND url_id = 1 AND event_type <> 'redirect' \
                 AND event_type = 'updated' ORDER BY id LIMIT 25 OFFSET 0",
                "events_url_id_other_type_idx",
            ),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}")))
                    .fetch_all(&store.pool)
                    .await
                    .unwrap();
            assert!(
                plan.iter().any(|(.., detail)| detail.contains(index)),
                "{query}: {plan:?}"
            );
        }
    }

    /// A click batch arrives as JSON, yet its rows are stored exactly as bound values
    /// are (times as sqlx writes a `Timestamp`, ids as integers, `details` as the JSON a
    /// service event holds), and its counts add up across batches and shards, with the
    /// writer's progress recorded.
    #[tokio::test]
    async fn a_click_batch_is_stored_as_bound_values_are() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = SqliteStore::connect(&url, Schema::Migrate).await.unwrap();
        let at = now();
        sqlx::query("INSERT INTO users (id, username, email, created_at) VALUES (7, 'u', 'u@example.com', $1)")
            .bind(at)
            .execute(&store.writer)
            .await
            .unwrap();
        for (id, user_id, code) in [(1, Some(7), "a-1"), (2, None, "b_2")] {
            sqlx::query(
                "INSERT INTO urls (id, user_id, short_code, original_url, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'https://example.com/', $4, $4)",
            )
            .bind(id)
            .bind(user_id)
            .bind(code)
            .bind(at)
            .execute(&store.writer)
            .await
            .unwrap();
        }
        let later = at + chrono::TimeDelta::seconds(3);
        let click = |url_id, user_id, code: &str, at| Click {
            url_id,
            user_id,
            short_code: code.to_owned(),
            at,
            bot: false,
            agent: None,
            referrer: None,
            visitor: None,
        };
        let first = [
            click(1, Some(7), "a-1", at),
            click(2, None, "b_2", at),
            click(1, Some(7), "a-1", later),
        ];
        let origin = BatchOrigin { writer: 42, seq: 1 };
        store.record_clicks(&first, 3, origin).await.unwrap();
        let second = [click(1, Some(7), "a-1", at)];
        let origin = BatchOrigin { writer: 42, seq: 2 };
        store.record_clicks(&second, 5, origin).await.unwrap();

        let stored: Vec<(i64, String, Option<i64>, bool, String, String)> = sqlx::query_as(
            "SELECT url_id, typeof(url_id), user_id, timestamp = $1 OR timestamp = $2, \
             typeof(timestamp), details FROM events WHERE event_type = 'redirect' ORDER BY id",
        )
        .bind(at)
        .bind(later)
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let expected = |url_id, user_id, code: &str| {
            let details = format!(r#"{{"short_code":"{code}"}}"#);
            (
                url_id,
                "integer".to_owned(),
                user_id,
                true,
                "text".to_owned(),
                details,
            )
        };
        assert_eq!(
            stored,
            [
                expected(1, Some(7), "a-1"),
                expected(2, None, "b_2"),
                expected(1, Some(7), "a-1"),
                expected(1, Some(7), "a-1"),
            ]
        );
        let times: Vec<Timestamp> = sqlx::query_scalar("SELECT timestamp FROM events ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(times, [at, at, later, at]);
        let counters: Vec<(i64, i64, i64, Timestamp)> = sqlx::query_as(
            "SELECT url_id, shard, redirect_count, last_redirect_at FROM redirect_counts \
             ORDER BY url_id, shard",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap();
        assert_eq!(counters, [(1, 3, 2, later), (1, 5, 1, at), (2, 3, 1, at)]);
        let stats = store.url_stats(1).await.unwrap();
        assert_eq!(
            (stats.redirect_count, stats.last_redirect_at),
            (3, Some(later))
        );
        let progress: i64 =
            sqlx::query_scalar("SELECT last_batch FROM click_writers WHERE writer = 42")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(progress, 2);
    }
}
