use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::store::{CommitNotifier, SubscriptionOptions, log_page, subscription};
use cqrs_core::{
    Appended, BatchStream, CheckpointStore, CommandRecord, Commit, Decide, EventFilter,
    EventReader, EventStore, EventView, ExpectedVersion, Json, LogEntry, LogQuery, MessageKind,
    MessageLog, Position, ProcessSave, ProcessState, ProcessStore, ReadBatch, RecordedEvent,
    ScheduleStore, ScheduledCommand, Snapshot, SnapshotStore, StoreError, StreamId, Version,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};
use uuid::Uuid;

use crate::error::{backend, from_micros, micros};
use crate::rows::{
    self, COMMAND_COLUMNS, EVENT_COLUMNS, EventRows, SCHEDULED_COLUMNS, command_record,
    delete_scheduled, insert_command, insert_scheduled, scheduled, write_commit,
};
use crate::schema;
use crate::writer::{WriteError, Writer, WriterStats, on_multi_thread_runtime};
use cqrs_core::store::{from_i64, to_i64};

/// How hard SQLite works to keep a commit once it has returned.
///
/// Both run in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is synced on every commit. An acknowledged append survives
    /// a power loss or an OS crash. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is synced only at checkpoints. An acknowledged append
    /// survives a crash of the process, but the last commits before a power loss or an OS
    /// crash may be lost (the file stays consistent: a commit is lost whole, never in part).
    Normal,
}

/// How to open a [`SqliteEventStore`].
///
/// # Examples
///
/// ```
/// use cqrs_store_sqlite::{Durability, SqliteOptions};
///
/// let options = SqliteOptions::default()
///     .with_durability(Durability::Normal)
///     .with_readers(8)
///     .with_cache_size(64_000)
///     .with_mmap_size(256 << 20);
/// assert_eq!(options.durability(), Durability::Normal);
/// assert_eq!(options.mmap_size(), 256 << 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    durability: Durability,
    readers: usize,
    busy_timeout: Duration,
    cache_kib: u32,
    mmap_bytes: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            cache_kib: 16_000,
            mmap_bytes: 0,
        }
    }
}

impl SqliteOptions {
    /// Sets the durability (default [`Durability::Full`]).
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Keeps up to `readers` read connections open (default 4; more are opened under load).
    #[must_use]
    pub fn with_readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }

    /// How long to wait for another process's lock on the file (default 5 s).
    #[must_use]
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Gives each connection (the writer's and every reader's) a page cache of `kib`
    /// kibibytes (default 16,000, about 16 MB; SQLite's own default is 2 MB).
    ///
    /// A larger cache keeps more of the log's index and of hot streams in the process, so loads
    /// and the writer's version checks touch the file less; it costs that much memory per open
    /// connection (the writer plus up to [`SqliteOptions::with_readers`] readers).
    #[must_use]
    pub fn with_cache_size(mut self, kib: u32) -> Self {
        self.cache_kib = kib;
        self
    }

    /// Lets each connection read the file through a memory map of up to `bytes` (default 0:
    /// no map, every page is copied in by a `read` call).
    ///
    /// A map spares reads the copy into SQLite's cache and the system call, which shows in
    /// whole-log reads and replays; the mapped pages count towards the process's memory as the
    /// operating system sees it, and an I/O error on the file then arrives as a signal instead
    /// of an error (SQLite's documentation: "memory-mapped I/O"). 256 MiB is a common choice.
    #[must_use]
    pub fn with_mmap_size(mut self, bytes: u64) -> Self {
        self.mmap_bytes = bytes;
        self
    }

    /// The durability.
    #[must_use]
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The page cache of each connection, in kibibytes.
    #[must_use]
    pub fn cache_size(&self) -> u32 {
        self.cache_kib
    }

    /// The most of the file each connection maps into memory, in bytes.
    #[must_use]
    pub fn mmap_size(&self) -> u64 {
        self.mmap_bytes
    }
}

