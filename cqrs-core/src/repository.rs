use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, field};
use uuid::Uuid;

use crate::aggregate::{Aggregate, ApplyError};
use crate::clock::{Clock, SystemClock};
use crate::command::{CommandContext, CommandRecord, Outcome};
use crate::event::{EventView, InvalidStreamId, Json, Metadata, NewEvent, StreamId};
use crate::message::{MessageError, decode_message, encode_message};
use crate::store::{Commit, Decide, Snapshot, Storage, StoreError, StreamDecision};
use crate::upcast::{DecodeError, Upcasters};
use crate::version::{ExpectedVersion, Position, Version};

/// When to snapshot an aggregate.
///
/// # Examples
///
/// ```
/// use cqrs_core::{SnapshotPolicy, Version};
///
/// let policy = SnapshotPolicy::every(100);
/// assert!(policy.is_due(Version::new(99), Version::new(101)));
/// assert!(!policy.is_due(Version::new(101), Version::new(150)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: u64,
}

impl SnapshotPolicy {
    /// Snapshots whenever a command carries the stream across a multiple of `events` (at
    /// least 1), so that loading never replays more than about `events` events.
    #[must_use]
    pub fn every(events: u64) -> Self {
        Self {
            every: events.max(1),
        }
    }

    /// Whether a command that moved the stream from `before` to `after` should snapshot.
    #[must_use]
    pub fn is_due(&self, before: Version, after: Version) -> bool {
        before.get() / self.every != after.get() / self.every
    }
}

struct SnapshotCodec<A> {
    policy: SnapshotPolicy,
    encode: fn(&A) -> Result<Json, serde_json::Error>,
    decode: fn(&Json) -> Result<A, serde_json::Error>,
}

impl<A> Clone for SnapshotCodec<A> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy,
            encode: self.encode,
            decode: self.decode,
        }
    }
}

/// Loads aggregates and handles commands against a [`Storage`]: the command side of the
/// framework.
///
/// Handling a command loads the aggregate (from its latest snapshot plus the events after
/// it), decides with [`Aggregate::handle`], and appends the events at the loaded version
/// together with the command's record in the message log, in one commit. On a concurrency
/// conflict it reloads and decides again, a bounded number of times. A command id that was
/// handled before is not executed again: the recorded result comes back. Events inherit the
/// command's correlation id and get its id as causation id.
///
/// Cloning is cheap.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{Aggregate, ApplyError, DomainEvent, InMemoryEventStore, Repository, Version};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Room { seats: u32 }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// enum RoomCommand {
///     #[serde(rename = "room.open")]
///     Open { seats: u32 },
///     #[serde(rename = "room.book")]
///     Book,
/// }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum RoomEvent {
///     #[serde(rename = "room.opened")]
///     Opened { seats: u32 },
///     #[serde(rename = "room.booked")]
///     Booked,
/// }
/// impl DomainEvent for RoomEvent {}
///
/// #[derive(Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
/// enum RoomError {
///     #[error("no such room")]
///     NotFound,
///     #[error("the room is full")]
///     Full,
///     #[error("the room is already open")]
///     AlreadyOpen,
/// }
///
/// impl Aggregate for Room {
///     const TYPE: &'static str = "room";
///     type Id = u32;
///     type Command = RoomCommand;
///     type Event = RoomEvent;
///     type Error = RoomError;
///
///     fn handle(state: Option<&Self>, _id: &u32, command: RoomCommand) -> Result<Vec<RoomEvent>, RoomError> {
///         match (state, command) {
///             (None, RoomCommand::Open { seats }) => Ok(vec![RoomEvent::Opened { seats }]),
///             (Some(_), RoomCommand::Open { .. }) => Err(RoomError::AlreadyOpen),
///             (None, RoomCommand::Book) => Err(RoomError::NotFound),
///             (Some(room), RoomCommand::Book) if room.seats == 0 => Err(RoomError::Full),
///             (Some(_), RoomCommand::Book) => Ok(vec![RoomEvent::Booked]),
///         }
///     }
///
///     fn apply(state: Option<Self>, event: &RoomEvent) -> Result<Self, ApplyError> {
///         match (state, event) {
///             (None, RoomEvent::Opened { seats }) => Ok(Room { seats: *seats }),
///             (Some(room), RoomEvent::Booked) => Ok(Room { seats: room.seats - 1 }),
///             (state, event) => Err(ApplyError::unexpected(state.is_some(), event)),
///         }
///     }
/// }
///
/// # tokio_test::block_on(async {
/// let rooms = Repository::<Room>::new(Arc::new(InMemoryEventStore::new()));
/// rooms.handle(&7, RoomCommand::Open { seats: 1 }).await?;
/// rooms.handle(&7, RoomCommand::Book).await?;
/// let full = rooms.handle(&7, RoomCommand::Book).await.unwrap_err();
/// assert_eq!(full.rejection(), Some(&RoomError::Full));
///
/// let room = rooms.load(&7).await?;
/// assert_eq!(room.version, Version::new(2));
/// assert_eq!(room.state.unwrap().seats, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub struct Repository<A: Aggregate> {
    storage: Arc<dyn Storage>,
    upcasters: Upcasters,
    clock: Arc<dyn Clock>,
    snapshots: Option<SnapshotCodec<A>>,
    cache: Option<Arc<StateCache<A>>>,
    log_commands: bool,
    max_attempts: u32,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            storage: Arc::clone(&self.storage),
            upcasters: self.upcasters.clone(),
            clock: Arc::clone(&self.clock),
            snapshots: self.snapshots.clone(),
            cache: self.cache.clone(),
            log_commands: self.log_commands,
            max_attempts: self.max_attempts,
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::TYPE)
            .field("upcasters", &self.upcasters)
            .field("clock", &self.clock)
            .field("snapshots", &self.snapshots.as_ref().map(|s| s.policy))
            .field("cache", &self.cache.as_ref().map(|c| c.capacity))
            .field("log_commands", &self.log_commands)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// An aggregate as loaded: its state (`None` if it does not exist) and its stream version.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The state, or `None` if the stream has no events.
    pub state: Option<A>,
    /// The stream version the state includes.
    pub version: Version,
}

