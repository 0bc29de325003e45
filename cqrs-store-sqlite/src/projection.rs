use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use cqrs_core::store::DurableProjection;
use cqrs_core::store::ReadModelRole as Role;
use cqrs_core::{
    BoxError, Namespace, Position, ProjectionError, ReadModelSpec, RecordedEvent, StoreError,
};
use rusqlite::{Connection, OptionalExtension};

use crate::error::backend;
use crate::state::{load_checkpoint, save_checkpoint};
use crate::store::SqliteEventStore;

/// A read model whose tables live in the store's SQLite file.
///
/// Its changes and its checkpoint commit in one transaction (through
/// [`SqliteEventStore::projection`]), so each event takes effect exactly once, even across
/// crashes. The methods run on the store's writer thread: keep them quick.
///
/// **Versions.** Each version keeps its own tables, named through the [`Namespace`] it is given
/// (`tables.table("counts")` is `"category_counts__v1__counts"`). A new
/// [`version`](ReadModelSpec::version) is built beside the live one, from the start of the log,
/// while readers keep reading the live one; once it has caught up with the live one it takes
/// over in one transaction, and the old version's tables are dropped in that same transaction.
/// Readers go through [`SqliteEventStore::read_model`], which hands them the live version's
/// names inside one read transaction, so a switch never pulls a table from under a query.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{BoxError, EventStore, ExpectedVersion, Json, Namespace, NewEvent, ProjectionRunner, ReadModelSpec, RecordedEvent, StreamId};
/// use cqrs_store_sqlite::{SqliteEventStore, SqliteProjection, rusqlite::Connection};
///
/// /// Events per stream category.
/// struct CategoryCounts;
///
/// impl ReadModelSpec for CategoryCounts {
///     fn name(&self) -> &str { "category_counts" }
/// }
///
/// impl SqliteProjection for CategoryCounts {
///     fn setup(&self, conn: &Connection, tables: &Namespace) -> Result<(), BoxError> {
///         let sql = format!("CREATE TABLE IF NOT EXISTS {} (category TEXT PRIMARY KEY, n INTEGER NOT NULL)", tables.table("counts"));
///         conn.execute_batch(&sql)?;
///         Ok(())
///     }
///
///     fn apply(&self, conn: &Connection, tables: &Namespace, event: &RecordedEvent) -> Result<(), BoxError> {
///         let sql = format!("INSERT INTO {} VALUES (?1, 1) ON CONFLICT (category) DO UPDATE SET n = n + 1", tables.table("counts"));
///         conn.execute(&sql, [event.stream.category()])?;
///         Ok(())
///     }
/// }
///
/// # tokio_test::block_on(async {
/// let store = SqliteEventStore::open_in_memory().await?;
/// store.append(&StreamId::new("seats-1")?, ExpectedVersion::Any, vec![NewEvent::new("seats.added", Json::null())]).await?;
/// let counts = Arc::new(store.projection(CategoryCounts));
/// ProjectionRunner::new(Arc::new(store.clone()), counts).catch_up().await?;
/// let n: i64 = store
///     .read_model("category_counts", |conn, tables| {
///         conn.query_row(&format!("SELECT n FROM {} WHERE category = 'seats'", tables.table("counts")), [], |r| r.get(0))
///     })
///     .await?;
/// assert_eq!(n, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub trait SqliteProjection: ReadModelSpec {
    /// Creates this version's tables, named with [`Namespace::table`], if they are missing.
    /// Runs before the first change, and again after a rebuild dropped them.
    ///
    /// # Errors
    ///
    /// Any error if the tables cannot be created.
    fn setup(&self, conn: &Connection, tables: &Namespace) -> Result<(), BoxError> {
        let _ = (conn, tables);
        Ok(())
    }

    /// Applies one event to this version's tables.
    ///
    /// # Errors
    ///
    /// Any error (`?` works on rusqlite's, on decoding, on [`ProjectionError`]) rolls the whole
    /// batch back; the runner retries it.
    fn apply(
        &self,
        conn: &Connection,
        tables: &Namespace,
        event: &RecordedEvent,
    ) -> Result<(), BoxError>;
}