/// The embedded event store: one SQLite file, no server, every storage trait of `cqrs-core`.
///
/// One writer thread owns the write connection and commits every write waiting for it in one
/// transaction (group commit), each in its own savepoint, so concurrent appends share one
/// sync of the log while a conflicting append still fails alone. Reads use their own
/// connections on tokio's blocking pool; nothing blocks the async executor. Cloning is cheap.
///
/// # Examples
///
/// ```
/// use cqrs_core::{EventReader, EventStore, ExpectedVersion, Json, NewEvent, StreamId, Version};
/// use cqrs_store_sqlite::SqliteEventStore;
///
/// # tokio_test::block_on(async {
/// let dir = tempfile::tempdir()?;
/// let store = SqliteEventStore::open(dir.path().join("events.db")).await?;
/// let stream = StreamId::new("seats-1")?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::new("seats.added", Json::parse("{}")?)]).await?;
/// assert_eq!(store.read_stream(&stream, Version::START).await?.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct SqliteEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    /// Idle read connections; `None` for an in-memory store, whose reads go to the writer.
    readers: Option<ReaderPool>,
    notifier: CommitNotifier,
    path: Option<PathBuf>,
}

struct ReaderPool {
    path: PathBuf,
    options: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
}

impl fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// Opens (creating if needed) the store in the file at `path`, with [`SqliteOptions::default`].
    ///
    /// # Errors
    ///
    /// [`StoreError::SchemaTooNew`] if the file was written by a newer version of this crate,
    /// [`StoreError::Backend`] if it cannot be opened or is not a SQLite database.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating if needed) the store in the file at `path`.
    ///
    /// # Errors
    ///
    /// As [`SqliteEventStore::open`].
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = Connection::open(&opened).map_err(backend)?;
            configure(&conn, options, true)?;
            schema::migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(backend)??;
        let notifier = CommitNotifier::new();
        let writer = Writer::spawn(conn, notifier.clone())?;
        let readers = ReaderPool {
            path: path.clone(),
            options,
            idle: Mutex::new(Vec::new()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                readers: Some(readers),
                notifier,
                path: Some(path),
            }),
        })
    }

    /// A store that lives in memory and disappears with its last handle: for tests.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if SQLite cannot start.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let conn = tokio::task::spawn_blocking(|| -> Result<Connection, StoreError> {
            let mut conn = Connection::open_in_memory().map_err(backend)?;
            configure(&conn, SqliteOptions::default(), false)?;
            schema::migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(backend)??;
        let notifier = CommitNotifier::new();
        let writer = Writer::spawn(conn, notifier.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                readers: None,
                notifier,
                path: None,
            }),
        })
    }

    /// The file this store lives in (`None` in memory).
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Runs `f` on a read connection, off the executor: the way to query read models that
    /// live in the store's file.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let store = cqrs_store_sqlite::SqliteEventStore::open_in_memory().await?;
    /// let tables: i64 = store
    ///     .query(|conn| conn.query_row("SELECT count(*) FROM sqlite_master WHERE name LIKE 'cqrs_%'", [], |r| r.get(0)))
    ///     .await?;
    /// assert!(tables > 0);
    /// # Ok::<(), cqrs_core::StoreError>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// `f`'s error, or a failure to open a connection, as [`StoreError::Backend`].
    pub async fn query<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.read(move |conn| f(conn).map_err(backend)).await
    }

    /// Runs `f` on the writer, inside a transaction shared with other writes (in its own
    /// savepoint, rolled back if `f` fails). The result comes back once it is committed.
    ///
    /// # Errors
    ///
    /// `f`'s error, or the commit's, as [`StoreError::Backend`].
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.inner
            .writer
            .write(false, move |conn| f(conn).map_err(backend))
            .await
    }

    /// Runs `f` on a read connection (or the writer's, in memory).
    ///
    /// On a multi-threaded runtime the read runs on the calling thread, as a hand-written
    /// load would: `block_in_place` first hands the worker's other tasks to another thread,
    /// so the executor is not blocked, and the caller saves the round trip to the blocking
    /// pool (two thread wake-ups, tens of microseconds on some machines, more than a whole
    /// small read). Elsewhere (a current-thread runtime cannot give its tasks away) it goes
    /// to the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(pool) = &self.inner.readers else {
            return self.inner.writer.write(false, f).await;
        };
        if on_multi_thread_runtime() {
            return tokio::task::block_in_place(|| pool.run(f));
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            inner
                .readers
                .as_ref()
                .expect("a file store has readers")
                .run(f)
        })
        .await
        .map_err(backend)?
    }

    /// Runs `f` on the writer in its own savepoint.
    pub(crate) async fn write_with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write(false, f).await
    }

    /// How the writer thread has grouped writes into transactions so far.
    #[must_use]
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.writer.stats()
    }

    /// The notifier this store signals after each commit that appends events.
    #[must_use]
    pub fn notifier(&self) -> &CommitNotifier {
        &self.inner.notifier
    }
}

