use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::store::{CommitNotifier, SubscriptionOptions, log_page, subscription};
use cqrs_core::{
    Appended, BatchStream, CheckpointStore, CommandRecord, Commit, EventFilter, EventReader,
    EventStore, EventView, ExpectedVersion, Json, LogEntry, LogQuery, MessageKind, MessageLog,
    Position, ProcessSave, ProcessState, ProcessStore, ReadBatch, RecordedEvent, ScheduleStore,
    ScheduledCommand, Snapshot, SnapshotStore, StoreError, StreamId, Version,
};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::batch::{Appender, Attempt, Pending, run_batcher};
use crate::error::{backend, unique_violation};
use crate::reads::Reader;
use crate::rows::{EventRows, command_record, headers_text, scheduled};
use crate::schema;
use crate::sql::{LOG_SNAPSHOT, Sql};
use cqrs_core::store::{from_i64, to_i64};

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
///     .with_synchronous_commit(SynchronousCommit::Off);
/// assert_eq!(options.schema(), "billing");
/// assert_eq!(options.synchronous_commit(), Some(SynchronousCommit::Off));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    schema: String,
    max_connections: u32,
    poll_interval: Duration,
    synchronous_commit: Option<SynchronousCommit>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "cqrs".to_owned(),
            max_connections: 16,
            poll_interval: Duration::from_millis(500),
            synchronous_commit: None,
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

    /// Sets `synchronous_commit` on every connection the store opens (default: the server's
    /// setting, `on` unless configured otherwise). A pool handed to
    /// [`PostgresEventStore::from_pool`] keeps its own settings.
    #[must_use]
    pub fn with_synchronous_commit(mut self, setting: SynchronousCommit) -> Self {
        self.synchronous_commit = Some(setting);
        self
    }

    /// The schema the store's tables live in.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.schema
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
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    sql: Sql,
    appender: Appender,
    batcher: mpsc::UnboundedSender<Pending>,
    batching: JoinHandle<()>,
    reader: Reader,
    reading: JoinHandle<()>,
    notifier: CommitNotifier,
    poll_interval: Duration,
    listener: JoinHandle<()>,
    announce: Arc<Notify>,
    announcer: JoinHandle<()>,
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

/// The most events one transaction may append: an event's index in its transaction has 16 bits.
pub const MAX_EVENTS_PER_TRANSACTION: usize = 65_535;

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
        let notifier = CommitNotifier::new();
        let channel = format!("cqrs_{}", options.schema);
        let listener = tokio::spawn(listen(pool.clone(), channel.clone(), notifier.clone()));
        let announce = Arc::new(Notify::new());
        let announcer = tokio::spawn(announce_commits(
            pool.clone(),
            channel.clone(),
            Arc::clone(&announce),
        ));
        let sql = Sql::new(&options.schema);
        let appender = Appender {
            pool: pool.clone(),
            sql: sql.clone(),
            channel,
        };
        let (batcher, pending) = mpsc::unbounded_channel();
        let batching = tokio::spawn(run_batcher(appender.clone(), pending));
        let (reader, reading) = Reader::start(pool.clone(), sql.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                sql,
                appender,
                batcher,
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
    /// times this way, up to [`MAX_EVENTS_PER_TRANSACTION`] events in all.
    ///
    /// # Errors
    ///
    /// As [`EventStore::commit`]. After [`StoreError::Conflict`] or
    /// [`StoreError::DuplicateCommand`] the caller's transaction is aborted: roll it back.
    pub async fn commit_in(
        &self,
        conn: &mut PgConnection,
        commit: Commit,
    ) -> Result<Appended, StoreError> {
        commit.validate()?;
        match self.inner.appender.try_commit(conn, &commit, true).await? {
            Attempt::Done(appended) => Ok(appended),
            Attempt::Raced => Err(StoreError::Conflict {
                actual: self.inner.appender.stream_version(&commit.stream).await?,
                stream: commit.stream,
                expected: commit.expected,
            }),
        }
    }

    async fn read_events(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = query.fetch_all(&self.inner.pool).await.map_err(backend)?;
        let mut decoder = EventRows::new(0);
        rows.iter().map(|row| decoder.read(row)).collect()
    }
}

/// The shortest time between two `NOTIFY`s of one store: the most a subscriber in another
/// process waits, beyond the notification's own latency, to hear of a commit.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(1);