/// What handling a command did.
#[derive(Debug, Clone)]
pub struct Handled<A: Aggregate> {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The stream's version after the command.
    pub version: Version,
    /// The global position of the command's last event (`None` if it caused none).
    pub position: Option<Position>,
    /// The events the command caused.
    pub events: Vec<A::Event>,
    /// The command id.
    pub command_id: Uuid,
    /// True when the command id had been handled before and this is the recorded result.
    pub replayed: bool,
}

impl<A: Aggregate> Repository<A> {
    /// The default number of attempts when appends conflict.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

    /// A repository over `storage` with no upcasters, the system clock, no snapshots and
    /// [`Repository::DEFAULT_MAX_ATTEMPTS`].
    ///
    /// # Panics
    ///
    /// Panics if [`Aggregate::TYPE`] is empty or contains `-`: the stream category could not
    /// be told from the id, and commands could not be routed back to the aggregate.
    #[must_use]
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        crate::event::assert_category("Aggregate::TYPE", A::TYPE);
        Self {
            storage,
            upcasters: Upcasters::new(),
            clock: Arc::new(SystemClock),
            snapshots: None,
            cache: None,
            log_commands: true,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            _aggregate: PhantomData,
        }
    }

    /// Decodes stored events through `upcasters`.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Stamps events and records with `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Tries a command at most `attempts` times (at least once) when appends conflict.
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Takes snapshots by `policy` and loads from them.
    #[must_use]
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        self.snapshots = Some(SnapshotCodec {
            policy,
            encode: |a| Json::encode(a),
            decode: Json::decode,
        });
        self
    }

    /// Keeps the states of up to `capacity` aggregates in memory after each command, so that
    /// the next command on a hot aggregate neither reads its stream nor decodes a snapshot.
    ///
    /// The cache is shared by this repository's clones. A cached state is only a starting
    /// point, like a snapshot: a command still reads whatever its stream gained since (another
    /// process's writes, say) and commits at the version it decided on, so a stale entry costs
    /// a longer read or a retry, never a wrong decision. An entry is taken out while its command
    /// runs and put back only after the commit succeeded (or the command was rejected), so
    /// concurrent commands on one aggregate and failed commits fall back to loading. The least
    /// recently used aggregates go first (approximately: two generations of `capacity / 2`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use cqrs_core::{Aggregate, ApplyError, DomainEvent, InMemoryEventStore, Repository, Version};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, Serialize, Deserialize)]
    /// # struct Counter { n: u64 }
    /// # #[derive(Debug, Serialize, Deserialize)]
    /// # enum CounterCommand { #[serde(rename = "counter.add")] Add }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # enum CounterEvent { #[serde(rename = "counter.added")] Added }
    /// # impl DomainEvent for CounterEvent {}
    /// # #[derive(Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
    /// # #[error("never")] struct Never;
    /// # impl Aggregate for Counter {
    /// #     const TYPE: &'static str = "counter";
    /// #     type Id = u32; type Command = CounterCommand; type Event = CounterEvent; type Error = Never;
    /// #     fn handle(_: Option<&Self>, _: &u32, _: CounterCommand) -> Result<Vec<CounterEvent>, Never> { Ok(vec![CounterEvent::Added]) }
    /// #     fn apply(state: Option<Self>, _: &CounterEvent) -> Result<Self, ApplyError> { Ok(Counter { n: state.map_or(0, |c| c.n) + 1 }) }
    /// # }
    /// # tokio_test::block_on(async {
    /// let counters = Repository::<Counter>::new(Arc::new(InMemoryEventStore::new())).with_cache(10_000);
    /// for _ in 0..3 {
    ///     // After the first, each command starts from the cached state.
    ///     counters.handle(&1, CounterCommand::Add).await?;
    /// }
    /// assert_eq!(counters.load(&1).await?.version, Version::new(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    #[must_use]
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(Arc::new(StateCache::new(capacity)));
        self
    }

    /// Stops recording this repository's commands in the message log: for a hot path that
    /// cannot afford the record's write (one more row and index entry per command; figures in
    /// `docs/benchmarks-notes.md`).
    ///
    /// What is given up: a command id handled before is **executed again** (the record is what
    /// recognises it), the message log shows the events but not the commands or their
    /// rejections, and a rejected command leaves no trace. Events still carry the command id as
    /// their causation and command id. The default records every command.
    #[must_use]
    pub fn without_message_log(mut self) -> Self {
        self.log_commands = false;
        self
    }

    /// Snapshots the aggregate `id` now, whatever the policy says: before a long-lived
    /// aggregate's next burst of commands, say, or after an upgrade that changed
    /// [`Aggregate::SNAPSHOT_VERSION`] (older snapshots are ignored until a new one is taken).
    ///
    /// Returns the version snapshotted, or `None` if the aggregate does not exist. A repository
    /// loads from snapshots only if it was given [`Repository::with_snapshots`].
    ///
    /// # Errors
    ///
    /// [`SnapshotError`] if the aggregate cannot be loaded, its state does not serialize, or
    /// the store fails.
    pub async fn snapshot_now(&self, id: &A::Id) -> Result<Option<Version>, SnapshotError>
    where
        A: Serialize,
    {
        let loaded = self.load(id).await?;
        let Some(state) = loaded.state else {
            return Ok(None);
        };
        let snapshot = Snapshot {
            stream: loaded.stream,
            version: loaded.version,
            schema_version: A::SNAPSHOT_VERSION,
            state: Json::encode(&state).map_err(SnapshotError::Encode)?,
            taken_at: self.clock.now(),
        };
        self.storage.save_snapshot(snapshot).await?;
        Ok(Some(loaded.version))
    }

    /// The storage this repository works on.
    #[must_use]
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The upcaster chain this repository decodes with.
    #[must_use]
    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    /// Loads the aggregate `id`: its latest usable snapshot, then the events after it.
    ///
    /// # Errors
    ///
    /// [`LoadError`] if the id is invalid, the store fails, or an event cannot be decoded or
    /// applied.
    pub async fn load(&self, id: &A::Id) -> Result<Loaded<A>, LoadError> {
        let stream = A::stream_id(id)?;
        self.load_stream(stream).await
    }

    async fn load_stream(&self, stream: StreamId) -> Result<Loaded<A>, LoadError> {
        let span = tracing::debug_span!("cqrs.load", stream = %stream, snapshot = field::Empty, events = field::Empty);
        let called = Instant::now();
        let loaded = async move {
            let (state, version) = self.load_snapshot(&stream).await?;
            let read_span = tracing::debug_span!("cqrs.store.read_stream", stream = %stream, from = version.next().get());
            let mut fold = Fold::<A>::new(stream, state, version);
            let from = version.next();
            let upcasters = &self.upcasters;
            let stream = fold.stream.clone();
            let visit: &mut (dyn for<'e> FnMut(EventView<'e>) -> ControlFlow<()> + Send) =
                &mut |event| fold.event(upcasters, event);
            if upcasters.needs_metadata() {
                // Whole events: a store's fold read may leave the metadata out.
                crate::store::visit_by_reading(&*self.storage, &stream, from, visit)
                    .instrument(read_span)
                    .await?;
            } else {
                self.storage
                    .visit_stream(&stream, from, visit)
                    .instrument(read_span)
                    .await?;
            }
            tracing::Span::current().record("events", fold.version.get() - version.get());
            let (stream, state, version) = fold.finish()?;
            Ok(Loaded { stream, state, version })
        }
        .instrument(span)
        .await;
        crate::metric::store_call("load", called.elapsed());
        loaded
    }

    /// The state and version of the aggregate's latest usable snapshot (nothing and zero
    /// without one).
    async fn load_snapshot(&self, stream: &StreamId) -> Result<(Option<A>, Version), LoadError> {
        let Some(codec) = &self.snapshots else {
            return Ok((None, Version::ZERO));
        };
        let span = tracing::debug_span!("cqrs.store.load_snapshot", stream = %stream);
        let called = Instant::now();
        let snapshot = self
            .storage
            .load_snapshot(stream, A::SNAPSHOT_VERSION)
            .instrument(span)
            .await;
        crate::metric::store_call("load_snapshot", called.elapsed());
        let snapshot = snapshot?;
        match snapshot {
            Some(snapshot) if snapshot.schema_version == A::SNAPSHOT_VERSION => {
                match (codec.decode)(&snapshot.state) {
                    Ok(state) => {
                        tracing::Span::current().record("snapshot", snapshot.version.get());
                        Ok((Some(state), snapshot.version))
                    }
                    Err(err) => {
                        tracing::warn!(%stream, error = %crate::ErrorChain(&err), "ignoring a snapshot that does not decode");
                        Ok((None, Version::ZERO))
                    }
                }
            }
            _ => Ok((None, Version::ZERO)),
        }
    }

    /// Handles `command` for the aggregate `id` with a fresh command id.
    ///
    /// # Errors
    ///
    /// As [`Repository::handle_with`].
    pub async fn handle(
        &self,
        id: &A::Id,
        command: A::Command,
    ) -> Result<Handled<A>, CommandError<A::Error>> {
        self.handle_with(id, command, CommandContext::new()).await
    }

    /// Handles `command` for the aggregate `id` with the ids in `context`.
    ///
    /// # Errors
    ///
    /// [`CommandError::Rejected`] with the domain error (also when the command id was rejected
    /// before), [`CommandError::Conflict`] if every attempt conflicted, and the load, encoding
    /// and store errors.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a dropped call may or may not have committed. Call again with the same
    /// command id to get the outcome without doing it twice.
    pub async fn handle_with(
        &self,
        id: &A::Id,
        command: A::Command,
        context: CommandContext,
    ) -> Result<Handled<A>, CommandError<A::Error>> {
        let stream = A::stream_id(id).map_err(LoadError::from)?;
        let (command_type, payload) = encode_message(&command).map_err(CommandError::Encode)?;
        let span = tracing::info_span!(
            "cqrs.command",
            aggregate = A::TYPE,
            stream = %stream,
            command = command_type,
            command_id = %context.command_id,
            version = field::Empty,
            events = field::Empty,
            attempts = field::Empty,
            outcome = field::Empty,
            elapsed_us = field::Empty,
        );
        let mut context = context;
        crate::trace::command(&span, &mut context.headers);
        let started = Instant::now();
        let result = self
            .handle_inner(id, stream, command, command_type, payload, context)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(h) if h.replayed => "replayed",
            Ok(_) => "accepted",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Conflict { .. }) => "conflict",
            Err(_) => "failed",
        };
        let elapsed = started.elapsed();
        span.record("outcome", outcome);
        span.record(
            "elapsed_us",
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        );
        crate::metric::command(A::TYPE, command_type, outcome, elapsed);
        result
    }

    async fn handle_inner(
        &self,
        id: &A::Id,
        stream: StreamId,
        command: A::Command,
        command_type: &'static str,
        payload: Json,
        context: CommandContext,
    ) -> Result<Handled<A>, CommandError<A::Error>> {
        // A command id handled before is found by the commit itself (its record's id is unique
        // in the store), which then replays the recorded result: no lookup on the hot path.
        let mut first = Some(command);
        let mut attempt = 0;
        loop {
            attempt += 1;
            tracing::Span::current().record("attempts", attempt);
            // A cached state stands in for the snapshot on the first attempt; a retry follows a
            // conflict, so it starts afresh.
            let cached = match &self.cache {
                Some(cache) if attempt == 1 => cache.take(&stream),
                _ => None,
            };
            let (base, base_version) = match cached {
                Some((state, version)) => (Some(state), version),
                None => self.load_snapshot(&stream).await?,
            };
            // Decide again from the stored payload on retries, so commands need not be Clone.
            let command = match first.take() {
                Some(c) => c,
                None => {
                    decode_message(command_type, payload.as_str()).map_err(CommandError::Encode)?
                }
            };
            let slot = Arc::new(Mutex::new(None));
            // The store may run this inside its write path (SQLite does, on its writer thread):
            // then the read and the commit are one atomic step and cannot conflict.
            let decide: Decide = Box::new(Attempt {
                id: id.clone(),
                fold: Fold::new(stream.clone(), base, base_version),
                command,
                command_type,
                payload: payload.clone(),
                context: context.clone(),
                now: self.clock.now(),
                upcasters: self.upcasters.clone(),
                log_command: self.log_commands,
                outcome: Arc::clone(&slot),
            });
            let span = tracing::debug_span!("cqrs.store.read_then_commit", stream = %stream, from = base_version.next().get());
            let called = Instant::now();
            let result = if self.upcasters.needs_metadata() {
                // Whole events, as a load then: a store's own read-then-commit may fold
                // without the metadata the upcasters need.
                crate::store::read_whole_then_commit(
                    &*self.storage,
                    &stream,
                    base_version.next(),
                    decide,
                )
                .instrument(span)
                .await
            } else {
                self.storage
                    .read_then_commit(&stream, base_version.next(), decide)
                    .instrument(span)
                    .await
            };
            crate::metric::store_call("commit", called.elapsed());
            if matches!(result, Err(StoreError::Conflict { .. })) {
                crate::metric::conflict(A::TYPE);
            }
            let outcome = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            match (result, outcome) {
                (Ok(Some(appended)), Some(Ok(decided))) => {
                    tracing::Span::current().record("version", appended.version.get());
                    tracing::Span::current().record("events", decided.events.len());
                    if let Some(rejection) = decided.rejection {
                        if let (Some(cache), Some(state)) = (&self.cache, decided.state) {
                            cache.put(stream, state, decided.version);
                        }
                        return Err(CommandError::Rejected(rejection));
                    }
                    let snapshot = self
                        .snapshots
                        .as_ref()
                        .filter(|codec| codec.policy.is_due(decided.version, appended.version));
                    if snapshot.is_some() || self.cache.is_some() {
                        let state = evolve(&stream, decided.state, &decided.events);
                        if let (Some(codec), Some(state)) = (snapshot, &state) {
                            self.save_snapshot(codec, &stream, state, appended.version)
                                .await;
                        }
                        if let (Some(cache), Some(state)) = (&self.cache, state) {
                            cache.put(stream.clone(), state, appended.version);
                        }
                    }
                    return Ok(Handled {
                        stream,
                        version: appended.version,
                        position: appended.position,
                        events: decided.events,
                        command_id: context.command_id,
                        replayed: false,
                    });
                }
                (_, Some(Err(err))) => return Err(err),
                (Err(StoreError::Conflict { .. }), _) if attempt < self.max_attempts => {
                    // Let the writer that won go on before deciding again.
                    tokio::task::yield_now().await;
                }
                (Err(StoreError::Conflict { .. }), _) => {
                    return Err(CommandError::Conflict {
                        stream,
                        attempts: attempt,
                    });
                }
                (Err(StoreError::DuplicateCommand { .. }), _) => {
                    return self
                        .replay_from_store(&stream, command_type, &context)
                        .await;
                }
                (Err(err), _) => return Err(err.into()),
                (Ok(_), _) => {
                    return Err(CommandError::Store(StoreError::Backend(
                        "the store did not run the decision it was given".into(),
                    )));
                }
            }
        }
    }

    async fn save_snapshot(
        &self,
        codec: &SnapshotCodec<A>,
        stream: &StreamId,
        state: &A,
        version: Version,
    ) {
        let encoded = match (codec.encode)(state) {
            Ok(json) => json,
            Err(err) => {
                tracing::warn!(%stream, error = %crate::ErrorChain(&err), "not snapshotting: the state does not serialize");
                return;
            }
        };
        let snapshot = Snapshot {
            stream: stream.clone(),
            version,
            schema_version: A::SNAPSHOT_VERSION,
            state: encoded,
            taken_at: self.clock.now(),
        };
        // The command has committed; a failed snapshot only costs a longer load later.
        if let Err(err) = self.storage.save_snapshot(snapshot).await {
            tracing::warn!(%stream, error = %crate::ErrorChain(&err), "saving a snapshot failed");
        }
    }

    async fn replay_from_store(
        &self,
        stream: &StreamId,
        command_type: &str,
        context: &CommandContext,
    ) -> Result<Handled<A>, CommandError<A::Error>> {
        match self.storage.find_command(context.command_id).await? {
            Some(record) => self.replay(stream, command_type, record).await,
            None => Err(CommandError::Store(StoreError::Corrupt {
                position: None,
                what: format!(
                    "command {} was reported handled but has no record",
                    context.command_id
                ),
            })),
        }
    }

    /// Rebuilds the result of a command handled before from its record.
    async fn replay(
        &self,
        stream: &StreamId,
        command_type: &str,
        record: CommandRecord,
    ) -> Result<Handled<A>, CommandError<A::Error>> {
        if record.target != *stream || record.command_type != command_type {
            return Err(CommandError::CommandIdReused {
                command_id: record.command_id,
                target: record.target,
                command_type: record.command_type,
            });
        }
        match record.outcome {
            Outcome::Accepted {
                version,
                events: count,
            } => {
                let first = Version::new(version.get().saturating_sub(count).saturating_add(1));
                let recorded = if count == 0 {
                    Vec::new()
                } else {
                    self.storage.read_stream(stream, first).await?
                };
                let mut events = Vec::with_capacity(recorded.len());
                let mut position = None;
                for r in recorded.iter().take_while(|r| r.version <= version) {
                    events.extend(
                        self.upcasters
                            .decode::<A::Event>(r)
                            .map_err(LoadError::from)?,
                    );
                    position = Some(r.position);
                }
                Ok(Handled {
                    stream: stream.clone(),
                    version,
                    position,
                    events,
                    command_id: record.command_id,
                    replayed: true,
                })
            }
            Outcome::Rejected { error, .. } => match error.decode::<A::Error>() {
                Ok(rejection) => Err(CommandError::Rejected(rejection)),
                Err(e) => Err(CommandError::Encode(MessageError::Payload(e))),
            },
        }
    }
}