impl ReaderPool {
    /// Runs `f` on an idle read connection (opening one if none is idle).
    fn run<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.take()?;
        let result = f(&conn);
        self.give_back(conn);
        result
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
        {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(backend)?;
        configure(&conn, self.options, false)?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.options.readers.max(1) {
            idle.push(conn);
        }
    }
}

fn configure(conn: &Connection, options: SqliteOptions, writer: bool) -> Result<(), StoreError> {
    conn.busy_timeout(options.busy_timeout).map_err(backend)?;
    if writer {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::backend(std::io::Error::other(format!(
                "the file refused WAL mode (journal_mode is {mode})"
            ))));
        }
    }
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA temp_store = MEMORY; \
         PRAGMA cache_size = -{}; PRAGMA mmap_size = {};",
        options.cache_kib, options.mmap_bytes
    ))
    .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

#[async_trait]
impl EventReader for SqliteEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = stream.clone();
        self.read(move |conn| read_stream(conn, &stream, from))
            .await
    }

    /// Decodes straight from the rows on the calling thread where the runtime allows it
    /// (see [`SqliteEventStore::query`]'s connections); elsewhere reads with `read_stream`.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        visit: &mut (dyn for<'e> FnMut(EventView<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        match &self.inner.readers {
            Some(pool) if on_multi_thread_runtime() => tokio::task::block_in_place(|| {
                pool.run(|conn| rows::visit_stream(conn, stream, from, visit).map(|_| ()))
            }),
            _ => cqrs_core::store::visit_by_reading(self, stream, from, visit).await,
        }
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = to_i64(from.get())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM cqrs_events e \
                     WHERE e.position >= ?1 ORDER BY e.position LIMIT ?2"
                ))
                .map_err(backend)?;
            let mut rows = select.query(params![from, limit]).map_err(backend)?;
            let mut decoder = EventRows::default();
            // A page of the log is usually full: one allocation instead of a dozen doublings.
            let mut events = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(10_000));
            while let Some(row) = rows.next().map_err(backend)? {
                events.push(decoder.read(row)?);
            }
            Ok(events)
        })
        .await
    }

    async fn read_filtered(
        &self,
        from: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadBatch, StoreError> {
        let filter = filter.clone();
        let limit = limit.max(1);
        self.read(move |conn| read_filtered(conn, from, limit, &filter))
            .await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.read(head).await
    }

    fn subscribe_batches(&self, from: Position, filter: EventFilter) -> BatchStream {
        subscription(
            Arc::new(self.clone()),
            &self.inner.notifier,
            from,
            filter,
            SubscriptionOptions::default(),
        )
    }
}

/// Reads `stream` from version `from` on `conn`.
fn read_stream(
    conn: &Connection,
    stream: &StreamId,
    from: Version,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let from = to_i64(from.get())?;
    let mut select = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM cqrs_events e WHERE e.stream = ?1 AND e.version >= ?2 ORDER BY e.version"
        ))
        .map_err(backend)?;
    let mut rows = select
        .query(params![stream.as_str(), from])
        .map_err(backend)?;
    let mut decoder = EventRows::default();
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        events.push(decoder.read(row)?);
    }
    Ok(events)
}

fn head(conn: &Connection) -> Result<Position, StoreError> {
    let max: Option<i64> = conn
        .query_row("SELECT max(position) FROM cqrs_events", [], |r| r.get(0))
        .map_err(backend)?;
    Ok(Position::new(
        max.map_or(Ok(0), |p| from_i64(p, "position", None))?,
    ))
}

/// How many positions one filtered read scans at most: bounds the work of a read that finds
/// few matches.
const SCAN_WINDOW: u64 = 4096;

