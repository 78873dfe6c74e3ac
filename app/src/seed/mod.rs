//! Seed data in the platform's CSV format: reading (also used by
//! `POST /users/bulk`), deterministic generation, and loading.

pub mod csv;
pub mod generate;

use std::path::Path;

use crate::store::{SeedData, SeedOutcome, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads `users.csv`, `urls.csv` and `events.csv` from `dir`. Any bad line
/// stops the load: seed files are trusted input, so a bad one is a bug to
/// fix, not a row to skip.
pub fn read_dir(dir: &Path) -> Result<SeedData, SeedError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| SeedError::File {
            file: path.display().to_string(),
            message: e.to_string(),
        })
    };
    let fail = |name: &str, message: String| SeedError::File {
        file: dir.join(name).display().to_string(),
        message,
    };
    let users = csv::read_users(read("users.csv")?.as_slice(), usize::MAX)
        .map_err(|e| fail("users.csv", e))?;
    if let Some(first) = users.errors.first() {
        return Err(fail(
            "users.csv",
            format!("line {}: {}", first.line, first.error),
        ));
    }
    let urls = csv::read_urls(read("urls.csv")?.as_slice()).map_err(|e| fail("urls.csv", e))?;
    let events =
        csv::read_events(read("events.csv")?.as_slice()).map_err(|e| fail("events.csv", e))?;
    Ok(SeedData {
        users: users.rows,
        urls,
        events,
    })
}

pub async fn load_dir(store: &dyn Store, dir: &Path) -> Result<SeedOutcome, SeedError> {
    let data = read_dir(dir)?;
    Ok(store.load_seed(data).await?)
}
