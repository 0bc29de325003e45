use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::store::CommitNotifier;
use cqrs_core::{Appended, Commit, RecordedEvent, StoreError};
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::batch::{Appender, Attempt, Pending, Traffic, run_batcher};
use crate::error::backend;
use crate::read_batcher::Reader;
use crate::rows::EventRows;
use crate::schema;
use crate::sql::Sql;

/// How to connect a [`PostgresEventStore`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cqrs_store_postgres::PostgresOptions;
///
/// use cqrs_store_postgres::SynchronousCommit;
///
/// let options = PostgresOptions::default()
///     .with_schema("billing")
///     .with_max_connections(32)
///     .with_synchronous_commit(SynchronousCommit::Off)
///     .with_announce_interval(Duration::from_millis(20));
/// assert_eq!(options.schema(), "billing");
/// assert_eq!(options.announce_interval(), Duration::from_millis(20));
/// assert_eq!(
///     PostgresOptions::default().announce_interval(),
///     Duration::from_millis(5)
/// );
/// assert_eq!(options.synchronous_commit(), Some(SynchronousCommit::Off));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    schema: String,
    max_connections: u32,
    poll_interval: Duration,
    announce_interval: Duration,
    synchronous_commit: Option<SynchronousCommit>,
    correlation_index: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "cqrs".to_owned(),
            max_connections: 16,
            poll_interval: Duration::from_millis(500),
            announce_interval: Duration::from_millis(5),
            synchronous_commit: None,
            correlation_index: false,
        }
    }
}

/// When PostgreSQL answers a commit: its `synchronous_commit` setting, for the connections
/// the store opens.
///
/// The store answers an append once PostgreSQL has answered its commit, so this is also when
/// an append is acknowledged. Positions, gap safety and the order of the log are the same at
/// every setting: only what a crash can take away changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SynchronousCommit {
    /// After the commit is flushed to this server's log and, with synchronous standbys, to
    /// theirs: an acknowledged append survives a crash of the server or its machine.
    On,
    /// Before the commit is flushed: the last commits of up to three times
    /// `wal_writer_delay` (600 ms by default) may be lost if the server crashes, never part
    /// of one and never out of order. Each commit then skips a sync of the log.
    Off,
    /// After this server's log is flushed, without waiting for synchronous standbys.
    Local,
    /// After synchronous standbys have written (not flushed) the commit.
    RemoteWrite,
    /// After synchronous standbys have applied the commit, so their readers see it.
    RemoteApply,
}

impl SynchronousCommit {
    /// The setting's value as PostgreSQL spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Local => "local",
            Self::RemoteWrite => "remote_write",
            Self::RemoteApply => "remote_apply",
        }
    }
}

impl PostgresOptions {
    /// Keeps the store's tables in `schema` (default `cqrs`): a lower-case SQL identifier.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Opens up to `connections` connections (default 16).
    #[must_use]
    pub fn with_max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections.max(2);
        self
    }

    /// How often an idle subscription looks for new events even without a notification
    /// (default 500 ms): the fallback when the `LISTEN` connection is down, and the wake-up
    /// when a transaction that wrote no events held readers back.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The shortest time between two `NOTIFY`s of this store (default 5 ms): the most that
    /// subscribers in other processes wait, beyond the notification's own latency, to hear of
    /// a commit while commits keep coming (the first commit after a quiet spell is announced
    /// at once). Subscribers in this process hear of every commit at once, whatever the
    /// setting. Each `NOTIFY` is a transaction of its own that wakes every listening
    /// connection: announcing at most once a millisecond cost a lone writer's commands
    /// 6–10 % of their rate, measured, against 1–3 % at 5 ms. `Duration::ZERO` announces
    /// after every commit the store answers.
    #[must_use]
    pub fn with_announce_interval(mut self, interval: Duration) -> Self {
        self.announce_interval = interval;
        self
    }

    /// Sets `synchronous_commit` on every connection the store opens (default: the server's
    /// setting, `on` unless configured otherwise). A pool handed to
    /// [`PostgresEventStore::from_pool`] keeps its own settings.
    #[must_use]
    pub fn with_synchronous_commit(mut self, setting: SynchronousCommit) -> Self {
        self.synchronous_commit = Some(setting);
        self
    }

    /// Indexes the message log by correlation id (default off), so that a flow's messages
    /// (`MessageLog::query_log` with `correlation_ids`) are found without scanning every
    /// command and event.
    ///
    /// The index is created when the store connects with it on and missing, under the lock
    /// that migrations take, so processes starting together do it once; connecting without the
    /// option leaves an index that exists (another process may want it: drop it by hand).
    /// Creating it on a large log takes a while and holds appends back meanwhile (a plain
    /// `CREATE INDEX`); to avoid that, create it by hand first, under the names the store
    /// looks for: `CREATE INDEX CONCURRENTLY events_correlation ON {schema}.events
    /// (correlation_id)` and `CREATE INDEX CONCURRENTLY commands_correlation ON
    /// {schema}.commands (correlation_id)` (a concurrent build that failed leaves an invalid
    /// index: drop it and build again). It costs every append one more index insert per event
    /// and per command record.
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

    /// The schema the store's tables live in.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The shortest time between two `NOTIFY`s of the store.
    #[must_use]
    pub fn announce_interval(&self) -> Duration {
        self.announce_interval
    }

    /// The `synchronous_commit` the store sets, if any.
    #[must_use]
    pub fn synchronous_commit(&self) -> Option<SynchronousCommit> {
        self.synchronous_commit
    }
}

