//! The production backend: PostgreSQL, directly or through PgBouncer.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, Postgres};

use futures_util::future::BoxFuture;

use super::StoreResult;
use super::migrations::{self, MigrationReport, Schema};
use super::sql::{ClickWrite, Dialect, SqlStore, sql};
use crate::domain::{Timestamp, now};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A click batch in one statement, atomic without a transaction (so it costs one round
/// trip, not a `BEGIN`, several statements and a `COMMIT`): the clicks as `redirect` events,
/// or `bot_visit` events for bots' (parallel arrays `$1`–`$4` of url ids, user ids, times and
/// short codes, `$9` whether each is a bot's); the per-URL counts of the clicks that are not
/// added to shard `$6`'s counter rows (`$5` url ids, `$7` counts, `$8` latest times); their
/// analytics added to shard `$6`'s rollup rows (`$10`–`$16`: url ids, hours, referrers,
/// browsers, operating systems, devices, clicks); their visitors of the day (`$17`–`$19`:
/// url ids, days, visitors).
/// Counters, rollups and visitors are written in key order (see `record_clicks`: writers
/// sharing rows queue instead of deadlocking). `$with` opens the `WITH` list.
macro_rules! write_clicks {
    ($with:expr) => {
        concat!(
            $with,
            sql!("clicks AS (INSERT INTO events (" EVENT ") \
             SELECT url_id, user_id, CASE WHEN bot THEN 'bot_visit' ELSE 'redirect' END, at, \
             jsonb_build_object('short_code', code) \
             FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TIMESTAMP[], $4::TEXT[], $9::BOOLEAN[]) \
             AS click (url_id, user_id, at, code, bot)), \
             rollups AS (INSERT INTO click_rollups \
             (url_id, hour, referrer, browser, os, device, shard, clicks) \
             SELECT url_id, hour, referrer, browser, os, device, $6, clicks \
             FROM UNNEST($10::BIGINT[], $11::TIMESTAMP[], $12::TEXT[], $13::TEXT[], $14::TEXT[], \
             $15::TEXT[], $16::BIGINT[]) \
             AS delta (url_id, hour, referrer, browser, os, device, clicks) \
             ORDER BY url_id, hour, referrer, browser, os, device \
             ON CONFLICT (url_id, hour, referrer, browser, os, device, shard) DO UPDATE SET \
             clicks = click_rollups.clicks + excluded.clicks), \
             visitors AS (INSERT INTO visitor_days (url_id, day, visitor) \
             SELECT url_id, day, visitor FROM UNNEST($17::BIGINT[], $18::DATE[], $19::BIGINT[]) \
             AS seen (url_id, day, visitor) ORDER BY url_id, day, visitor \
             ON CONFLICT DO NOTHING) \
             INSERT INTO redirect_counts (" COUNTER ") \
             SELECT url_id, $6, clicks, latest \
             FROM UNNEST($5::BIGINT[], $7::BIGINT[], $8::TIMESTAMP[]) AS delta (url_id, clicks, latest) \
             ORDER BY url_id" (ADD_TO_COUNTERS "GREATEST"))
        )
    };
}
const WRITE_CLICKS: &str = write_clicks!("WITH ");
/// [`WRITE_CLICKS`] of a direct write, which also records its batch as writer `$20`'s last
/// (`$21`, at `$22`) in the same statement.
const WRITE_CLICKS_OF_WRITER: &str = write_clicks!(sql!(
    "WITH progress AS (" (RECORD_WRITER_PROGRESS "$20" "$21" "$22") "), "
));

pub type PgStore = SqlStore<Postgres>;

/// One field of every row, as the array a parameter of [`WRITE_CLICKS`] takes.
fn column<'r, R, T>(rows: &'r [R], field: impl Fn(&'r R) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}

impl Dialect for Postgres {
    const LOCK_URL: &'static str = sql!("SELECT " URL " FROM urls WHERE id = $1 FOR UPDATE");
    const IMPORT_USER: &'static str = sql!("INSERT INTO users (" USER ") \
         VALUES (COALESCE($1, nextval(pg_get_serial_sequence('users', 'id'))), $2, $3, $4) \
         ON CONFLICT DO NOTHING RETURNING id");

    const DEACTIVATE_USER_URLS: &'static str = sql!("UPDATE urls SET is_active = FALSE, \
         updated_at = GREATEST($2, updated_at + INTERVAL '1 second'), version = version + 1 \
         WHERE user_id = $1 AND is_active RETURNING " URL);

    const COUNT_CAP: Option<i64> = Some(10_000);
    const CONCURRENT_WRITERS: usize = usize::MAX;
    const CLICK_WRITE_IS_ATOMIC: bool = true;

    /// One statement of fixed text whatever the batch size ([`WRITE_CLICKS`]), the rows
    /// passed as arrays: one prepared statement (not one per batch size, as multi-row
    /// `VALUES` would need, which also churns PgBouncer's prepared-statement cache), no
    /// per-row bind parameters, the `details` JSON built by the server, and no transaction
    /// around it.
    fn write_clicks<'t>(
        conn: &'t mut PgConnection,
        batch: ClickWrite<'t>,
    ) -> BoxFuture<'t, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let clicks = batch.clicks;
            let url_ids: Vec<i64> = clicks.iter().map(|c| c.url_id).collect();
            let user_ids: Vec<Option<i64>> = clicks.iter().map(|c| c.user_id).collect();
            let times: Vec<Timestamp> = clicks.iter().map(|c| c.at).collect();
            let codes: Vec<&str> = clicks.iter().map(|c| c.short_code.as_str()).collect();
            let bots: Vec<bool> = clicks.iter().map(|c| c.bot).collect();
            let counters = batch.counters;
            let counted: Vec<i64> = counters.iter().map(|(url_id, _)| *url_id).collect();
            let counts: Vec<i64> = counters.iter().map(|(_, (count, _))| *count).collect();
            let latest: Vec<Timestamp> = counters.iter().map(|(_, (_, at))| *at).collect();
            let rollups = &batch.analytics.rollups;
            let visitors = &batch.analytics.visitors;
            let statement = match batch.origin {
                Some(_) => WRITE_CLICKS_OF_WRITER,
                None => WRITE_CLICKS,
            };
            let write = sqlx::query(statement)
                .bind(url_ids)
                .bind(user_ids)
                .bind(times)
                .bind(codes)
                .bind(counted)
                .bind(batch.shard)
                .bind(counts)
                .bind(latest)
                .bind(bots)
                .bind(column(rollups, |r| r.key.url_id))
                .bind(column(rollups, |r| r.key.hour))
                .bind(column(rollups, |r| r.key.referrer.as_str()))
                .bind(column(rollups, |r| r.key.browser.as_str()))
                .bind(column(rollups, |r| r.key.os.as_str()))
                .bind(column(rollups, |r| r.key.device))
                .bind(column(rollups, |r| r.clicks))
                .bind(column(visitors, |v| v.url_id))
                .bind(column(visitors, |v| v.day))
                .bind(column(visitors, |v| v.visitor));
            let write = match batch.origin {
                Some(origin) => write.bind(origin.writer).bind(origin.seq).bind(now()),
                None => write,
            };
            write.execute(conn).await?;
            Ok(())
        })
    }

    fn sync_sequence(table: &str) -> Option<String> {
        Some(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
             COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        ))
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