/// The state after `events`, just decided and committed, are applied to `state`; `None` if
/// there is none or an event does not apply (then nothing is snapshotted or cached).
fn evolve<A: Aggregate>(stream: &StreamId, mut state: Option<A>, events: &[A::Event]) -> Option<A> {
    for event in events {
        match A::apply(state, event) {
            Ok(s) => state = Some(s),
            Err(err) => {
                tracing::warn!(%stream, error = %crate::ErrorChain(&err), "an event just decided does not apply: neither snapshotted nor cached");
                return None;
            }
        }
    }
    state
}

/// The states of recently used aggregates, bounded: two generations, each holding at most
/// half the capacity. New and used entries go to the young one; when it is full it becomes
/// the old one, and the old one is dropped. Every operation is O(1), and an aggregate used
/// within the last `capacity / 2` puts is never evicted.
struct StateCache<A> {
    capacity: usize,
    generations: Mutex<Generations<A>>,
}

struct Generations<A> {
    young: HashMap<StreamId, (A, Version)>,
    old: HashMap<StreamId, (A, Version)>,
}

impl<A> StateCache<A> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            generations: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<A>> {
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes `stream`'s state out, if cached: a command works on it and puts it back.
    fn take(&self, stream: &StreamId) -> Option<(A, Version)> {
        let mut g = self.lock();
        g.young.remove(stream).or_else(|| g.old.remove(stream))
    }