/// Sends one `NOTIFY` for however many appends committed since the last one, so that
/// subscribers in other processes wake without every append's commit waiting on PostgreSQL's
/// notification lock.
async fn announce_commits(pool: PgPool, channel: String, wake: Arc<Notify>) {
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
        tokio::time::sleep(ANNOUNCE_INTERVAL).await;
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

#[async_trait]
impl EventReader for PostgresEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.reader.read_stream(stream, from).await
    }

    /// Reads only the columns a fold needs while the server is quiet; shares a round trip
    /// with other reads under load.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        visit: &mut (dyn for<'e> FnMut(EventView<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        match self.inner.reader.visit_alone(stream, from, visit).await {
            Some(visited) => visited,
            None => cqrs_core::store::visit_by_reading(self, stream, from, visit).await,
        }
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_events(
            sqlx::query(AssertSqlSafe(self.inner.sql.read_all.clone()))
                .bind(to_i64(from.get())?)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX)),
        )
        .await
    }

    async fn read_filtered(
        &self,
        from: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadBatch, StoreError> {
        let limit = limit.max(1);
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.read_filtered.clone()))
            .bind(to_i64(from.get())?)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(filter.is_all())
            .bind(&filter.types)
            .bind(&filter.categories)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        let head: i64 = rows
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(backend)?
            .unwrap_or(0);
        let head = Position::new(from_i64(head, "head", None)?);
        let mut decoder = EventRows::new(1);
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let position: Option<i64> = row.try_get(1).map_err(backend)?;
            if position.is_some() {
                events.push(decoder.read(row)?);
            }
        }
        let full = events.len() == limit;
        let next = if full {
            events.last().map_or(from, |e| e.position.next())
        } else {
            from.max(head.next())
        };
        Ok(ReadBatch {
            events,
            next,
            end: !full,
        })
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let head: i64 = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.head.clone()))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(Position::new(from_i64(head, "head", None)?))
    }

    /// Every committed event, below the horizon or not: committed rows are visible to a new
    /// snapshot at once; the horizon only holds back their delivery.
    async fn last_committed(&self) -> Result<Position, StoreError> {
        let last: i64 = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.last_committed.clone()))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(Position::new(from_i64(
            last,
            "last committed position",
            None,
        )?))
    }

    fn subscribe_batches(&self, from: Position, filter: EventFilter) -> BatchStream {
        let options = SubscriptionOptions {
            poll_interval: Some(self.inner.poll_interval),
            ..SubscriptionOptions::default()
        };
        subscription(
            Arc::new(self.clone()),
            &self.inner.notifier,
            from,
            filter,
            options,
        )
    }
}

#[async_trait]
impl EventStore for PostgresEventStore {
    /// Commits through the batcher: appends waiting at the same moment share one transaction
    /// and one round trip.
    async fn commit(&self, commit: Commit) -> Result<Appended, StoreError> {
        commit.validate()?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .batcher
            .send(Pending { commit, reply })
            .map_err(|_| StoreError::Closed)?;
        let appended = answer.await.map_err(|_| StoreError::Closed)??;
        if appended.position.is_some() {
            // Subscribers in this process at once; other processes by NOTIFY.
            self.inner.notifier.notify();
            self.inner.announce.notify_one();
        }
        Ok(appended)
    }
}

#[async_trait]
impl SnapshotStore for PostgresEventStore {
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u16,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.load_snapshot.clone()))
            .bind(stream.as_str())
            .bind(i32::from(schema_version))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend)?;
        row.map(|row| {
            let version: i64 = row.try_get(0).map_err(backend)?;
            let state: &str = row.try_get(1).map_err(backend)?;
            Ok(Snapshot {
                stream: stream.clone(),
                version: Version::new(from_i64(version, "snapshot version", None)?),
                schema_version,
                state: Json::from_stored(state),
                taken_at: row.try_get(2).map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.save_snapshot.clone()))
            .bind(snapshot.stream.as_str())
            .bind(i32::from(snapshot.schema_version))
            .bind(to_i64(snapshot.version.get())?)
            .bind(snapshot.state.as_str())
            .bind(snapshot.taken_at)
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for PostgresEventStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        load_checkpoint(&self.inner.sql, &self.inner.pool, name).await
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.save_checkpoint.clone()))
            .bind(name)
            .bind(to_i64(position.get())?)
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.delete_checkpoint.clone()))
            .bind(name)
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// Reads checkpoint `name` through `executor`.
pub(crate) async fn load_checkpoint<'e, E>(
    sql: &Sql,
    executor: E,
    name: &str,
) -> Result<Option<Position>, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql.load_checkpoint.clone()))
        .bind(name)
        .fetch_optional(executor)
        .await
        .map_err(backend)?;
    found
        .map(|p| from_i64(p, "checkpoint", None).map(Position::new))
        .transpose()
}

