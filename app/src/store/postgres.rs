//! The production backend: PostgreSQL, directly or through PgBouncer.

use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::StoreResult;
use super::sql::{Dialect, SqlStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub type PgStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const LOCK_URL: &'static str = "SELECT id, user_id, short_code, original_url, title, \
         is_active, created_at, updated_at, version FROM urls WHERE id = $1 FOR UPDATE";
    const IMPORT_USER: &'static str = "INSERT INTO users (id, username, email, created_at) \
         VALUES (COALESCE($1, nextval(pg_get_serial_sequence('users', 'id'))), $2, $3, $4) \
         ON CONFLICT DO NOTHING RETURNING id";

    const DEACTIVATE_USER_URLS: &'static str = "UPDATE urls SET is_active = FALSE, \
         updated_at = GREATEST($2, updated_at + INTERVAL '1 second'), version = version + 1 \
         WHERE user_id = $1 AND is_active \
         RETURNING id, user_id, short_code, original_url, title, is_active, created_at, \
         updated_at, version";

    const COUNT_CAP: Option<i64> = Some(10_000);
    const CONCURRENT_WRITERS: usize = usize::MAX;

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
    /// Connects and applies pending migrations. sqlx's migrator holds a
    /// PostgreSQL advisory lock while it runs, so replicas starting together
    /// apply each migration exactly once. That lock lives in a session, so
    /// behind PgBouncer in transaction mode pass `migration_url`, a direct
    /// connection to PostgreSQL, for the migrations.
    pub async fn connect(
        database_url: &str,
        pool_size: u32,
        migration_url: Option<&str>,
    ) -> StoreResult<Self> {
        if let Some(url) = migration_url {
            let direct = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(url.parse::<PgConnectOptions>()?)
                .await?;
            MIGRATOR.run(&direct).await?;
            direct.close().await;
        }
        let options: PgConnectOptions = database_url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            // A request waits at most this long for a connection, then fails
            // fast with 503 instead of piling up behind a sick database.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        if migration_url.is_none() {
            MIGRATOR.run(&pool).await?;
        }
        Ok(Self {
            writer: pool.clone(),
            pool,
        })
    }
}