    /// Caches `stream`'s state at `version`.
    fn put(&self, stream: StreamId, state: A, version: Version) {
        let mut g = self.lock();
        if g.young.len() >= self.capacity / 2 && !g.young.contains_key(&stream) {
            g.old = std::mem::take(&mut g.young);
        }
        g.old.remove(&stream);
        g.young.insert(stream, (state, version));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }
}

/// Folds stored events onto a state as they are read, checking that versions follow each
/// other; the first failure stops the fold and is kept for [`Fold::finish`].
struct Fold<A> {
    stream: StreamId,
    state: Option<A>,
    version: Version,
    failed: Option<LoadError>,
}

impl<A: Aggregate> Fold<A> {
    fn new(stream: StreamId, state: Option<A>, version: Version) -> Self {
        Self {
            stream,
            state,
            version,
            failed: None,
        }
    }

    /// Applies the stored `event`.
    fn event(&mut self, upcasters: &Upcasters, event: EventView<'_>) -> ControlFlow<()> {
        match self.apply(upcasters, event) {
            Ok(()) => ControlFlow::Continue(()),
            Err(err) => {
                self.failed = Some(err);
                ControlFlow::Break(())
            }
        }
    }

    fn apply(&mut self, upcasters: &Upcasters, event: EventView<'_>) -> Result<(), LoadError> {
        if event.version != self.version.next() {
            return Err(LoadError::Store(StoreError::Corrupt {
                position: Some(event.position),
                what: format!(
                    "stream {} jumps from version {} to {}",
                    self.stream, self.version, event.version
                ),
            }));
        }
        for decoded in upcasters.decode_view::<A::Event>(event)? {
            let state = self.state.take();
            self.state = Some(
                A::apply(state, &decoded).map_err(|source| LoadError::History {
                    stream: self.stream.clone(),
                    version: event.version,
                    source,
                })?,
            );
        }
        self.version = event.version;
        Ok(())
    }

