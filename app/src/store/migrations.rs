//! The schema's migrations: applied by `shortener migrate` (or by `serve` at start, the
//! default), or only checked by a `serve` that must not change the schema (its database role
//! cannot, and `MIGRATE_ON_START=false` says so).
//!
//! Both read sqlx's history table, `_sqlx_migrations`. Applying takes sqlx's lock first (on
//! PostgreSQL a session advisory lock, so runs started together apply each migration once;
//! SQLite has a single writer anyway) and holds it while the history is read and the pending
//! migrations are applied, so what is reported as applied is exactly what this run applied.
//!
//! A migration the database has and this build does not know is a newer build's (an image
//! rolled back): it is reported, never an error, as sqlx's `ignore_missing` allows. Migrations
//! are additive, so the older build runs on the newer schema.

use std::collections::BTreeMap;

use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{Database, Executor, FromRow, IntoArguments, Pool};

/// What connecting does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply pending migrations first (the default of `serve`, and of every other command).
    Migrate,
    /// Change nothing; refuse unless every migration of this build is applied (newer ones
    /// are allowed). For a role that may not change the schema.
    RequireMigrated,
}

/// sqlx's history table (the default name, which every migrator here uses).
const HISTORY: &str = "_sqlx_migrations";

/// A migration, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationName {
    pub version: i64,
    pub description: String,
}

impl std::fmt::Display for MigrationName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.version, self.description)
    }
}

/// What a run of the migrations did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Applied by this run, in order.
    pub applied: Vec<MigrationName>,
    /// Migrations of this build that were already applied.
    pub already: usize,
    /// Versions the database has that this build does not know (a newer build's).
    pub unknown: Vec<i64>,
}

/// How the database's history compares with the migrations this build knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Known here, not (successfully) applied there.
    pub missing: Vec<MigrationName>,
    /// Applied there with other contents than this build's file of the same version.
    pub changed: Vec<i64>,
    /// Applied there, unknown here.
    pub unknown: Vec<i64>,
}

/// A version and checksum from the history, of a migration that succeeded.
pub type AppliedVersion = (i64, Vec<u8>);

/// Compares `known` (this build's migrations) with `applied` (the database's successful ones).
pub fn compare(known: &Migrator, applied: &[AppliedVersion]) -> Comparison {
    let applied: BTreeMap<i64, &[u8]> = applied.iter().map(|(v, c)| (*v, c.as_slice())).collect();
    let mut comparison = Comparison::default();
    for migration in known.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        match applied.get(&migration.version) {
            None => comparison.missing.push(MigrationName {
                version: migration.version,
                description: migration.description.to_string(),
            }),
            Some(checksum) if *checksum != migration.checksum.as_ref() => {
                comparison.changed.push(migration.version);
            }
            Some(_) => {}
        }
    }
    comparison.unknown = applied
        .keys()
        .copied()
        .filter(|v| !known.version_exists(*v))
        .collect();
    comparison
}

/// Why a `serve` that may not migrate refuses the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotMigrated {
    pub missing: Vec<MigrationName>,
    pub changed: Vec<i64>,
}

impl std::fmt::Display for NotMigrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.missing.is_empty() {
            let names: Vec<String> = self.missing.iter().map(ToString::to_string).collect();
            write!(
                f,
                "the database lacks migration(s) {} of this build",
                names.join(", ")
            )?;
        }
        if !self.changed.is_empty() {
            let versions: Vec<String> = self.changed.iter().map(ToString::to_string).collect();
            if !self.missing.is_empty() {
                f.write_str("; ")?;
            }
            write!(
                f,
                "migration(s) {} were applied with other contents than this build's",
                versions.join(", ")
            )?;
        }
        f.write_str(
            ". MIGRATE_ON_START=false: apply them first with `shortener migrate` as the schema \
             owner (MIGRATION_DATABASE_URL), or let this process apply them with \
             MIGRATE_ON_START=true",
        )
    }
}

impl std::error::Error for NotMigrated {}

impl Comparison {
    /// Whether a build may serve on this database without migrating it; unknown (newer)
    /// versions are logged and allowed.
    pub fn require_current(self) -> Result<(), NotMigrated> {
        if !self.unknown.is_empty() {
            tracing::warn!(
                versions = ?self.unknown,
                "the database has migrations this build does not know (a newer build's); \
                 serving on it"
            );
        }
        if self.missing.is_empty() && self.changed.is_empty() {
            Ok(())
        } else {
            Err(NotMigrated {
                missing: self.missing,
                changed: self.changed,
            })
        }
    }
}