impl PostgresEventStore {
    /// The store's statements (for the transactional projections).
    pub(crate) fn sql(&self) -> &Sql {
        &self.inner.sql
    }
}

#[async_trait]
impl MessageLog for PostgresEventStore {
    async fn find_command(&self, id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.find_command.clone()))
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend)?;
        row.map(|row| command_record(&row).map(|(_, record)| record))
            .transpose()
    }

    async fn query_log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
        let sql = &self.inner.sql;
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let types: Vec<&str> = query.types.iter().map(String::as_str).collect();
        let streams: Vec<&str> = query.streams.iter().map(StreamId::as_str).collect();
        let after = match query.after {
            Some(a) => (
                Some(a.recorded_at),
                i32::from(a.kind == MessageKind::Event),
                to_i64(a.sequence)?,
            ),
            None => (None, 0, 0),
        };
        let mut snapshot = self
            .inner
            .pool
            .begin_with(LOG_SNAPSHOT)
            .await
            .map_err(backend)?;
        let mut entries = Vec::new();
        if query.kind != Some(MessageKind::Event) {
            let rows = bind_log(
                sqlx::query(AssertSqlSafe(sql.log_commands.clone())),
                &types,
                &streams,
                query,
                after,
                limit,
            )
            .fetch_all(&mut *snapshot)
            .await
            .map_err(backend)?;
            for row in &rows {
                let (sequence, record) = command_record(row)?;
                entries.push(LogEntry::command(sequence, record));
            }
        }
        if query.kind != Some(MessageKind::Command) {
            let rows = bind_log(
                sqlx::query(AssertSqlSafe(sql.log_events.clone())),
                &types,
                &streams,
                query,
                after,
                limit,
            )
            .fetch_all(&mut *snapshot)
            .await
            .map_err(backend)?;
            let mut decoder = EventRows::new(0);
            for row in &rows {
                entries.push(LogEntry::event(decoder.read(row)?));
            }
        }
        snapshot.commit().await.map_err(backend)?;
        Ok(log_page(query, entries))
    }
}

/// Binds a log query's nine parameters (see `sql::log_criteria`).
fn bind_log<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    types: &'q [&'q str],
    streams: &'q [&'q str],
    log: &'q LogQuery,
    (after_time, after_kind, after_sequence): (Option<DateTime<Utc>>, i32, i64),
    limit: i64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(types)
        .bind(streams)
        .bind(&log.correlation_ids)
        .bind(log.since)
        .bind(log.until)
        .bind(after_time)
        .bind(after_kind)
        .bind(after_sequence)
        .bind(limit)
}

#[async_trait]
impl ScheduleStore for PostgresEventStore {
    async fn schedule(&self, commands: Vec<ScheduledCommand>) -> Result<(), StoreError> {
        schedule(&self.inner.sql, &self.inner.pool, &commands).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: chrono::Duration,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let until = now
            .checked_add_signed(lease)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.claim_due.clone()))
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(until)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        let mut claimed = rows.iter().map(scheduled).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|c| (c.due_at, c.command.id));
        Ok(claimed)
    }

    async fn list_scheduled(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.list_scheduled.clone()))
            .bind(after.unwrap_or(Uuid::nil()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(scheduled).collect()
    }

    async fn complete_scheduled(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.complete_scheduled.clone()))
            .bind(ids)
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        sqlx::query_scalar(AssertSqlSafe(self.inner.sql.next_due.clone()))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)
    }
}