    /// The stream, the state and its version, or the failure that stopped the fold.
    fn finish(self) -> Result<(StreamId, Option<A>, Version), LoadError> {
        match self.failed {
            Some(err) => Err(err),
            None => Ok((self.stream, self.state, self.version)),
        }
    }
}

/// Everything one attempt at a command needs to decide, owned, so that the store may run it
/// on another thread.
struct Attempt<A: Aggregate> {
    id: A::Id,
    /// The fold from the base state (a snapshot, a cached state or nothing) over the events
    /// the store hands over.
    fold: Fold<A>,
    command: A::Command,
    command_type: &'static str,
    payload: Json,
    context: CommandContext,
    now: chrono::DateTime<chrono::Utc>,
    upcasters: Upcasters,
    /// Whether the commit records the command in the message log.
    log_command: bool,
    /// Where the outcome goes, for the caller.
    outcome: Arc<Mutex<Option<Outcomes<A>>>>,
}

/// What an attempt decided, or why it could not.
type Outcomes<A> = Result<Decided<A>, CommandError<<A as Aggregate>::Error>>;

impl<A: Aggregate> StreamDecision for Attempt<A> {
    fn event(&mut self, event: EventView<'_>) -> ControlFlow<()> {
        self.fold.event(&self.upcasters, event)
    }

