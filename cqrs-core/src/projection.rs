use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;

use crate::event::{EventFilter, RecordedEvent};
use crate::store::{CheckpointStore, EventReader, StoreError};
use crate::task::Background;
use crate::upcast::DecodeError;
use crate::version::Position;

/// A read model fed from the global log: named, versioned and checkpointed.
///
/// The runner hands a projection batches of the events that pass its [`Projection::filter`],
/// in log order, together with the position up to which the log has been read. The projection
/// applies them and records that position as its checkpoint. **A projection whose read model
/// lives in the same database as its checkpoint commits both in one transaction**, which
/// makes its effect exactly-once; that is the hook transactional stores plug into (the SQLite
/// and PostgreSQL stores provide such projections). Otherwise apply idempotently: the runner
/// is at-least-once, as [`Checkpointed`] is.
///
/// A new version of a projection has a new checkpoint key ([`Projection::key`]), so it can be
/// built from position zero beside the old one and swapped in once it has caught up.
///
/// # Examples
///
/// See [`MemoryProjection`] for a complete read model.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The read model's name, such as `"remaining_seats"`.
    fn name(&self) -> &str;

    /// The read model's version; a new version rebuilds beside the old one.
    fn version(&self) -> u32 {
        1
    }

    /// The events it reads (by type or stream category); all by default.
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// The checkpoint key: `"{name}@v{version}"`.
    fn key(&self) -> String {
        format!("{}@v{}", self.name(), self.version())
    }

    /// The last position the read model has processed, `None` if it has processed nothing.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the checkpoint cannot be read.
    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError>;

    /// Applies `events` (possibly none) and records `checkpoint`, the position up to which the
    /// log has been read.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the batch cannot be applied; the runner retries from the last
    /// checkpoint after a pause.
    async fn apply(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError>;

    /// Empties the read model and forgets the checkpoint, to rebuild from the start.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the read model cannot be reset.
    async fn reset(&self) -> Result<(), ProjectionError>;
}

/// Why a projection failed to apply a batch.
///
/// # Examples
///
/// ```
/// use cqrs_core::ProjectionError;
///
/// let err = ProjectionError::new("the seat type is unknown");
/// assert_eq!(err.to_string(), "projection failed: the seat type is unknown");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("projection failed{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct ProjectionError {
    message: Option<String>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProjectionError {
    /// An error with this message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: Some(message.into()),
            source: None,
        }
    }

    /// Wraps another error, kept as the [source](std::error::Error::source) (shown by
    /// [`ErrorChain`](crate::ErrorChain), not repeated in this error's own message).
    ///
    /// ```
    /// use cqrs_core::{ErrorChain, ProjectionError};
    ///
    /// let err = ProjectionError::from_error(std::io::Error::other("disk full"));
    /// assert_eq!(err.to_string(), "projection failed");
    /// assert_eq!(ErrorChain(&err).to_string(), "projection failed: disk full");
    /// ```
    pub fn from_error(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            message: None,
            source: Some(Box::new(err)),
        }
    }

    /// Wraps another error with what was being done.
    ///
    /// ```
    /// use cqrs_core::{ErrorChain, ProjectionError};
    ///
    /// let err = ProjectionError::context("updating seats", std::io::Error::other("disk full"));
    /// assert_eq!(ErrorChain(&err).to_string(), "projection failed: updating seats: disk full");
    /// ```
    pub fn context(
        message: impl Into<String>,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: Some(message.into()),
            source: Some(Box::new(err)),
        }
    }
}

/// Any error, boxed: what a store's read-model code returns, so that `?` works on its
/// database's errors, on decoding and on [`ProjectionError`] alike.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ProjectionError {
    /// The error a read model's code returned: itself if it is a `ProjectionError`, else
    /// wrapped as the source.
    ///
    /// ```
    /// use cqrs_core::{BoxError, ErrorChain, ProjectionError};
    ///
    /// let boxed: BoxError = std::io::Error::other("disk full").into();
    /// assert_eq!(ErrorChain(&ProjectionError::from_boxed(boxed)).to_string(), "projection failed: disk full");
    /// let own: BoxError = ProjectionError::new("bad seat type").into();
    /// assert_eq!(ProjectionError::from_boxed(own).to_string(), "projection failed: bad seat type");
    /// ```
    #[must_use]
    pub fn from_boxed(err: BoxError) -> Self {
        match err.downcast::<Self>() {
            Ok(own) => *own,
            Err(other) => Self {
                message: None,
                source: Some(other),
            },
        }
    }
}

