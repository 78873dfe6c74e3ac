//! The embedded backend: one SQLite file, for laptops, demos and tests.
//! Not for several replicas: SQLite has one writer per file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite};

use super::StoreResult;
use super::migrations::{self, MigrationReport, Schema};
use super::sql::{Dialect, GET_URL, SqlStore, sql};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

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
        Ok(Self { pool, writer })
    }
}

fn options(database_url: &str) -> StoreResult<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(database_url)?
        .create_if_missing(true)
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
}