fn read_filtered(
    conn: &Connection,
    from: Position,
    limit: usize,
    filter: &EventFilter,
) -> Result<ReadBatch, StoreError> {
    let head = head(conn)?;
    let from = from.max(Position::START);
    if from > head {
        return Ok(ReadBatch {
            events: Vec::new(),
            next: from,
            end: true,
        });
    }
    // Positions are dense (one writer hands them out), so a window of positions is a window
    // of rows; bounding it by the head read above keeps the batch consistent with `end`.
    let window_end = head
        .get()
        .saturating_add(1)
        .min(from.get().saturating_add(SCAN_WINDOW.max(limit as u64)));
    let mut sql = format!(
        "SELECT {EVENT_COLUMNS} FROM cqrs_events e \
         WHERE e.position >= ?1 AND e.position < ?2"
    );
    let mut args: Vec<rusqlite::types::Value> =
        vec![to_i64(from.get())?.into(), to_i64(window_end)?.into()];
    if !filter.is_all() {
        let mut alternatives = Vec::new();
        if !filter.types.is_empty() {
            alternatives.push(format!(
                "e.event_type IN ({})",
                placeholders(args.len() + 1, filter.types.len())
            ));
            args.extend(filter.types.iter().map(|t| t.clone().into()));
        }
        if !filter.categories.is_empty() {
            alternatives.push(format!(
                "e.category IN ({})",
                placeholders(args.len() + 1, filter.categories.len())
            ));
            args.extend(filter.categories.iter().map(|c| c.clone().into()));
        }
        sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }
    sql.push_str(&format!(" ORDER BY e.position LIMIT ?{}", args.len() + 1));
    args.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    let mut select = conn.prepare_cached(&sql).map_err(backend)?;
    let mut rows = select.query(params_from_iter(args)).map_err(backend)?;
    let mut decoder = EventRows::default();
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        events.push(decoder.read(row)?);
    }
    let full = events.len() == limit;
    let next = if full {
        events.last().map_or(from, |e| e.position.next())
    } else {
        Position::new(window_end)
    };
    let end = !full && window_end > head.get();
    Ok(ReadBatch { events, next, end })
}

fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn commit(&self, commit: Commit) -> Result<Appended, StoreError> {
        commit.validate()?;
        let appends = !commit.events.is_empty();
        self.inner
            .writer
            .write_checked(appends, move |conn| write_commit(conn, commit, None))
            .await
    }

    /// All in one job of the writer, under one savepoint: all the commits or none, with one
    /// sync for the lot.
    async fn commit_in_order(&self, commits: Vec<Commit>) -> Result<Vec<Appended>, StoreError> {
        for commit in &commits {
            commit.validate()?;
        }
        let appends = commits.iter().any(|c| !c.events.is_empty());
        self.inner
            .writer
            .write(appends, move |conn| {
                commits
                    .into_iter()
                    .map(|commit| {
                        write_commit(conn, commit, None).map_err(|err| match err {
                            WriteError::Refused(e) | WriteError::Broken(e) => e,
                        })
                    })
                    .collect()
            })
            .await
    }

    /// Reads, decides and commits in one step on the writer thread, inside its transaction:
    /// a command never conflicts with another, and costs one round trip to the writer.
    async fn read_then_commit(
        &self,
        stream: &StreamId,
        from: Version,
        decide: Decide,
    ) -> Result<Option<Appended>, StoreError> {
        let stream = stream.clone();
        self.inner
            .writer
            .write_checked(true, move |conn| {
                let mut decide = decide;
                let mut stopped = false;
                let last = rows::visit_stream(conn, &stream, from, &mut |e| {
                    let next = decide.event(e);
                    stopped |= next.is_break();
                    next
                })?;
                // The stream cannot have moved since this read (same transaction, one writer):
                // its version is the last one read, or zero if it was read whole and is empty.
                // A decision that stopped early did not read it whole: the commit looks it up.
                let known = match last {
                    _ if stopped => None,
                    Some(version) => Some(version),
                    None if from <= Version::START => Some(Version::ZERO),
                    None => None,
                };
                match decide.decide() {
                    Some(commit) => {
                        commit.validate()?;
                        write_commit(conn, commit, known).map(Some)
                    }
                    None => Ok(None),
                }
            })
            .await
    }
}