/// Schedules commands through `executor`; ids already scheduled are left as they are.
async fn schedule<'e, E>(
    sql: &Sql,
    executor: E,
    commands: &[ScheduledCommand],
) -> Result<(), StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    if commands.is_empty() {
        return Ok(());
    }
    for s in commands {
        s.validate()?;
    }
    let ids: Vec<Uuid> = commands.iter().map(|s| s.command.id).collect();
    let targets: Vec<&str> = commands.iter().map(|s| s.command.target.as_str()).collect();
    let types: Vec<&str> = commands
        .iter()
        .map(|s| s.command.command_type.as_str())
        .collect();
    let payloads: Vec<&str> = commands
        .iter()
        .map(|s| s.command.payload.as_str())
        .collect();
    let correlations: Vec<Option<Uuid>> =
        commands.iter().map(|s| s.command.correlation_id).collect();
    let causations: Vec<Option<Uuid>> = commands.iter().map(|s| s.command.causation_id).collect();
    let headers: Vec<Option<String>> = commands
        .iter()
        .map(|s| headers_text(&s.command.headers))
        .collect();
    let due: Vec<DateTime<Utc>> = commands.iter().map(|s| s.due_at).collect();
    sqlx::query(AssertSqlSafe(sql.schedule.clone()))
        .bind(&ids)
        .bind(&targets)
        .bind(&types)
        .bind(&payloads)
        .bind(&correlations)
        .bind(&causations)
        .bind(&headers)
        .bind(&due)
        .execute(executor)
        .await
        .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl ProcessStore for PostgresEventStore {
    async fn load_process(&self, id: &StreamId) -> Result<Option<ProcessState>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.load_process.clone()))
            .bind(id.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend)?;
        row.map(|row| {
            let version: i64 = row.try_get(0).map_err(backend)?;
            let state: &str = row.try_get(1).map_err(backend)?;
            let last: i64 = row.try_get(3).map_err(backend)?;
            Ok(ProcessState {
                id: id.clone(),
                version: Version::new(from_i64(version, "process version", None)?),
                state: Json::from_stored(state),
                completed: row.try_get(2).map_err(backend)?,
                last_position: Position::new(from_i64(last, "process position", None)?),
                updated_at: row.try_get(4).map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn list_processes(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<ProcessState>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.list_processes.clone()))
            .bind(after.map_or("", StreamId::as_str))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let id: &str = row.try_get(0).map_err(backend)?;
                let version: i64 = row.try_get(1).map_err(backend)?;
                let state: &str = row.try_get(2).map_err(backend)?;
                let last: i64 = row.try_get(4).map_err(backend)?;
                Ok(ProcessState {
                    id: StreamId::new(id).map_err(|e| StoreError::Invalid(e.to_string()))?,
                    version: Version::new(from_i64(version, "process version", None)?),
                    state: Json::from_stored(state),
                    completed: row.try_get(3).map_err(backend)?,
                    last_position: Position::new(from_i64(last, "process position", None)?),
                    updated_at: row.try_get(5).map_err(backend)?,
                })
            })
            .collect()
    }

    async fn save_process(&self, save: ProcessSave) -> Result<(), StoreError> {
        let sql = &self.inner.sql;
        let mut tx = self.inner.pool.begin().await.map_err(backend)?;
        // The handled command first: a duplicate is reported before a conflict.
        if let Some(handled) = &save.handled {
            let outcome = serde_json::to_string(&handled.outcome).map_err(backend)?;
            let inserted = sqlx::query(AssertSqlSafe(sql.insert_command.clone()))
                .bind(handled.command_id)
                .bind(&handled.command_type)
                .bind(handled.target.as_str())
                .bind(handled.payload.as_str())
                .bind(handled.correlation_id)
                .bind(handled.causation_id)
                .bind(handled.recorded_at)
                .bind(headers_text(&handled.headers))
                .bind(outcome)
                .execute(&mut *tx)
                .await;
            if let Err(err) = inserted {
                return Err(match unique_violation(&err).as_deref() {
                    Some("commands_command_id") => StoreError::DuplicateCommand {
                        command_id: handled.command_id,
                    },
                    _ => backend(err),
                });
            }
        }
        let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql.lock_process.clone()))
            .bind(save.id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let actual = Version::new(found.map_or(Ok(0), |v| from_i64(v, "process version", None))?);
        if actual != save.expected {
            return Err(StoreError::Conflict {
                stream: save.id,
                expected: ExpectedVersion::Exact(save.expected),
                actual,
            });
        }
        let statement = if found.is_some() {
            &sql.update_process
        } else {
            &sql.insert_process
        };
        let written = sqlx::query(AssertSqlSafe(statement.clone()))
            .bind(save.id.as_str())
            .bind(save.state.as_str())
            .bind(save.completed)
            .bind(to_i64(save.last_position.get())?)
            .bind(save.saved_at)
            .execute(&mut *tx)
            .await;
        if let Err(err) = written {
            // Two first saves of one instance raced: the other one won.
            return Err(match unique_violation(&err) {
                Some(_) => StoreError::Conflict {
                    stream: save.id,
                    expected: ExpectedVersion::Exact(save.expected),
                    actual: Version::new(1),
                },
                None => backend(err),
            });
        }
        if !save.cancel.is_empty() {
            sqlx::query(AssertSqlSafe(sql.complete_scheduled.clone()))
                .bind(&save.cancel)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        schedule(sql, &mut *tx, &save.outbox).await?;
        tx.commit().await.map_err(backend)
    }
}