/// Applies `migrator`'s pending migrations over `conn`, in order, holding sqlx's lock from
/// the reading of the history to the last migration, with the checks `Migrator::run` makes
/// (a half-applied migration, one changed since it was applied) but allowing newer versions
/// the database has (see the module docs).
pub async fn apply<C: Migrate>(
    migrator: &Migrator,
    conn: &mut C,
) -> Result<MigrationReport, MigrateError> {
    // On error the caller drops the connection, which ends the session and its lock.
    conn.lock().await?;
    conn.ensure_migrations_table(HISTORY).await?;
    if let Some(version) = conn.dirty_version(HISTORY).await? {
        return Err(MigrateError::Dirty(version));
    }
    let before: Vec<AppliedVersion> = conn
        .list_applied_migrations(HISTORY)
        .await?
        .into_iter()
        .map(|m| (m.version, m.checksum.into_owned()))
        .collect();
    let comparison = compare(migrator, &before);
    if let Some(version) = comparison.changed.first() {
        return Err(MigrateError::VersionMismatch(*version));
    }
    let pending = migrator.iter().filter(|m| {
        !m.migration_type.is_down_migration()
            && comparison.missing.iter().any(|n| n.version == m.version)
    });
    for migration in pending {
        conn.apply(HISTORY, migration).await?;
    }
    conn.unlock().await?;
    if !comparison.unknown.is_empty() {
        tracing::warn!(
            versions = ?comparison.unknown,
            "the database has migrations this build does not know (a newer build's); left as they are"
        );
    }
    Ok(MigrationReport {
        already: before.len() - comparison.unknown.len(),
        applied: comparison.missing,
        unknown: comparison.unknown,
    })
}

/// How the history of the database behind `pool` compares with `migrator`'s migrations,
/// read with no more than the runtime role's rights; a database never migrated has none.
pub async fn compare_with<DB: Database>(
    migrator: &Migrator,
    pool: &Pool<DB>,
) -> Result<Comparison, sqlx::Error>
where
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    AppliedVersion: for<'r> FromRow<'r, DB::Row>,
{
    let applied = match sqlx::query_as(READ_HISTORY).fetch_all(pool).await {
        Ok(applied) => applied,
        Err(err) if is_missing_history(&err) => Vec::new(),
        Err(err) => return Err(err),
    };
    Ok(compare(migrator, &applied))
}

/// Whether `err` says the history table does not exist (nothing was ever migrated).
fn is_missing_history(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            let message = db.message();
            message.contains(HISTORY)
                && (db.code().as_deref() == Some("42P01") || message.contains("no such table"))
        }
        _ => false,
    }
}

/// The query reading the successful migrations of the history (the runtime role may SELECT
/// it, nothing more).
const READ_HISTORY: &str =
    "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version";

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::{Migration, MigrationType};
    use std::borrow::Cow;

    fn migrator(versions: &[(i64, &'static str)]) -> Migrator {
        let migrations = versions
            .iter()
            .map(|(v, sql)| {
                Migration::new(
                    *v,
                    Cow::Owned(format!("step {v}")),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
    }

    fn applied(m: &Migrator, versions: &[i64]) -> Vec<AppliedVersion> {
        m.iter()
            .filter(|x| versions.contains(&x.version))
            .map(|x| (x.version, x.checksum.to_vec()))
            .collect()
    }

    #[test]
    fn a_database_with_every_migration_is_current() {
        let m = migrator(&[(1, "a"), (2, "b")]);
        let c = compare(&m, &applied(&m, &[1, 2]));
        assert_eq!(c, Comparison::default());
        assert!(c.require_current().is_ok());
    }

    #[test]
    fn missing_migrations_are_named_in_the_refusal() {
        let m = migrator(&[(1, "a"), (2, "b"), (3, "c")]);
        let c = compare(&m, &applied(&m, &[1]));
        let versions: Vec<i64> = c.missing.iter().map(|n| n.version).collect();
        assert_eq!(versions, vec![2, 3]);
        let refusal = c.require_current().unwrap_err().to_string();
        assert!(
            refusal.starts_with("the database lacks migration(s) 2 (step 2), 3 (step 3)"),
            "{refusal}"
        );
        assert!(refusal.contains("shortener migrate"), "{refusal}");
        let empty = compare(&m, &[]);
        assert_eq!(empty.missing.len(), 3);
    }

    #[test]
    fn newer_migrations_are_allowed_and_reported() {
        let m = migrator(&[(1, "a"), (2, "b")]);
        let newer = migrator(&[(1, "a"), (2, "b"), (3, "c")]);
        let c = compare(&m, &applied(&newer, &[1, 2, 3]));
        assert_eq!(c.unknown, vec![3]);
        assert!(c.missing.is_empty());
        assert!(c.require_current().is_ok());
    }

    #[test]
    fn a_migration_applied_with_other_contents_is_refused() {
        let m = migrator(&[(1, "a"), (2, "b")]);
        let other = migrator(&[(1, "a"), (2, "b, edited")]);
        let c = compare(&m, &applied(&other, &[1, 2]));
        assert_eq!(c.changed, vec![2]);
        let refusal = c.require_current().unwrap_err().to_string();
        assert!(
            refusal.starts_with("migration(s) 2 were applied"),
            "{refusal}"
        );
    }
}