/// The PostgreSQL event store: for services that run as several processes.
///
/// Every append is one statement, and appends waiting at the same moment share one
/// statement and one transaction (group commit). Global positions are
/// `(transaction id << 16) | index`, and readers deliver only positions below the oldest
/// transaction still running (`pg_snapshot_xmin`), so a reader never skips an event that a
/// slower transaction commits later, and no writer waits on a global lock. Subscriptions are
/// woken by `LISTEN`/`NOTIFY`, and poll when the notification connection is down. Several
/// processes can share one database. Cloning is cheap.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use cqrs_core::Storage;
/// use cqrs_store_postgres::PostgresEventStore;
///
/// # async fn demo() -> Result<(), cqrs_core::StoreError> {
/// let store = PostgresEventStore::connect("postgres://app@localhost/app").await?;
/// let storage: Arc<dyn Storage> = Arc::new(store);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresEventStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) sql: Sql,
    pub(crate) appender: Appender,
    pub(crate) batcher: mpsc::UnboundedSender<Pending>,
    pub(crate) traffic: Arc<Traffic>,
    pub(crate) batching: JoinHandle<()>,
    pub(crate) reader: Reader,
    pub(crate) reading: JoinHandle<()>,
    pub(crate) notifier: CommitNotifier,
    pub(crate) poll_interval: Duration,
    pub(crate) listener: JoinHandle<()>,
    pub(crate) announce: Arc<Notify>,
    pub(crate) announcer: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
        self.announcer.abort();
        self.batching.abort();
        self.reading.abort();
    }
}