impl From<StoreError> for ProjectionError {
    fn from(err: StoreError) -> Self {
        Self::from_error(err)
    }
}

impl From<DecodeError> for ProjectionError {
    fn from(err: DecodeError) -> Self {
        Self::from_error(err)
    }
}

/// What a durable read model declares, whichever store keeps its tables: the part that the
/// SQLite and PostgreSQL transactional projections share.
///
/// A new [`version`](Self::version) is built beside the live one, in its own
/// [`Namespace`], and takes over once it has caught up; the old version's tables are dropped
/// then.
pub trait ReadModelSpec: Send + Sync + 'static {
    /// The read model's name: a lowercase identifier (`a`–`z`, `0`–`9`, `_`, starting with a
    /// letter, no `__`, at most 40 bytes), as it names tables.
    fn name(&self) -> &str;

    /// The read model's version: a new one rebuilds beside the live one, in its own tables.
    fn version(&self) -> u32 {
        1
    }

    /// The events it reads; all by default.
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }
}

/// A read model a store keeps in its own tables, seen from the store: the user's
/// [`ReadModelSpec`] names it, the store checkpoints and applies in its own transactions.
///
/// Every `DurableProjection` is a [`Projection`] whose name, version and filter are its
/// spec's, so a store writes only what it does differently. Applications never implement it;
/// they implement their store's read-model trait (`SqliteProjection`, `PostgresProjection`).
///
/// # Examples
///
/// ```
/// use cqrs_core::store::DurableProjection;
/// use cqrs_core::{async_trait, Position, Projection, ProjectionError, ReadModelSpec, RecordedEvent};
///
/// struct Totals;
/// impl ReadModelSpec for Totals {
///     fn name(&self) -> &str {
///         "totals"
///     }
/// }
///
/// /// A store's wrapper: it would keep `Totals` in its own tables.
/// struct Kept(Totals);
///
/// #[async_trait]
/// impl DurableProjection for Kept {
///     type Spec = Totals;
///     fn spec(&self) -> &Totals {
///         &self.0
///     }
///     async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
///         Ok(None)
///     }
///     async fn apply(&self, _: &[RecordedEvent], _: Position) -> Result<(), ProjectionError> {
///         Ok(())
///     }
///     async fn reset(&self) -> Result<(), ProjectionError> {
///         Ok(())
///     }
/// }
///
/// assert_eq!(Kept(Totals).key(), "totals@v1");
/// ```
#[async_trait]
pub trait DurableProjection: Send + Sync + 'static {
    /// What the application declared: name, version, filter.
    type Spec: ReadModelSpec;

    /// The application's read model.
    fn spec(&self) -> &Self::Spec;

    /// As [`Projection::checkpoint`].
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the checkpoint cannot be read.
    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError>;

    /// As [`Projection::apply`]: the events and the checkpoint in one transaction.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the batch cannot be applied.
    async fn apply(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError>;

    /// As [`Projection::reset`].
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the read model cannot be reset.
    async fn reset(&self) -> Result<(), ProjectionError>;
}

#[async_trait]
impl<T: DurableProjection> Projection for T {
    fn name(&self) -> &str {
        self.spec().name()
    }

    fn version(&self) -> u32 {
        self.spec().version()
    }

    fn filter(&self) -> EventFilter {
        self.spec().filter()
    }

    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        DurableProjection::checkpoint(self).await
    }

    async fn apply(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        DurableProjection::apply(self, events, checkpoint).await
    }

    async fn reset(&self) -> Result<(), ProjectionError> {
        DurableProjection::reset(self).await
    }
}