/// A [`SqliteProjection`] bound to its store: a [`Projection`](cqrs_core::Projection) whose changes and checkpoint
/// commit together, and which takes over from an older version once it has caught up. Made by
/// [`SqliteEventStore::projection`].
pub struct Transactional<P> {
    store: SqliteEventStore,
    projection: Arc<P>,
    /// This version's names, or why the read model's name cannot make any.
    namespace: Result<Namespace, String>,
    set_up: Arc<AtomicBool>,
}

impl<P> fmt::Debug for Transactional<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transactional")
            .field("store", &self.store)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// Binds `projection` to this store, so that its changes and its checkpoint commit in one
    /// transaction.
    pub fn projection<P: SqliteProjection>(&self, projection: P) -> Transactional<P> {
        Transactional {
            store: self.clone(),
            namespace: Namespace::of(&projection).map_err(|e| e.to_string()),
            projection: Arc::new(projection),
            set_up: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs `f` over the live version of the read model `name`, on a reader, in one read
    /// transaction: the names `f` is given stay valid for all of it, even if a new version
    /// takes over meanwhile.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] if the read model has no live version yet (its runner has not
    /// started), or the backend error of `f` or of the read.
    pub async fn read_model<T, F>(&self, name: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Namespace) -> rusqlite::Result<T> + Send + 'static,
    {
        let name = name.to_owned();
        self.read(move |conn| {
            // One snapshot for the lookup and the query: a switch commits after it or before.
            let snapshot = if conn.is_autocommit() {
                Some(conn.unchecked_transaction().map_err(backend)?)
            } else {
                None
            };
            let version = live_version(conn, &name)?.ok_or_else(|| {
                StoreError::Invalid(format!(
                    "the read model {name} has no live version yet: start its runner first"
                ))
            })?;
            let namespace = Namespace::new(&name, version).map_err(StoreError::backend)?;
            let result = f(conn, &namespace).map_err(backend)?;
            if let Some(snapshot) = snapshot {
                snapshot.finish().map_err(backend)?;
            }
            Ok(result)
        })
        .await
    }

    /// The version of the read model `name` that readers see, if it has one.
    ///
    /// # Errors
    ///
    /// The backend error.
    pub async fn live_version(&self, name: &str) -> Result<Option<u32>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| live_version(conn, &name)).await
    }
}

/// The live version of the read model `name`.
fn live_version(conn: &Connection, name: &str) -> Result<Option<u32>, StoreError> {
    conn.prepare_cached("SELECT live_version FROM cqrs_read_models WHERE name = ?1")
        .map_err(backend)?
        .query_row([name], |r| r.get(0))
        .optional()
        .map_err(backend)
}