#[async_trait]
impl SnapshotStore for SqliteEventStore {
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u16,
    ) -> Result<Option<Snapshot>, StoreError> {
        let stream = stream.clone();
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT version, state, taken_at FROM cqrs_snapshots WHERE stream = ?1 AND schema_version = ?2",
                )
                .map_err(backend)?;
            let row: Option<(i64, String, i64)> = select
                .query_row(params![stream.as_str(), schema_version], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(backend)?;
            row.map(|(version, state, taken_at)| {
                Ok(Snapshot {
                    stream: stream.clone(),
                    version: Version::new(from_i64(version, "snapshot version", None)?),
                    schema_version,
                    state: Json::from_stored(state),
                    taken_at: from_micros(taken_at, None)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(false, move |conn| {
                let mut upsert = conn
                    .prepare_cached(
                        "INSERT INTO cqrs_snapshots (stream, version, schema_version, state, taken_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (stream, schema_version) DO UPDATE SET version = excluded.version, \
                         state = excluded.state, taken_at = excluded.taken_at \
                         WHERE excluded.version >= cqrs_snapshots.version",
                    )
                    .map_err(backend)?;
                upsert
                    .execute(params![
                        snapshot.stream.as_str(),
                        to_i64(snapshot.version.get())?,
                        snapshot.schema_version,
                        snapshot.state.as_str(),
                        micros(snapshot.taken_at),
                    ])
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl CheckpointStore for SqliteEventStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| load_checkpoint(conn, &name)).await
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.inner
            .writer
            .write(false, move |conn| save_checkpoint(conn, &name, position))
            .await
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.inner
            .writer
            .write(false, move |conn| {
                conn.execute("DELETE FROM cqrs_checkpoints WHERE name = ?1", [name])
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }
}

/// Reads checkpoint `name`.
pub(crate) fn load_checkpoint(
    conn: &Connection,
    name: &str,
) -> Result<Option<Position>, StoreError> {
    let mut select = conn
        .prepare_cached("SELECT position FROM cqrs_checkpoints WHERE name = ?1")
        .map_err(backend)?;
    let found: Option<i64> = select
        .query_row([name], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    found
        .map(|p| from_i64(p, "checkpoint", None).map(Position::new))
        .transpose()
}

/// Writes checkpoint `name`.
pub(crate) fn save_checkpoint(
    conn: &Connection,
    name: &str,
    position: Position,
) -> Result<(), StoreError> {
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO cqrs_checkpoints (name, position) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .map_err(backend)?;
    upsert
        .execute(params![name, to_i64(position.get())?])
        .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl MessageLog for SqliteEventStore {
    async fn find_command(&self, id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {COMMAND_COLUMNS} FROM cqrs_commands WHERE command_id = ?1"
                ))
                .map_err(backend)?;
            let mut rows = select.query([id.as_bytes().as_slice()]).map_err(backend)?;
            match rows.next().map_err(backend)? {
                Some(row) => Ok(Some(command_record(row)?.1)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn query_log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
        let query = query.clone();
        self.read(move |conn| query_log(conn, &query)).await
    }
}

fn query_log(conn: &Connection, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut entries = Vec::new();
    // Commands and events are two SELECTs: one read transaction gives them one snapshot, so a
    // commit is seen whole or not at all (never a record without its events, or the reverse).
    // On the writer's connection (an in-memory store) the read is already inside its
    // transaction.
    let snapshot = if conn.is_autocommit() {
        Some(conn.unchecked_transaction().map_err(backend)?)
    } else {
        None
    };
    if query.kind != Some(MessageKind::Event) {
        let mut sql = format!("SELECT {COMMAND_COLUMNS} FROM cqrs_commands WHERE 1 = 1");
        let args = log_conditions(
            query,
            &mut sql,
            "command_type",
            "target",
            "correlation_id",
            "recorded_at",
            0,
            "sequence",
        )?;
        sql.push_str(&format!(" ORDER BY recorded_at, sequence LIMIT {limit}"));
        let mut select = conn.prepare(&sql).map_err(backend)?;
        let mut rows = select.query(params_from_iter(args)).map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            let (sequence, record) = command_record(row)?;
            entries.push(LogEntry::command(sequence, record));
        }
    }
    if query.kind != Some(MessageKind::Command) {
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM cqrs_events e WHERE 1 = 1");
        let args = log_conditions(
            query,
            &mut sql,
            "e.event_type",
            "e.stream",
            "e.correlation_id",
            "e.recorded_at",
            1,
            "e.position",
        )?;
        sql.push_str(&format!(
            " ORDER BY e.recorded_at, e.position LIMIT {limit}"
        ));
        let mut select = conn.prepare(&sql).map_err(backend)?;
        let mut rows = select.query(params_from_iter(args)).map_err(backend)?;
        let mut decoder = EventRows::default();
        while let Some(row) = rows.next().map_err(backend)? {
            entries.push(LogEntry::event(decoder.read(row)?));
        }
    }
    if let Some(snapshot) = snapshot {
        snapshot.finish().map_err(backend)?;
    }
    Ok(log_page(query, entries))
}

/// Appends the query's criteria to `sql` (values OR-ed within one, criteria AND-ed) and
/// returns the arguments.
#[expect(
    clippy::too_many_arguments,
    reason = "the column names of one of two tables"
)]
fn log_conditions(
    query: &LogQuery,
    sql: &mut String,
    type_column: &str,
    stream_column: &str,
    correlation_column: &str,
    time_column: &str,
    kind: i64,
    sequence_column: &str,
) -> Result<Vec<rusqlite::types::Value>, StoreError> {
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let list = |sql: &mut String,
                column: &str,
                values: Vec<rusqlite::types::Value>,
                args: &mut Vec<rusqlite::types::Value>| {
        if !values.is_empty() {
            sql.push_str(&format!(
                " AND {column} IN ({})",
                placeholders(args.len() + 1, values.len())
            ));
            args.extend(values);
        }
    };
    list(
        sql,
        type_column,
        query.types.iter().map(|t| t.clone().into()).collect(),
        &mut args,
    );
    list(
        sql,
        stream_column,
        query.streams.iter().map(|s| s.to_string().into()).collect(),
        &mut args,
    );
    list(
        sql,
        correlation_column,
        query
            .correlation_ids
            .iter()
            .map(|c| c.as_bytes().to_vec().into())
            .collect(),
        &mut args,
    );
    if let Some(since) = query.since {
        args.push(micros(since).into());
        sql.push_str(&format!(" AND {time_column} >= ?{}", args.len()));
    }
    if let Some(until) = query.until {
        args.push(micros(until).into());
        sql.push_str(&format!(" AND {time_column} < ?{}", args.len()));
    }
    if let Some(after) = query.after {
        let after_kind = match after.kind {
            MessageKind::Command => 0,
            MessageKind::Event => 1,
        };
        args.push(micros(after.recorded_at).into());
        args.push(after_kind.into());
        args.push(to_i64(after.sequence)?.into());
        let n = args.len();
        sql.push_str(&format!(
            " AND ({time_column}, {kind}, {sequence_column}) > (?{}, ?{}, ?{n})",
            n - 2,
            n - 1
        ));
    }
    Ok(args)
}

#[async_trait]
impl ScheduleStore for SqliteEventStore {
    async fn schedule(&self, commands: Vec<ScheduledCommand>) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(false, move |conn| insert_scheduled(conn, &commands))
            .await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: chrono::Duration,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.inner
            .writer
            .write(false, move |conn| {
                let mut select = conn
                    .prepare_cached(&format!(
                        "SELECT {SCHEDULED_COLUMNS} FROM cqrs_scheduled WHERE available_at <= ?1 \
                         ORDER BY due_at, id LIMIT ?2"
                    ))
                    .map_err(backend)?;
                let mut rows = select.query(params![micros(now), limit]).map_err(backend)?;
                let mut claimed = Vec::new();
                while let Some(row) = rows.next().map_err(backend)? {
                    claimed.push(scheduled(row)?);
                }
                let until = micros(now.checked_add_signed(lease).unwrap_or(DateTime::<Utc>::MAX_UTC));
                let mut claim = conn
                    .prepare_cached("UPDATE cqrs_scheduled SET available_at = ?1, attempts = attempts + 1 WHERE id = ?2")
                    .map_err(backend)?;
                for c in &mut claimed {
                    claim.execute(params![until, c.command.id.as_bytes().as_slice()]).map_err(backend)?;
                    c.attempts = c.attempts.saturating_add(1);
                }
                Ok(claimed)
            })
            .await
    }

    async fn list_scheduled(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let after = after.unwrap_or(Uuid::nil());
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {SCHEDULED_COLUMNS} FROM cqrs_scheduled WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))
                .map_err(backend)?;
            let mut rows = select
                .query(params![after.as_bytes().as_slice(), limit])
                .map_err(backend)?;
            let mut all = Vec::new();
            while let Some(row) = rows.next().map_err(backend)? {
                all.push(scheduled(row)?);
            }
            Ok(all)
        })
        .await
    }

    async fn complete_scheduled(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.inner
            .writer
            .write(false, move |conn| delete_scheduled(conn, &ids))
            .await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|conn| {
            let next: Option<i64> = conn
                .query_row("SELECT min(available_at) FROM cqrs_scheduled", [], |r| {
                    r.get(0)
                })
                .map_err(backend)?;
            next.map(|us| from_micros(us, None)).transpose()
        })
        .await
    }
}