/// Where one version of a durable read model keeps its tables, so that versions never share
/// one: on SQLite, table names prefixed with `{name}__v{version}__`; on PostgreSQL, the schema
/// `{name}__v{version}`.
///
/// # Examples
///
/// ```
/// use cqrs_core::Namespace;
///
/// let v2 = Namespace::new("seats_left", 2)?;
/// assert_eq!(v2.table("by_conference"), "\"seats_left__v2__by_conference\"");
/// assert_eq!(v2.schema(), "\"seats_left__v2\"");
/// assert_eq!(v2.key(), "seats_left@v2");
/// assert!(Namespace::new("Seats Left", 1).is_err());
/// # Ok::<(), cqrs_core::ProjectionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    name: String,
    version: u32,
}

impl Namespace {
    /// The namespace of `version` of the read model `name`.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if `name` is not a lowercase identifier as [`ReadModelSpec::name`]
    /// describes.
    pub fn new(name: &str, version: u32) -> Result<Self, ProjectionError> {
        let valid = (1..=40).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.contains("__");
        if !valid {
            return Err(ProjectionError::new(format!(
                "read model name {name:?} must be 1 to 40 bytes of a-z, 0-9 and _, starting with a \
                 letter, without __"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            version,
        })
    }

    /// The namespace of `spec`'s version.
    ///
    /// # Errors
    ///
    /// As [`Namespace::new`].
    pub fn of(spec: &dyn ReadModelSpec) -> Result<Self, ProjectionError> {
        Self::new(spec.name(), spec.version())
    }

    /// The read model's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The checkpoint key: `{name}@v{version}`.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}@v{}", self.name, self.version)
    }

    /// What every table name of this version starts with: `{name}__v{version}__`.
    #[must_use]
    pub fn prefix(&self) -> String {
        format!("{}__v{}__", self.name, self.version)
    }

    /// The quoted name of this version's table `table` (SQLite).
    #[must_use]
    pub fn table(&self, table: &str) -> String {
        format!("\"{}{}\"", self.prefix(), table.replace('"', "\"\""))
    }

    /// The quoted name of this version's schema (PostgreSQL).
    #[must_use]
    pub fn schema(&self) -> String {
        format!("\"{}__v{}\"", self.name, self.version)
    }
}

/// Handles events one at a time, for [`Checkpointed`] projections.
///
/// Implemented for closures `Fn(&RecordedEvent) -> Result<(), ProjectionError>`.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event. It may see an event again after a crash: be idempotent.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] to stop the batch; it is retried.
    async fn handle(&self, event: &RecordedEvent) -> Result<(), ProjectionError>;

    /// Empties what the handler built, to rebuild from the start. Does nothing by default.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if it cannot.
    async fn reset(&self) -> Result<(), ProjectionError> {
        Ok(())
    }
}

#[async_trait]
impl<F> EventHandler for F
where
    F: Fn(&RecordedEvent) -> Result<(), ProjectionError> + Send + Sync + 'static,
{
    async fn handle(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self(event)
    }
}

/// A projection made of an [`EventHandler`] and a [`CheckpointStore`]: at-least-once, for read
/// models that live outside the event store (a search index, an e-mail sender).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use cqrs_core::{Checkpointed, EventFilter, InMemoryEventStore, ProjectionError, ProjectionRunner, RecordedEvent};
///
/// # tokio_test::block_on(async {
/// let store = InMemoryEventStore::new();
/// let seen = Arc::new(AtomicUsize::new(0));
/// let counter = Arc::clone(&seen);
/// let projection = Checkpointed::new("mailer", Arc::new(store.clone()), move |_: &RecordedEvent| {
///     counter.fetch_add(1, Ordering::SeqCst);
///     Ok::<(), ProjectionError>(())
/// })
/// .with_filter(EventFilter::all().with_types(["order.confirmed"]));
/// let runner = ProjectionRunner::new(Arc::new(store), Arc::new(projection));
/// runner.catch_up().await?;
/// assert_eq!(seen.load(Ordering::SeqCst), 0);
/// # Ok::<(), ProjectionError>(()) }).unwrap();
/// ```
pub struct Checkpointed<H> {
    name: String,
    version: u32,
    filter: EventFilter,
    checkpoints: Arc<dyn CheckpointStore>,
    handler: H,
}