/// Drops every table and view of `namespace`.
fn drop_tables(conn: &Connection, namespace: &Namespace) -> Result<(), StoreError> {
    let pattern = format!("{}%", namespace.prefix().replace('_', "\\_"));
    let found: Vec<(String, String)> = conn
        .prepare("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') AND name LIKE ?1 ESCAPE '\\'")
        .map_err(backend)?
        .query_map([pattern], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(backend)?
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    for (kind, name) in found {
        let kind = if kind == "view" { "VIEW" } else { "TABLE" };
        conn.execute_batch(&format!(
            "DROP {kind} IF EXISTS \"{}\"",
            name.replace('"', "\"\"")
        ))
        .map_err(backend)?;
    }
    Ok(())
}

impl<P: SqliteProjection> Transactional<P> {
    fn namespace(&self) -> Result<&Namespace, ProjectionError> {
        self.namespace
            .as_ref()
            .map_err(|why| ProjectionError::new(why.clone()))
    }

    /// Runs `f` on the writer with this version's role, after registering the read model (the
    /// first version of a name is live at once) and creating this version's tables; a
    /// projection error rolls back `f`'s writes.
    async fn on_writer<T, F>(&self, f: F) -> Result<T, ProjectionError>
    where
        T: Send + 'static,
        F: FnOnce(&P, &Connection, &Namespace, Role) -> Result<T, ProjectionError> + Send + 'static,
    {
        let projection = Arc::clone(&self.projection);
        let set_up = Arc::clone(&self.set_up);
        let namespace = self.namespace()?.clone();
        let result = self
            .store
            .write_with(move |conn| {
                let run = || {
                    conn.execute(
                        "INSERT INTO cqrs_read_models (name, live_version) VALUES (?1, ?2) \
                         ON CONFLICT (name) DO NOTHING",
                        (namespace.name(), namespace.version()),
                    )
                    .map_err(ProjectionError::from_error)?;
                    let role = Role::of(live_version(conn, namespace.name())?, namespace.version());
                    if !matches!(role, Role::Retired) && !set_up.load(Ordering::Acquire) {
                        projection
                            .setup(conn, &namespace)
                            .map_err(ProjectionError::from_boxed)?;
                    }
                    f(&projection, conn, &namespace, role)
                };
                run().map_err(StoreError::backend)
            })
            .await
            .map_err(ProjectionError::from_error)?;
        self.set_up.store(true, Ordering::Release);
        Ok(result)
    }
}

#[async_trait]
impl<P: SqliteProjection> DurableProjection for Transactional<P> {
    type Spec = P;

    fn spec(&self) -> &P {
        &self.projection
    }

    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        // On the writer: the first call registers the read model and creates the tables, so
        // that readers find a live version once a runner has started.
        self.on_writer(|_, conn, namespace, _| {
            load_checkpoint(conn, &namespace.key()).map_err(ProjectionError::from_error)
        })
        .await
    }

    async fn apply(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        let events = events.to_vec();
        self.on_writer(move |projection, conn, namespace, role| {
            if matches!(role, Role::Retired) {
                return Ok(());
            }
            for event in &events {
                projection
                    .apply(conn, namespace, event)
                    .map_err(ProjectionError::from_boxed)?;
            }
            save_checkpoint(conn, &namespace.key(), checkpoint)
                .map_err(ProjectionError::from_error)?;
            if let Role::Building { live } = role {
                let old = Namespace::new(namespace.name(), live)?;
                // Caught up once it has read as far as the live version has (or as the log
                // goes, if the live version never recorded a checkpoint).
                let target = match load_checkpoint(conn, &old.key())? {
                    Some(position) => position,
                    None => Position::new(
                        conn.query_row(
                            "SELECT coalesce(max(position), 0) FROM cqrs_events",
                            [],
                            |r| r.get::<_, i64>(0),
                        )
                        .map_err(ProjectionError::from_error)?
                        .unsigned_abs(),
                    ),
                };
                if checkpoint >= target {
                    conn.execute(
                        "UPDATE cqrs_read_models SET live_version = ?2 WHERE name = ?1",
                        (namespace.name(), namespace.version()),
                    )
                    .map_err(ProjectionError::from_error)?;
                    drop_tables(conn, &old)?;
                    conn.execute("DELETE FROM cqrs_checkpoints WHERE name = ?1", [old.key()])
                        .map_err(ProjectionError::from_error)?;
                    tracing::info!(
                        read_model = namespace.name(),
                        from = live,
                        to = namespace.version(),
                        position = checkpoint.get(),
                        "read model switched to its new version; the old one's tables are dropped"
                    );
                }
            }
            Ok(())
        })
        .await
    }

    async fn reset(&self) -> Result<(), ProjectionError> {
        self.on_writer(|projection, conn, namespace, role| {
            if matches!(role, Role::Retired) {
                return Ok(());
            }
            drop_tables(conn, namespace)?;
            conn.execute(
                "DELETE FROM cqrs_checkpoints WHERE name = ?1",
                [namespace.key()],
            )
            .map_err(ProjectionError::from_error)?;
            projection
                .setup(conn, namespace)
                .map_err(ProjectionError::from_boxed)
        })
        .await
    }
}
