//! Choosing the storage from a URL.

use std::sync::Arc;

use cqrs_core::{InMemoryEventStore, Storage, StoreError};
use cqrs_store_postgres::PostgresEventStore;
use cqrs_store_sqlite::SqliteEventStore;

/// Opens the storage `url` names: `memory:` (nothing kept), `sqlite://PATH` (a file, created
/// if missing) or `postgres://…` (a server).
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
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(SqliteEventStore::open(path).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresEventStore::connect(url).await?));
    }
    Err(StoreError::Invalid(format!(
        "{url:?}: use memory:, sqlite://PATH or postgres://…"
    )))
}