impl<H: EventHandler> Checkpointed<H> {
    /// A projection named `name`, version 1, over every event.
    pub fn new(name: impl Into<String>, checkpoints: Arc<dyn CheckpointStore>, handler: H) -> Self {
        Self {
            name: name.into(),
            version: 1,
            filter: EventFilter::all(),
            checkpoints,
            handler,
        }
    }

    /// Sets the version.
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Sets the filter.
    #[must_use]
    pub fn with_filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }
}

impl<H> fmt::Debug for Checkpointed<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpointed")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<H: EventHandler> Projection for Checkpointed<H> {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn filter(&self) -> EventFilter {
        self.filter.clone()
    }

    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        Ok(self.checkpoints.load_checkpoint(&self.key()).await?)
    }

    async fn apply(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.handler.handle(event).await?;
        }
        Ok(self
            .checkpoints
            .save_checkpoint(&self.key(), checkpoint)
            .await?)
    }

    async fn reset(&self) -> Result<(), ProjectionError> {
        self.handler.reset().await?;
        Ok(self.checkpoints.delete_checkpoint(&self.key()).await?)
    }
}

type ApplyFn<S> = dyn Fn(&mut S, &RecordedEvent) -> Result<(), ProjectionError> + Send + Sync;

/// A read model held in memory, with its checkpoint beside it under one lock: exactly-once,
/// because the state and the checkpoint always change together.
///
/// Good for tests, examples and small caches; durable read models use a store's transactional
/// projection instead.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
/// use cqrs_core::{EventFilter, EventStore, ExpectedVersion, InMemoryEventStore, Json, MemoryProjection, NewEvent, ProjectionRunner, StreamId};
///
/// # tokio_test::block_on(async {
/// let store = InMemoryEventStore::new();
/// for (stream, n) in [("seats-a", 3), ("seats-b", 5), ("seats-a", 2)] {
///     let payload = Json::encode(&serde_json::json!({ "quantity": n }))?;
///     store.append(&StreamId::new(stream)?, ExpectedVersion::Any, vec![NewEvent::new("seats.added", payload)]).await?;
/// }
///
/// // Seats added per conference.
/// let totals = Arc::new(
///     MemoryProjection::new("seat_totals", HashMap::<String, u64>::new(), |totals, event| {
///         let added: serde_json::Value = event.payload.decode().map_err(cqrs_core::ProjectionError::from_error)?;
///         *totals.entry(event.stream.to_string()).or_default() += added["quantity"].as_u64().unwrap_or(0);
///         Ok(())
///     })
///     .with_filter(EventFilter::all().with_types(["seats.added"])),
/// );
/// ProjectionRunner::new(Arc::new(store), totals.clone()).catch_up().await?;
/// assert_eq!(totals.read(|t| t["seats-a"]), 5);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub struct MemoryProjection<S> {
    name: String,
    version: u32,
    filter: EventFilter,
    initial: S,
    state: Mutex<(S, Option<Position>)>,
    apply: Box<ApplyFn<S>>,
}

impl<S: Clone + Send + Sync + 'static> MemoryProjection<S> {
    /// A read model named `name` (version 1, every event) starting from `initial`, evolved by
    /// `apply`.
    pub fn new<F>(name: impl Into<String>, initial: S, apply: F) -> Self
    where
        F: Fn(&mut S, &RecordedEvent) -> Result<(), ProjectionError> + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            version: 1,
            filter: EventFilter::all(),
            state: Mutex::new((initial.clone(), None)),
            initial,
            apply: Box::new(apply),
        }
    }

    /// Sets the version.
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Sets the filter.
    #[must_use]
    pub fn with_filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Reads the current state.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.lock().0)
    }

    /// The position of the last event applied to the state (`None`: none yet).
    #[must_use]
    pub fn applied(&self) -> Option<Position> {
        self.lock().1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (S, Option<Position>)> {
        // `apply` runs under the lock; a panic in it leaves at worst one event half-applied,
        // which the checkpoint (not advanced) already accounts for as unprocessed.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S> fmt::Debug for MemoryProjection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryProjection")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: Clone + Send + Sync + 'static> Projection for MemoryProjection<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn filter(&self) -> EventFilter {
        self.filter.clone()
    }

    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        Ok(self.lock().1)
    }

    async fn apply(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        let mut guard = self.lock();
        let (state, at) = &mut *guard;
        for event in events {
            if at.is_some_and(|p| event.position <= p) {
                continue;
            }
            (self.apply)(state, event)?;
            // Advancing per event keeps state and checkpoint in step even if a later event fails.
            *at = Some(event.position);
        }
        *at = Some(at.map_or(checkpoint, |p| p.max(checkpoint)));
        Ok(())
    }

    async fn reset(&self) -> Result<(), ProjectionError> {
        *self.lock() = (self.initial.clone(), None);
        Ok(())
    }
}