#[async_trait]
impl ProcessStore for SqliteEventStore {
    async fn load_process(&self, id: &StreamId) -> Result<Option<ProcessState>, StoreError> {
        let id = id.clone();
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT version, state, completed, last_position, updated_at FROM cqrs_processes WHERE id = ?1",
                )
                .map_err(backend)?;
            let row: Option<(i64, String, bool, i64, i64)> = select
                .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .optional()
                .map_err(backend)?;
            row.map(|(version, state, completed, last_position, updated_at)| {
                Ok(ProcessState {
                    id: id.clone(),
                    version: Version::new(from_i64(version, "process version", None)?),
                    state: Json::from_stored(state),
                    completed,
                    last_position: Position::new(from_i64(last_position, "process position", None)?),
                    updated_at: from_micros(updated_at, None)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn list_processes(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<ProcessState>, StoreError> {
        let after = after.map(|a| a.as_str().to_owned()).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, version, state, completed, last_position, updated_at FROM cqrs_processes \
                     WHERE id > ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(backend)?;
            let mut rows = select.query(params![after, limit]).map_err(backend)?;
            let mut all = Vec::new();
            while let Some(row) = rows.next().map_err(backend)? {
                let id: String = row.get(0).map_err(backend)?;
                let id = StreamId::new(&id).map_err(|e| StoreError::Invalid(e.to_string()))?;
                all.push(ProcessState {
                    id,
                    version: Version::new(from_i64(row.get(1).map_err(backend)?, "process version", None)?),
                    state: Json::from_stored(row.get::<_, String>(2).map_err(backend)?),
                    completed: row.get(3).map_err(backend)?,
                    last_position: Position::new(from_i64(row.get(4).map_err(backend)?, "process position", None)?),
                    updated_at: from_micros(row.get(5).map_err(backend)?, None)?,
                });
            }
            Ok(all)
        })
        .await
    }

    async fn save_process(&self, save: ProcessSave) -> Result<(), StoreError> {
        for command in &save.outbox {
            command.validate()?;
        }
        self.inner
            .writer
            .write(false, move |conn| {
                // Recording the handled command first reports a duplicate before a conflict;
                // any error rolls the whole save back.
                if let Some(handled) = &save.handled {
                    insert_command(conn, handled)?;
                }
                let mut select =
                    conn.prepare_cached("SELECT version FROM cqrs_processes WHERE id = ?1").map_err(backend)?;
                let found: Option<i64> = select.query_row([save.id.as_str()], |r| r.get(0)).optional().map_err(backend)?;
                let actual = Version::new(found.map_or(Ok(0), |v| from_i64(v, "process version", None))?);
                if actual != save.expected {
                    return Err(StoreError::Conflict {
                        stream: save.id,
                        expected: ExpectedVersion::Exact(save.expected),
                        actual,
                    });
                }
                let mut upsert = conn
                    .prepare_cached(
                        "INSERT INTO cqrs_processes (id, version, state, completed, last_position, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (id) DO UPDATE SET version = excluded.version, state = excluded.state, \
                         completed = excluded.completed, last_position = excluded.last_position, \
                         updated_at = excluded.updated_at",
                    )
                    .map_err(backend)?;
                upsert
                    .execute(params![
                        save.id.as_str(),
                        to_i64(actual.next().get())?,
                        save.state.as_str(),
                        save.completed,
                        to_i64(save.last_position.get())?,
                        micros(save.saved_at),
                    ])
                    .map_err(backend)?;
                delete_scheduled(conn, &save.cancel)?;
                insert_scheduled(conn, &save.outbox)?;
                Ok(())
            })
            .await
    }
}
