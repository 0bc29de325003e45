use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::StoreError;
use cqrs_core::store::CommitNotifier;
use rusqlite::{Connection, OpenFlags};

use crate::error::backend;
use crate::readahead::ReadAhead;
use crate::schema;
use crate::writer::{Writer, WriterStats, on_multi_thread_runtime};

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
    correlation_index: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            cache_kib: 16_000,
            mmap_bytes: 0,
            correlation_index: false,
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
    ///
    /// The caches are one pool: SQLite as rusqlite builds it (`SQLITE_ENABLE_MEMORY_MANAGEMENT`)
    /// shares cached pages between every connection of the process, this store's and any
    /// other, each connection's size adding to the pool's budget. A connection that reads a
    /// lot takes idle connections' pages past its own share and keeps them while it waits. If
    /// another connection of the process then works below its share, SQLite drops each page
    /// it caches as soon as it is released, for as long as the pool stays full: measured, a
    /// command in a 300 MB file read 15 pages again per command (47 µs instead of 31 µs) while
    /// an idle connection to another file held three times its share. A larger size here
    /// gives the pool room; keeping connections that read much and then idle (a second store
    /// in the same process, say) closed when unused avoids it.
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

    /// Indexes the message log by correlation id (default off), so that a flow's messages
    /// (`MessageLog::query_log` with `correlation_ids`: a timeline, `conference-example log
    /// --correlation`) are found without scanning every command and event.
    ///
    /// The indexes are created when the store opens with the option on and they are missing
    /// (on a large file, that takes a while, once); opening without the option leaves the
    /// indexes that exist (drop them with `DROP INDEX cqrs_events_correlation; DROP INDEX
    /// cqrs_commands_correlation; DROP INDEX cqrs_events_command_correlation`). They cost every
    /// append one more B-tree insert per event and per command record:
    /// `docs/benchmarks-notes.md` has the figures.
    #[must_use]
    pub fn with_correlation_index(mut self, on: bool) -> Self {
        self.correlation_index = on;
        self
    }

    /// Whether the message log is indexed by correlation id.
    #[must_use]
    pub fn correlation_index(&self) -> bool {
        self.correlation_index
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
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) writer: Writer,
    /// Idle read connections; `None` for an in-memory store, whose reads go to the writer.
    pub(crate) readers: Option<ReaderPool>,
    /// The next pages of sequential scans of the log, read on another reader meanwhile.
    pub(crate) read_ahead: ReadAhead,
    pub(crate) notifier: CommitNotifier,
    path: Option<PathBuf>,
    /// The file's lock (see [`FileInUse`]), released when the last handle is dropped: a store
    /// opened next may find the writer thread finishing its last commit, which SQLite's own
    /// locking keeps safe, but no handle of this store is left to write after it.
    _lock: Option<File>,
    /// What must outlive every connection to the file (a temporary directory): held here and
    /// by the writer's and the checkpointer's threads, each dropping it after its connection.
    _keep: Option<LastHolder>,
}

/// Something a store keeps until its last connection has closed.
pub(crate) type KeepAlive = Arc<dyn std::any::Any + Send + Sync>;

/// The store's own hold on its [`KeepAlive`]: dropped with the store's last handle, it waits
/// (up to [`LastHolder::WAIT`]) for the writer's and the checkpointer's threads to close
/// their connections and let go, then drops it itself. A test process that exits right after
/// its last store is dropped would otherwise end before those threads, and leave the
/// directory behind.
struct LastHolder(KeepAlive);

impl LastHolder {
    const WAIT: Duration = Duration::from_secs(2);
}

impl Drop for LastHolder {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + Self::WAIT;
        // The threads end within a commit's time once the store's handles are gone.
        while Arc::strong_count(&self.0) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

pub(crate) struct ReaderPool {
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
    /// One store per file: the store holds a lock on `PATH.lock` (created beside the file)
    /// until its last handle is dropped, and a second store on the same file, in this process
    /// or another, is refused with [`FileInUse`]. Its writer thread is the file's only writer,
    /// and only it can wake the store's subscribers: a second writer would commit behind the
    /// first's back, and neither would see the other's events until it wrote itself.
    ///
    /// # Errors
    ///
    /// [`StoreError::SchemaTooNew`] if the file was written by a newer version of this crate,
    /// [`StoreError::Backend`] if it cannot be opened or is not a SQLite database, or holding
    /// a [`FileInUse`] if another store has it open.
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
        Self::open_keeping(path.as_ref().to_path_buf(), options, None).await
    }

    /// Opens the store in `path`, keeping `keep` until every connection to the file is closed.
    pub(crate) async fn open_keeping(
        path: PathBuf,
        options: SqliteOptions,
        keep: Option<KeepAlive>,
    ) -> Result<Self, StoreError> {
        let opened = path.clone();
        let (conn, checkpointer, lock) = tokio::task::spawn_blocking(
            move || -> Result<(Connection, Connection, File), StoreError> {
                let lock = lock_file(&opened)?;
                let mut conn = Connection::open(&opened).map_err(backend)?;
                configure(&conn, options, true)?;
                schema::migrate(&mut conn)?;
                if options.correlation_index {
                    schema::correlation_index(&conn)?;
                }
                let checkpointer = Connection::open(&opened).map_err(backend)?;
                configure(&checkpointer, options, false)?;
                Ok((conn, checkpointer, lock))
            },
        )
        .await
        .map_err(backend)??;
        let notifier = CommitNotifier::new();
        let writer = Writer::spawn(conn, Some(checkpointer), notifier.clone(), keep.clone())?;
        let readers = ReaderPool {
            path: path.clone(),
            options,
            idle: Mutex::new(Vec::new()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                readers: Some(readers),
                read_ahead: ReadAhead::default(),
                notifier,
                path: Some(path),
                _lock: Some(lock),
                _keep: keep.map(LastHolder),
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
        let writer = Writer::spawn(conn, None, notifier.clone(), None)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                readers: None,
                read_ahead: ReadAhead::default(),
                notifier,
                path: None,
                _lock: None,
                _keep: None,
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
    pub(crate) fn run<T>(
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

/// Another store has the SQLite file open, in this process or another: one store per file.
///
/// # Examples
///
/// ```
/// use cqrs_store_sqlite::{FileInUse, SqliteEventStore};
///
/// # tokio_test::block_on(async {
/// let dir = tempfile::tempdir()?;
/// let first = SqliteEventStore::open(dir.path().join("events.db")).await?;
/// let second = SqliteEventStore::open(dir.path().join("events.db")).await.unwrap_err();
/// assert!(std::error::Error::source(&second).is_some_and(|e| e.is::<FileInUse>()));
/// drop(first);
/// SqliteEventStore::open(dir.path().join("events.db")).await?;
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Debug, thiserror::Error)]
#[error(
    "the SQLite store at {} is open in another process (or another store in this one): \
     one store per file, as its writer must be the file's only one",
    path.display()
)]
pub struct FileInUse {
    /// The database file.
    pub path: PathBuf,
}

/// Takes the lock that makes a store the file's only one: on a file beside it, never on the
/// database itself, as closing any descriptor of the database drops the POSIX locks SQLite
/// holds on it in this process.
fn lock_file(path: &Path) -> Result<File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&name)
        .map_err(backend)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(backend(FileInUse {
            path: path.to_path_buf(),
        })),
        Err(TryLockError::Error(err)) => Err(backend(err)),
    }
}