/// Where a running projection stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionStatus {
    /// The projection's checkpoint key.
    pub key: String,
    /// How far the log has been read and applied.
    pub position: Position,
    /// Whether the runner has caught up with the log and is following it live.
    pub live: bool,
    /// The last error, if the runner is retrying after one.
    pub last_error: Option<String>,
}

/// Feeds a [`Projection`] from the global log: catches up, then follows live.
///
/// Batches are applied in log order; after an error the runner waits and resumes from the
/// projection's checkpoint, so nothing is skipped. Each batch runs in a `cqrs.projection` span.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{EventStore, ExpectedVersion, InMemoryEventStore, Json, MemoryProjection, NewEvent, ProjectionRunner, StreamId};
///
/// # tokio_test::block_on(async {
/// let store = InMemoryEventStore::new();
/// let count = Arc::new(MemoryProjection::new("count", 0u64, |n, _| { *n += 1; Ok(()) }));
/// let live = ProjectionRunner::new(Arc::new(store.clone()), count.clone()).spawn();
///
/// let appended = store
///     .append(&StreamId::new("s-1")?, ExpectedVersion::Any, vec![NewEvent::new("e", Json::null())])
///     .await?;
/// live.wait_for(appended.position.unwrap()).await.unwrap();
/// assert_eq!(count.read(|n| *n), 1);
/// live.stop().await;
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct ProjectionRunner {
    reader: Arc<dyn EventReader>,
    projection: Arc<dyn Projection>,
    batch_size: usize,
    retry_delay: Duration,
    known_head: Arc<std::sync::Mutex<KnownHead>>,
    /// Shared so that whoever runs a copy beside the original can drop the label once the
    /// copy has replaced it ([`BlueGreen`](crate::BlueGreen)).
    metrics_label: Arc<std::sync::RwLock<Option<String>>>,
}

/// The log's head as last read, for the lag metrics: read again once the projection passes
/// it or a second has gone by, not for every batch.
#[derive(Debug, Default)]
struct KnownHead {
    head: Position,
    read_at: Option<Instant>,
}

impl fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.key())
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

/// How far past the saved checkpoint filtered-out events may carry a projection before the
/// runner saves the progress anyway.
const IDLE_CHECKPOINT_GAP: u64 = 1024;

impl ProjectionRunner {
    /// A runner for `projection` over `reader`, applying up to 256 events per batch.
    #[must_use]
    pub fn new(reader: Arc<dyn EventReader>, projection: Arc<dyn Projection>) -> Self {
        Self {
            reader,
            projection,
            batch_size: 256,
            retry_delay: Duration::from_millis(500),
            known_head: Arc::default(),
            metrics_label: Arc::default(),
        }
    }

    /// Labels the runner's metrics with `label` instead of the projection's key: for a copy
    /// of a projection run beside the original (a rebuild), whose gauges would otherwise
    /// overwrite the original's.
    #[must_use]
    pub fn with_metrics_label(self, label: impl Into<String>) -> Self {
        *self
            .metrics_label
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(label.into());
        self
    }

    /// The label's cell, to drop the label later (`None`: the projection's key again).
    pub(crate) fn metrics_label_cell(&self) -> Arc<std::sync::RwLock<Option<String>>> {
        Arc::clone(&self.metrics_label)
    }

    /// Applies up to `events` events per batch (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// Waits `delay` before retrying after an error (doubling up to 30 s while errors repeat).
    #[must_use]
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// The projection this runner feeds.
    #[must_use]
    pub fn projection(&self) -> &Arc<dyn Projection> {
        &self.projection
    }

