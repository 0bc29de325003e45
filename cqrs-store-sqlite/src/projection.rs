use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use cqrs_core::{EventFilter, Position, Projection, ProjectionError, RecordedEvent, StoreError};
use rusqlite::Connection;

use crate::error::backend;
use crate::store::{SqliteEventStore, load_checkpoint, save_checkpoint};

/// A read model whose tables live in the store's SQLite file.
///
/// Its changes and its checkpoint commit in one transaction (through
/// [`SqliteEventStore::projection`]), so each event takes effect exactly once, even across
/// crashes. The methods run on the store's writer thread: keep them quick.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{EventFilter, EventStore, ExpectedVersion, Json, NewEvent, ProjectionError, ProjectionRunner, RecordedEvent, StreamId};
/// use cqrs_store_sqlite::{SqliteEventStore, SqliteProjection, rusqlite::Connection};
///
/// /// Events per stream category.
/// struct CategoryCounts;
///
/// impl SqliteProjection for CategoryCounts {
///     fn name(&self) -> &str { "category_counts" }
///
///     fn setup(&self, conn: &Connection) -> Result<(), ProjectionError> {
///         conn.execute_batch("CREATE TABLE IF NOT EXISTS category_counts (category TEXT PRIMARY KEY, n INTEGER NOT NULL)")
///             .map_err(ProjectionError::from_error)
///     }
///
///     fn apply(&self, conn: &Connection, event: &RecordedEvent) -> Result<(), ProjectionError> {
///         conn.execute(
///             "INSERT INTO category_counts VALUES (?1, 1) ON CONFLICT (category) DO UPDATE SET n = n + 1",
///             [event.stream.category()],
///         )
///         .map_err(ProjectionError::from_error)?;
///         Ok(())
///     }
///
///     fn reset(&self, conn: &Connection) -> Result<(), ProjectionError> {
///         conn.execute_batch("DELETE FROM category_counts").map_err(ProjectionError::from_error)
///     }
/// }
///
/// # tokio_test::block_on(async {
/// let store = SqliteEventStore::open_in_memory().await?;
/// store.append(&StreamId::new("seats-1")?, ExpectedVersion::Any, vec![NewEvent::new("seats.added", Json::null())]).await?;
/// let counts = Arc::new(store.projection(CategoryCounts));
/// ProjectionRunner::new(Arc::new(store.clone()), counts).catch_up().await?;
/// let n: i64 = store
///     .query(|conn| conn.query_row("SELECT n FROM category_counts WHERE category = 'seats'", [], |r| r.get(0)))
///     .await?;
/// assert_eq!(n, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub trait SqliteProjection: Send + Sync + 'static {
    /// The read model's name.
    fn name(&self) -> &str;

    /// The read model's version; a new version rebuilds beside the old one.
    fn version(&self) -> u32 {
        1
    }

    /// The events it reads; all by default.
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// Creates the read model's tables if they are missing. Runs before the first change.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the tables cannot be created.
    fn setup(&self, conn: &Connection) -> Result<(), ProjectionError> {
        let _ = conn;
        Ok(())
    }

    /// Applies one event to the read model's tables.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] to roll the whole batch back; the runner retries it.
    fn apply(&self, conn: &Connection, event: &RecordedEvent) -> Result<(), ProjectionError>;

    /// Empties the read model's tables, to rebuild from the start.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if they cannot be emptied.
    fn reset(&self, conn: &Connection) -> Result<(), ProjectionError>;
}

/// A [`SqliteProjection`] bound to its store: a [`Projection`] whose changes and checkpoint
/// commit together. Made by [`SqliteEventStore::projection`].
pub struct Transactional<P> {
    store: SqliteEventStore,
    projection: Arc<P>,
    set_up: Arc<AtomicBool>,
}

impl<P> fmt::Debug for Transactional<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transactional")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// Binds `projection` to this store, so that its changes and its checkpoint commit in one
    /// transaction.
    pub fn projection<P: SqliteProjection>(&self, projection: P) -> Transactional<P> {
        Transactional {
            store: self.clone(),
            projection: Arc::new(projection),
            set_up: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<P: SqliteProjection> Transactional<P> {
    /// Runs `f` on the writer after making sure the read model's tables exist; a projection
    /// error rolls back `f`'s writes.
    async fn on_writer<F>(&self, f: F) -> Result<(), ProjectionError>
    where
        F: FnOnce(&P, &Connection) -> Result<(), ProjectionError> + Send + 'static,
    {
        let projection = Arc::clone(&self.projection);
        let set_up = Arc::clone(&self.set_up);
        self.store
            .write_with(move |conn| {
                let run = || {
                    if !set_up.load(Ordering::Acquire) {
                        projection.setup(conn)?;
                    }
                    f(&projection, conn)
                };
                run().map_err(StoreError::backend)
            })
            .await
            .map_err(ProjectionError::from_error)?;
        self.set_up.store(true, Ordering::Release);
        Ok(())
    }
}

#[async_trait]
impl<P: SqliteProjection> Projection for Transactional<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn version(&self) -> u32 {
        self.projection.version()
    }

    fn filter(&self) -> EventFilter {
        self.projection.filter()
    }

    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        let key = self.key();
        Ok(self
            .store
            .read(move |conn| load_checkpoint(conn, &key))
            .await?)
    }

    async fn apply(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        let events = events.to_vec();
        let key = self.key();
        self.on_writer(move |projection, conn| {
            for event in &events {
                projection.apply(conn, event)?;
            }
            save_checkpoint(conn, &key, checkpoint).map_err(ProjectionError::from_error)
        })
        .await
    }

    async fn reset(&self) -> Result<(), ProjectionError> {
        let key = self.key();
        self.on_writer(move |projection, conn| {
            projection.reset(conn)?;
            conn.execute("DELETE FROM cqrs_checkpoints WHERE name = ?1", [key])
                .map_err(|e| ProjectionError::from_error(backend(e)))?;
            Ok(())
        })
        .await
    }
}
