//! Choosing the storage from a URL.

use std::sync::Arc;

use cqrs_core::{InMemoryEventStore, Storage, StoreError};
use cqrs_store_postgres::PostgresEventStore;
use cqrs_store_sqlite::{Durability, SqliteEventStore, SqliteOptions};

/// Opens the storage `url` names: `memory:` (nothing kept), `sqlite://PATH` (a file, created
/// if missing; `sqlite://PATH?durability=normal` trades the last commits before a power
/// loss for speed, for bulk loads) or `postgres://…` (a server).
///
/// # Errors
///
/// [`StoreError::Invalid`] for a URL of no known kind, or the store's error when it cannot
/// open.
///
/// # Examples
///
/// ```
/// # tokio_test::block_on(async {
/// let storage = conference_example::app::open_storage("memory:").await?;
/// # let _ = storage;
/// assert!(conference_example::app::open_storage("mysql://nope").await.is_err());
/// # Ok::<(), cqrs_core::StoreError>(()) }).unwrap();
/// ```
pub async fn open_storage(url: &str) -> Result<Arc<dyn Storage>, StoreError> {
    if url == "memory:" {
        return Ok(Arc::new(InMemoryEventStore::new()));
    }
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let durability = match query {
            "" | "durability=full" => Durability::Full,
            "durability=normal" => Durability::Normal,
            other => {
                return Err(StoreError::Invalid(format!(
                    "{other:?}: a SQLite URL takes only durability=full or durability=normal"
                )));
            }
        };
        let options = SqliteOptions::default().with_durability(durability);
        return Ok(Arc::new(SqliteEventStore::open_with(path, options).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresEventStore::connect(url).await?));
    }
    Err(StoreError::Invalid(format!(
        "{url:?}: use memory:, sqlite://PATH or postgres://…"
    )))
}