    fn decide(self: Box<Self>) -> Option<Commit> {
        let slot = Arc::clone(&self.outcome);
        let (commit, outcome) = match self.decide_now() {
            Ok((commit, decided)) => (Some(commit), Ok(decided)),
            Err(err) => (None, Err(err)),
        };
        *slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(outcome);
        commit
    }
}

/// What a decision made, for the caller.
struct Decided<A: Aggregate> {
    /// The state the command was decided on, and its version.
    state: Option<A>,
    version: Version,
    /// The events it caused.
    events: Vec<A::Event>,
    /// The rejection, if it was rejected (the commit then only records it).
    rejection: Option<A::Error>,
}

impl<A: Aggregate> Attempt<A> {
    /// Decides on the folded state and builds the commit: the events with their lineage and
    /// the command's record, at the version decided on.
    fn decide_now(self) -> Result<(Commit, Decided<A>), CommandError<A::Error>> {
        let (stream, state, version) = self.fold.finish()?;
        let correlation_id = self.context.correlation_id();
        let record = |outcome| CommandRecord {
            command_id: self.context.command_id,
            command_type: self.command_type.to_owned(),
            target: stream.clone(),
            payload: self.payload.clone(),
            correlation_id: Some(correlation_id),
            causation_id: self.context.causation_id,
            recorded_at: self.now,
            headers: self.context.headers.clone(),
            outcome,
        };
        // Committing at the loaded version makes the decision (a rejection too) stand only if it
        // was made on the latest state.
        let expected = ExpectedVersion::Exact(version);
        let log_command = self.log_command;
        match A::handle(state.as_ref(), &self.id, self.command) {
            Err(rejection) => {
                let outcome = Outcome::Rejected {
                    error: Json::encode(&rejection)
                        .map_err(|e| CommandError::Encode(MessageError::Payload(e)))?,
                    message: rejection.to_string(),
                };
                let commit = with_record(
                    Commit::new(stream.clone(), expected, Vec::new()),
                    log_command.then(|| record(outcome)),
                );
                Ok((
                    commit,
                    Decided {
                        state,
                        version,
                        events: Vec::new(),
                        rejection: Some(rejection),
                    },
                ))
            }
            Ok(decided) => {
                let mut new_events = Vec::with_capacity(decided.len());
                for event in &decided {
                    let (event_type, payload) =
                        encode_message(event).map_err(CommandError::Encode)?;
                    new_events.push(NewEvent {
                        event_type: event_type.to_owned(),
                        schema_version: <A::Event as crate::DomainEvent>::schema_version(
                            event_type,
                        ),
                        payload,
                        metadata: Metadata {
                            event_id: Uuid::now_v7(),
                            correlation_id: Some(correlation_id),
                            causation_id: Some(self.context.command_id),
                            command_id: Some(self.context.command_id),
                            recorded_at: self.now,
                            headers: self.context.headers.clone(),
                        },
                        tags: {
                            let mut tags = crate::DomainEvent::tags(event);
                            crate::dcb::normalize(&mut tags);
                            tags
                        },
                    });
                }
                let count = decided.len() as u64;
                let outcome = Outcome::Accepted {
                    version: version.add(count),
                    events: count,
                };
                let commit = with_record(
                    Commit::new(stream.clone(), expected, new_events),
                    log_command.then(|| record(outcome)),
                );
                Ok((
                    commit,
                    Decided {
                        state,
                        version,
                        events: decided,
                        rejection: None,
                    },
                ))
            }
        }
    }
}