impl fmt::Debug for PostgresEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresEventStore")
            .field("schema", &self.inner.sql.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresEventStore {
    /// Connects to `url` with [`PostgresOptions::default`], creating or upgrading the schema.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the server cannot be reached, [`StoreError::SchemaTooNew`] if a
    /// newer build wrote the schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects to `url` with `options`.
    ///
    /// # Errors
    ///
    /// As [`PostgresEventStore::connect`], and [`StoreError::Invalid`] for a bad schema name.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        schema::check_schema_name(&options.schema)?;
        // No ping before handing out a connection: it would add a round trip to every query.
        // A connection that died is found by the query that uses it, which fails with a
        // backend error the caller can retry; the pool then drops it.
        let mut connect: PgConnectOptions = url.parse().map_err(backend)?;
        if let Some(setting) = options.synchronous_commit {
            connect = connect.options([("synchronous_commit", setting.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(backend)?;
        Self::from_pool(pool, options).await
    }

    /// Uses an existing pool.
    ///
    /// # Errors
    ///
    /// As [`PostgresEventStore::connect_with`].
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime (the store keeps a listener task).
    pub async fn from_pool(pool: PgPool, options: PostgresOptions) -> Result<Self, StoreError> {
        schema::check_schema_name(&options.schema)?;
        schema::migrate(&pool, &options.schema).await?;
        if options.correlation_index {
            schema::correlation_index(&pool, &options.schema).await?;
        }
        let notifier = CommitNotifier::new();
        let channel = format!("cqrs_{}", options.schema);
        let listener = tokio::spawn(listen(pool.clone(), channel.clone(), notifier.clone()));
        let announce = Arc::new(Notify::new());
        let announcer = tokio::spawn(announce_commits(
            pool.clone(),
            channel.clone(),
            Arc::clone(&announce),
            options.announce_interval,
        ));
        let sql = Sql::new(&options.schema);
        let appender = Appender {
            pool: pool.clone(),
            sql: sql.clone(),
            channel,
        };
        let (batcher, pending) = mpsc::unbounded_channel();
        let traffic = Arc::new(Traffic::default());
        let batching = tokio::spawn(run_batcher(appender.clone(), Arc::clone(&traffic), pending));
        let (reader, reading) = Reader::start(pool.clone(), sql.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                sql,
                appender,
                batcher,
                traffic,
                batching,
                reader,
                reading,
                notifier,
                poll_interval: options.poll_interval,
                listener,
                announce,
                announcer,
            }),
        })
    }

    /// The connection pool, for read models that live in the same database.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema the store's tables live in.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.inner.sql.schema
    }

    /// The notifier the store signals when `NOTIFY` says that events were committed.
    #[must_use]
    pub fn notifier(&self) -> &CommitNotifier {
        &self.inner.notifier
    }

    /// Commits inside the caller's transaction on `conn`: the events become visible, and the
    /// command record stands, only when the caller commits. A transaction may commit several
    /// times this way, up to [`MAX_EVENTS_PER_TRANSACTION`](crate::MAX_EVENTS_PER_TRANSACTION) events in all.
    ///
    /// # Errors
    ///
    /// As [`EventStore::commit`](cqrs_core::EventStore::commit). After [`StoreError::Conflict`] or
    /// [`StoreError::DuplicateCommand`] the caller's transaction is aborted: roll it back. A
    /// transaction that wrote before may also get [`StoreError::Conflict`] at the version it
    /// expected, when a younger transaction wrote the stream meanwhile (a stream's versions
    /// must follow its positions): roll back and try again.
    pub async fn commit_in(
        &self,
        conn: &mut PgConnection,
        commit: Commit,
    ) -> Result<Appended, StoreError> {
        commit.validate()?;
        match self.inner.appender.try_commit(conn, &commit, true).await? {
            Attempt::Done(appended) => Ok(appended),
            Attempt::Raced | Attempt::Younger => Err(StoreError::Conflict {
                actual: self.inner.appender.stream_version(&commit.stream).await?,
                stream: commit.stream,
                expected: commit.expected,
            }),
        }
    }

    /// Runs `query` and turns its rows into events as they arrive, so that the client's
    /// decoding overlaps the server's sending (collecting every row first left one side
    /// idle while the other worked: 40 % idle CPU over a `read_all`).
    pub(crate) async fn read_events(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut rows = query.fetch(&self.inner.pool);
        let mut decoder = EventRows::new(0);
        let mut events = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(backend)? {
            events.push(decoder.read(&row)?);
        }
        Ok(events)
    }
}

/// Sends one `NOTIFY` for however many appends committed since the last one, at most one per
/// `interval` (`PostgresOptions::with_announce_interval`), so that subscribers in other
/// processes wake without every append's commit waiting on PostgreSQL's notification lock.
async fn announce_commits(pool: PgPool, channel: String, wake: Arc<Notify>, interval: Duration) {
    loop {
        wake.notified().await;
        if let Err(err) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(&channel)
            .execute(&pool)
            .await
        {
            // Subscribers elsewhere fall back to polling meanwhile.
            tracing::warn!(%channel, error = %cqrs_core::ErrorChain(&err), "cannot NOTIFY");
        }
        // At most one NOTIFY per interval: each one is a transaction that takes PostgreSQL's
        // notification lock and wakes every listener, too dear to pay per commit.
        tokio::time::sleep(interval).await;
    }
}

/// Keeps a `LISTEN` connection and turns its notifications into commit signals; reconnects
/// after a failure (subscriptions poll meanwhile).
async fn listen(pool: PgPool, channel: String, notifier: CommitNotifier) {
    let mut delay = Duration::from_millis(100);
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(&channel).await {
                Ok(()) => {
                    delay = Duration::from_millis(100);
                    // Whatever was committed while nobody listened is read now.
                    notifier.notify();
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => notifier.notify(),
                            Ok(None) => {
                                tracing::warn!(%channel, "the LISTEN connection dropped; reconnecting");
                                notifier.notify();
                                break;
                            }
                            Err(err) => {
                                tracing::warn!(%channel, error = %cqrs_core::ErrorChain(&err), "LISTEN failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(%channel, error = %cqrs_core::ErrorChain(&err), "cannot LISTEN")
                }
            },
            Err(err) => {
                tracing::warn!(%channel, error = %cqrs_core::ErrorChain(&err), "cannot open a LISTEN connection")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