impl PgStore {
    /// Connects, and applies pending migrations or checks that none is pending (`schema`).
    /// Migrations go over `migration_url` when given: they hold a session advisory lock (see
    /// `migrations.rs`), which PgBouncer in transaction mode cannot keep, and run DDL, which
    /// the runtime role may not.
    pub async fn connect(
        database_url: &str,
        pool_size: u32,
        migration_url: Option<&str>,
        schema: Schema,
    ) -> StoreResult<Self> {
        if let (Schema::Migrate, Some(url)) = (schema, migration_url) {
            migrate(url).await?;
        }
        let options: PgConnectOptions = database_url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            // A request waits at most this long for a connection, then fails
            // fast with 503 instead of piling up behind a sick database.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        match schema {
            Schema::Migrate if migration_url.is_none() => {
                let mut conn = pool.acquire().await?;
                migrations::apply(&MIGRATOR, &mut *conn).await?;
            }
            Schema::Migrate => {}
            Schema::RequireMigrated => {
                migrations::compare_with(&MIGRATOR, &pool)
                    .await?
                    .require_current()?;
            }
        }
        Ok(Self {
            writer: pool.clone(),
            pool,
            visitors: Default::default(),
        })
    }
}

/// Longest the connection for migrations may take to open (a pool's acquire timeout bounds
/// the others): an unanswered connect is then retried like a refused one.
const MIGRATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies the pending migrations over one direct connection to `url`.
pub async fn migrate(url: &str) -> StoreResult<MigrationReport> {
    let options = url.parse::<PgConnectOptions>()?;
    let connecting = PgConnection::connect_with(&options);
    let mut conn = match tokio::time::timeout(MIGRATION_CONNECT_TIMEOUT, connecting).await {
        Ok(conn) => conn?,
        Err(_) => {
            let timeout = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting for the migrations timed out",
            );
            return Err(sqlx::Error::Io(timeout).into());
        }
    };
    let report = migrations::apply(&MIGRATOR, &mut conn).await?;
    conn.close().await?;
    Ok(report)
}