    /// Applies everything in the log now, then returns the position reached.
    ///
    /// # Errors
    ///
    /// The first [`ProjectionError`]; the checkpoint stays at the last applied batch.
    pub async fn catch_up(&self) -> Result<Position, ProjectionError> {
        let filter = self.projection.filter();
        let saved = self.checked_checkpoint().await?;
        let mut position = saved;
        loop {
            let batch = self
                .reader
                .read_filtered(position.next(), self.batch_size, &filter)
                .await?;
            let reached = Position::new(batch.next.get().saturating_sub(1)).max(position);
            if !batch.events.is_empty() || reached > saved {
                self.apply_batch(&batch.events, reached, batch.end).await?;
            }
            position = reached;
            if batch.end {
                return Ok(position);
            }
        }
    }

    /// The projection's checkpoint, refusing one ahead of the log: that happens when the event
    /// store was restored from a backup older than the read model, and going on would skip
    /// every new event up to the old checkpoint.
    async fn checked_checkpoint(&self) -> Result<Position, ProjectionError> {
        let saved = self
            .projection
            .checkpoint()
            .await?
            .unwrap_or(Position::ZERO);
        let head = self.reader.head().await?;
        if saved > head {
            return Err(ProjectionError::new(format!(
                "the checkpoint of {} is at {saved}, ahead of the log's head {head}: was the event store restored \
                 from an older backup? Rebuild the read model",
                self.projection.key()
            )));
        }
        Ok(saved)
    }

    /// Empties the read model and applies the whole log again.
    ///
    /// # Errors
    ///
    /// As [`ProjectionRunner::catch_up`], or the error of [`Projection::reset`].
    pub async fn rebuild(&self) -> Result<Position, ProjectionError> {
        self.projection.reset().await?;
        self.catch_up().await
    }