/// `commit` with the command's `record`, if the repository keeps one.
fn with_record(commit: Commit, record: Option<CommandRecord>) -> Commit {
    match record {
        Some(record) => commit.with_command(record),
        None => commit,
    }
}

/// Why an aggregate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The aggregate id does not make a valid stream id.
    #[error("invalid aggregate id")]
    InvalidId(#[from] InvalidStreamId),
    /// A stored event could not be decoded (it names its position).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A stored event does not apply to the state before it: the history is broken.
    #[error("event {version} of stream {stream} does not apply")]
    History {
        /// The stream.
        stream: StreamId,
        /// The event's version.
        version: Version,
        /// What `apply` said.
        #[source]
        source: ApplyError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why [`Repository::snapshot_now`] took no snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The aggregate could not be loaded.
    #[error("cannot load the aggregate")]
    Load(#[from] LoadError),
    /// The state does not serialize.
    #[error("the state does not serialize")]
    Encode(#[source] serde_json::Error),
    /// The store failed to save it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a command was not handled.
///
/// A rejection shows the domain's reason; the other failures show their own part and keep
/// their cause as the [source](std::error::Error::source) (print them with
/// [`ErrorChain`](crate::ErrorChain)).
///
/// ```
/// use cqrs_core::CommandError;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("only 1 seat left")]
/// struct NotEnough;
///
/// let err = CommandError::Rejected(NotEnough);
/// assert_eq!(err.to_string(), "command rejected: only 1 seat left");
/// assert!(err.rejection().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate rejected the command. The reason is the domain's answer, not a failure
    /// underneath, so it is shown here rather than as a source.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// Every attempt lost a race with another writer.
    #[error("stream {stream} kept changing: gave up after {attempts} attempts")]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The command id was used before for another command or another aggregate.
    #[error("command id {command_id} was already used for {command_type} on {target}")]
    CommandIdReused {
        /// The command id.
        command_id: Uuid,
        /// The stream it was used for.
        target: StreamId,
        /// The type of the command it was used for.
        command_type: String,
    },
    /// The aggregate could not be loaded.
    #[error("cannot load the aggregate")]
    Load(#[from] LoadError),
    /// A command, event or error did not (de)serialize.
    #[error("cannot encode a message")]
    Encode(#[source] MessageError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> CommandError<E> {
    /// The domain error, if the aggregate rejected the command.
    #[must_use]
    pub fn rejection(&self) -> Option<&E> {
        match self {
            Self::Rejected(e) => Some(e),
            _ => None,
        }
    }

    /// The domain error, if the aggregate rejected the command.
    ///
    /// # Errors
    ///
    /// Gives `self` back if it is not a rejection.
    pub fn into_rejection(self) -> Result<E, Self> {
        match self {
            Self::Rejected(e) => Ok(e),
            other => Err(other),
        }
    }

    /// Whether the aggregate rejected the command.
    #[must_use]
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }

    /// Whether every attempt conflicted.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n: usize) -> StreamId {
        StreamId::new(format!("s-{n}")).unwrap()
    }

    #[test]
    fn the_state_cache_is_bounded_and_keeps_the_recently_used() {
        let cache = StateCache::new(4);
        for n in 0..100 {
            cache.put(stream(n), n, Version::new(1));
            assert!(cache.len() <= 4);
            // Touching the first one keeps it.
            let (state, version) = cache.take(&stream(0)).expect("kept while used");
            cache.put(stream(0), state, version);
        }
        assert_eq!(cache.take(&stream(99)), Some((99, Version::new(1))));
        assert_eq!(cache.take(&stream(99)), None, "taken out");
        assert_eq!(cache.take(&stream(3)), None, "evicted");
    }
}
