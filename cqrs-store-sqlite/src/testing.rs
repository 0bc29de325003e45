//! Test support: a file store that cleans up after itself.
//!
//! **Available with the crate feature `testing`.**
//!
//! [`SqliteEventStore::open_in_memory`] has one connection and no file: no readers, no WAL,
//! no checkpointer. A test of what the file store does needs a file, and a file needs a
//! directory that someone removes. [`fresh_store`] makes one in the system's temporary
//! directory and removes it once the store's last handle is dropped and every connection to
//! the file has closed, the writer's and the checkpointer's threads included: dropping the last
//! handle waits for them (a few milliseconds; two seconds at most), so that a test process
//! that ends right after leaves nothing behind.

use std::sync::Arc;

use cqrs_core::StoreError;

use crate::{SqliteEventStore, SqliteOptions};

/// A store in a file of a fresh temporary directory, removed with the store.
///
/// # Examples
///
/// ```
/// use cqrs_core::{EventReader, EventStore, ExpectedVersion, Json, NewEvent, StreamId, Version};
///
/// # tokio_test::block_on(async {
/// let store = cqrs_store_sqlite::testing::fresh_store().await?;
/// let stream = StreamId::new("seats-1")?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::new("seats.added", Json::parse("{}")?)]).await?;
/// assert_eq!(store.read_stream(&stream, Version::START).await?.len(), 1);
/// assert!(store.path().is_some_and(|file| file.exists()));
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
///
/// # Errors
///
/// [`StoreError::Backend`] if the directory cannot be made or the store cannot open there.
pub async fn fresh_store() -> Result<SqliteEventStore, StoreError> {
    fresh_store_with(SqliteOptions::default()).await
}

/// As [`fresh_store`], with `options`.
///
/// # Errors
///
/// As [`fresh_store`].
pub async fn fresh_store_with(options: SqliteOptions) -> Result<SqliteEventStore, StoreError> {
    let dir = tempfile::Builder::new()
        .prefix("cqrs-sqlite-")
        .tempdir()
        .map_err(StoreError::backend)?;
    let path = dir.path().join("events.db");
    SqliteEventStore::open_keeping(path, options, Some(Arc::new(dir))).await
}

#[cfg(test)]
mod tests {
    use cqrs_core::{EventReader, EventStore, ExpectedVersion, Json, NewEvent, StreamId, Version};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_directory_goes_with_the_last_connection() {
        let store = fresh_store().await.expect("opens");
        let dir = store
            .path()
            .and_then(std::path::Path::parent)
            .expect("a file store")
            .to_path_buf();
        let stream = StreamId::new("seats-1").expect("stream");
        for written in 1..=3 {
            // Writes and reads, so that readers, the writer and the checkpointer all have a
            // connection open.
            store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![NewEvent::new(
                        "seats.added",
                        Json::parse("{}").expect("json"),
                    )],
                )
                .await
                .expect("appends");
            let read = store.read_stream(&stream, Version::START).await;
            assert_eq!(read.expect("reads").len(), written);
        }
        let other = store.clone();
        drop(store);
        assert!(dir.exists(), "a handle is left");
        drop(other);
        // The last handle waited for the writer's and the checkpointer's threads to close
        // their connections and let go, so the directory is gone already: a test process
        // ending here leaves nothing.
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}