    /// Applies a batch; `end` says it reaches the end of the log (the projection has caught
    /// up), for the lag metrics.
    async fn apply_batch(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
        end: bool,
    ) -> Result<(), ProjectionError> {
        let span = tracing::info_span!(
            "cqrs.projection",
            projection = %self.projection.key(),
            events = events.len(),
            checkpoint = checkpoint.get(),
            elapsed_us = tracing::field::Empty,
            "otel.kind" = "consumer",
            "messaging.system" = "cqrs",
            "messaging.operation.type" = "process",
            "messaging.batch.message_count" = events.len(),
        );
        // A batch holds events of many traces: linked, not a child of any.
        crate::trace::link_all(&span, events.iter().map(|e| &e.metadata.headers));
        let started = Instant::now();
        let result = self
            .projection
            .apply(events, checkpoint)
            .instrument(span.clone())
            .await;
        span.record(
            "elapsed_us",
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        );
        let key = self
            .metrics_label
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| self.projection.key());
        match &result {
            Ok(()) if end => {
                crate::metric::projection_applied(
                    &key,
                    events.len(),
                    checkpoint.get(),
                    0,
                    Some(0.0),
                );
            }
            Ok(()) => {
                let lag = self
                    .head_after(checkpoint)
                    .await
                    .saturating_sub(checkpoint.get());
                let age = events
                    .last()
                    .map(|e| crate::metric::seconds_since(e.metadata.recorded_at));
                crate::metric::projection_applied(&key, events.len(), checkpoint.get(), lag, age);
            }
            Err(_) => crate::metric::projection_failed(&key),
        }
        result
    }

    /// The log's head, read again when `checkpoint` has reached the one last read or a second
    /// has gone by (a failed read keeps the old one: it only feeds a metric).
    async fn head_after(&self, checkpoint: Position) -> u64 {
        let stale = {
            let known = self
                .known_head
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            known.head <= checkpoint
                || known
                    .read_at
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        };
        if stale && let Ok(head) = self.reader.head().await {
            *self
                .known_head
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = KnownHead {
                head,
                read_at: Some(Instant::now()),
            };
        }
        self.known_head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .head
            .get()
    }

    /// Runs the projection in the background: catch up, then follow the log live, retrying
    /// after errors, until [`ProjectionHandle::stop`].
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    #[must_use]
    pub fn spawn(self) -> ProjectionHandle {
        let (status_tx, status_rx) = watch::channel(ProjectionStatus {
            key: self.projection.key(),
            position: Position::ZERO,
            live: false,
            last_error: None,
        });
        let task = Background::spawn(move |stop| self.run(status_tx, stop));
        ProjectionHandle {
            status: status_rx,
            task,
        }
    }

    async fn run(self, status: watch::Sender<ProjectionStatus>, mut stop: watch::Receiver<bool>) {
        let mut delay = self.retry_delay;
        loop {
            let mut progressed = false;
            // A panic in a projection is caught and retried like an error, so one bad event
            // cannot silently end the runner.
            let result = tokio::select! {
                result = AssertUnwindSafe(self.follow(&status, &mut progressed)).catch_unwind() => result,
                _ = stop.wait_for(|s| *s) => return,
            };
            let err = match result {
                Ok(Ok(())) => ProjectionError::new("the store closed the subscription"),
                Ok(Err(err)) => err,
                Err(panic) => ProjectionError::new(format!(
                    "the projection panicked: {}",
                    panic_message(&*panic)
                )),
            };
            if progressed {
                delay = self.retry_delay;
            }
            tracing::warn!(projection = %self.projection.key(), error = %crate::ErrorChain(&err), retry_in_ms = delay.as_millis(), "projection failed; retrying");
            status.send_modify(|s| {
                s.live = false;
                s.last_error = Some(err.to_string());
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            delay = delay.saturating_mul(2).min(Duration::from_secs(30));
        }
    }

    /// Follows the log from the checkpoint until an error.
    async fn follow(
        &self,
        status: &watch::Sender<ProjectionStatus>,
        progressed: &mut bool,
    ) -> Result<(), ProjectionError> {
        let mut saved = self.checked_checkpoint().await?;
        status.send_modify(|s| s.position = s.position.max(saved));
        let mut batches = self
            .reader
            .subscribe_batches(saved.next(), self.projection.filter());
        let mut position = saved;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let reached = Position::new(batch.next.get().saturating_sub(1)).max(position);
            let chunks = batch.events.len().div_ceil(self.batch_size);
            for (i, chunk) in batch.events.chunks(self.batch_size).enumerate() {
                // The last chunk also covers the filtered-out events read after it.
                let checkpoint = if i + 1 == chunks {
                    reached
                } else {
                    chunk[chunk.len() - 1].position
                };
                self.apply_batch(chunk, checkpoint, batch.end && i + 1 == chunks)
                    .await?;
                *progressed = true;
                saved = checkpoint;
                position = checkpoint;
                status.send_modify(|s| {
                    s.position = checkpoint;
                    s.last_error = None;
                });
            }
            if batch.events.is_empty() && reached.get() >= saved.get() + IDLE_CHECKPOINT_GAP {
                self.apply_batch(&[], reached, batch.end).await?;
                saved = reached;
            }
            position = position.max(reached);
            status.send_modify(|s| {
                s.position = position;
                s.live = batch.end;
                s.last_error = None;
            });
        }
        Ok(())
    }
}

/// The runner stopped before the projection reached the position waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the projection runner stopped")]
pub struct RunnerStopped;

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A projection running in the background.
#[derive(Debug)]
pub struct ProjectionHandle {
    status: watch::Receiver<ProjectionStatus>,
    task: Background,
}

impl ProjectionHandle {
    /// Where the projection stands now.
    #[must_use]
    pub fn status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<ProjectionStatus> {
        self.status.clone()
    }

    /// Waits until the projection has applied the log up to `position` (returns at once if
    /// it has). Wrap it in a timeout where the caller must not wait for long.
    ///
    /// # Errors
    ///
    /// [`RunnerStopped`] if the runner stopped before reaching `position`.
    pub async fn wait_for(&self, position: Position) -> Result<(), RunnerStopped> {
        let mut status = self.status.clone();
        status
            .wait_for(|s| s.position >= position)
            .await
            .map(|_| ())
            .map_err(|_| RunnerStopped)
    }

    /// Stops the runner and waits until it has stopped. A batch interrupted half-way is
    /// applied again on the next start (transactional projections roll it back).
    pub async fn stop(&self) {
        self.task.stop().await;
    }
}
