//! Which backend a database URL names, and opening it.

use std::sync::Arc;

use super::migrations::{MigrationReport, Schema};
use super::{DynStore, StoreResult, postgres, sqlite};

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store named by `database_url` (`postgres://…` or `sqlite://…`), applying its
/// migrations (over `migration_url` when given) or checking them, as `schema` says.
pub async fn connect(
    database_url: &str,
    pool_size: u32,
    migration_url: Option<&str>,
    schema: Schema,
) -> StoreResult<DynStore> {
    if is_postgres(database_url) {
        let store =
            postgres::PgStore::connect(database_url, pool_size, migration_url, schema).await?;
        Ok(Arc::new(store))
    } else {
        Ok(Arc::new(
            sqlite::SqliteStore::connect(database_url, schema).await?,
        ))
    }
}

/// Applies the pending migrations of the database at `url` and says what it did.
pub async fn migrate(url: &str) -> StoreResult<MigrationReport> {
    if is_postgres(url) {
        postgres::migrate(url).await
    } else {
        sqlite::migrate(url).await
    }
}
