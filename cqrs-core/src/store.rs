//! The storage contracts, and the toolkit for writing a store.
//!
//! **Applications** need only the contracts ([`EventStore`], [`Storage`], ...) and the types
//! that cross them; the crate root re-exports those. **Store authors** also find here what
//! every store needs and none should copy: subscriptions over a store's own reads
//! ([`subscription`], [`CommitNotifier`]), the limits every store enforces
//! ([`Commit::validate`], [`ScheduledCommand::validate`], [`check_type_name`], [`check_headers`],
//! typed as [`Invalid`]), checked conversions to and from a database's signed integers
//! ([`to_i64`], [`from_i64`]), timestamps cut to the precision every store keeps
//! ([`truncate_to_micros`]), a page of the message log put in order ([`log_page`]), and
//! [`visit_by_reading`]. A store proves itself with the
//! [conformance suite](crate::testing::conformance), group by group for the traits it
//! implements.

pub(crate) mod memory;

pub use crate::clock::truncate_to_micros;
pub use crate::projection::DurableProjection;
pub use crate::subscription::{CommitNotifier, SubscriptionOptions, subscription};

use std::error::Error as StdError;
use std::ops::ControlFlow;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::command::{CommandEnvelope, CommandRecord};
use crate::dcb::DcbStore;
use crate::event::{
    EventFilter, EventView, Json, MAX_TYPE_NAME_LEN, NewEvent, RecordedEvent, StreamId,
};
use crate::version::{ExpectedVersion, Position, Version};

/// A live stream of events from the global log, as [`EventReader::subscribe`] returns it.
pub type EventStream = BoxStream<'static, Result<RecordedEvent, StoreError>>;

/// A live stream of read batches, as [`EventReader::subscribe_batches`] returns it.
pub type BatchStream = BoxStream<'static, Result<ReadBatch, StoreError>>;

/// Reads events: by stream, from the global log, and live.
///
/// Projections need only this role, so they take `Arc<dyn EventReader>`.
///
/// # Contract
///
/// - `read_stream` returns the stream's events with version ≥ `from`, in version order;
///   versions start at 1 and have no gaps (conformance: `read_stream_from_version`).
/// - `read_all` returns up to `limit` events with position ≥ `from`, in position order
///   (conformance: `read_all_pages_in_global_order`).
/// - **Gap safety:** once any reader has seen position *p*, no event with a lower position
///   becomes visible later (conformance: `live_subscriber_sees_every_event_once_in_order`).
///   To keep it, a store may hold a committed event back from the global log (`read_all`,
///   `read_filtered`, `head`, subscriptions) until every transaction that could still commit
///   below it has ended: PostgreSQL does, single-writer stores need not. `read_stream` always
///   sees a committed event at once.
/// - `subscribe` yields every matching event with position ≥ `from`, in position order, then
///   follows new commits, woken by the store rather than by polling sleeps (conformance:
///   `subscription_catches_up_then_follows_live`).
#[async_trait]
pub trait EventReader: Send + Sync + 'static {
    /// Reads `stream` from version `from` on.
    ///
    /// A stream that does not exist reads as empty.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] or [`StoreError::Corrupt`] if the store fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads `stream` from version `from` on, in version order, handing each event to `visit`
    /// as it is read, without its metadata, until `visit` breaks or the stream ends: how the
    /// repository folds an aggregate.
    ///
    /// The default reads with [`EventReader::read_stream`]; a store overrides it to decode
    /// straight from its rows, copying nothing the fold does not read.
    ///
    /// # Errors
    ///
    /// As [`EventReader::read_stream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        visit: &mut (dyn for<'e> FnMut(EventView<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        visit_by_reading(self, stream, from, visit).await
    }

    /// Reads up to `limit` events of the global log from position `from` on.
    ///
    /// # Errors
    ///
    /// As [`EventReader::read_stream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads events of the global log that pass `filter`, scanning from `from` on, and says
    /// where to continue.
    ///
    /// `limit` bounds the events returned; a store may also bound the rows it scans, so a
    /// batch can hold fewer events than `limit`, or none, without being at the end. Every
    /// batch either advances ([`ReadBatch::next`] > `from`) or is at the end
    /// ([`ReadBatch::end`]), so a reader never spins in place. `next` never passes an event
    /// that is not yet visible to readers: that is what keeps filtered readers gap-safe.
    ///
    /// Stores that can filter in their queries override this; the default scans
    /// [`EventReader::read_all`] pages of `limit` events.
    ///
    /// # Errors
    ///
    /// As [`EventReader::read_stream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    async fn read_filtered(
        &self,
        from: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadBatch, StoreError> {
        let limit = limit.max(1);
        let page = self.read_all(from, limit).await?;
        let end = page.len() < limit;
        let next = page.last().map_or(from, |e| e.position.next());
        let events = if filter.is_all() {
            page
        } else {
            page.into_iter().filter(|e| filter.matches(e)).collect()
        };
        Ok(ReadBatch { events, next, end })
    }

    /// The position of the newest event a reader can see ([`Position::ZERO`] when empty).
    ///
    /// # Errors
    ///
    /// As [`EventReader::read_stream`].
    async fn head(&self) -> Result<Position, StoreError>;

    /// Reads up to `limit` events of `stream` from version `from` on: a page of a stream
    /// too long to read at once (in a tool that browses the store, say).
    ///
    /// The default reads the whole rest of the stream with [`EventReader::read_stream`] and
    /// keeps the page; stores override it to read the page alone.
    ///
    /// # Errors
    ///
    /// As [`EventReader::read_stream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    async fn read_stream_page(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.read_stream(stream, from).await?;
        events.truncate(limit);
        Ok(events)
    }

    /// Lists up to `limit` streams whose names start with `prefix`, in the byte order of
    /// their names, strictly after `after`: for tools that browse a store. A category's
    /// streams are those that start with `"{category}-"`; [`list_categories`] lists the
    /// categories.
    ///
    /// The default scans the whole log (every event, for every page); stores override it
    /// with a seek in their stream index per stream listed.
    ///
    /// # Errors
    ///
    /// As [`EventReader::read_stream`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    ///
    /// # Examples
    ///
    /// ```
    /// # use cqrs_core::{EventReader, EventStore, ExpectedVersion, InMemoryEventStore, Json, NewEvent};
    /// # tokio_test::block_on(async {
    /// let store = InMemoryEventStore::new();
    /// for stream in ["order-2", "seats-1", "order-1", "order-1"] {
    ///     store.append(&stream.parse()?, ExpectedVersion::Any, vec![NewEvent::new("e", Json::null())]).await?;
    /// }
    /// let orders = store.list_streams("order-", None, 10).await?;
    /// let listed: Vec<_> = orders.iter().map(|s| (s.stream.as_str(), s.version.get())).collect();
    /// assert_eq!(listed, [("order-1", 2), ("order-2", 1)]);
    /// let next = store.list_streams("order-", Some("order-1"), 10).await?;
    /// assert_eq!(next[0].stream.as_str(), "order-2");
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamSummary>, StoreError> {
        let mut streams: std::collections::BTreeMap<String, StreamSummary> =
            std::collections::BTreeMap::new();
        let mut from = Position::START;
        loop {
            let page = self.read_all(from, 1_000).await?;
            let Some(last) = page.last() else { break };
            from = last.position.next();
            for event in page {
                let name = event.stream.as_str();
                if !name.starts_with(prefix) || after.is_some_and(|after| name <= after) {
                    continue;
                }
                streams.insert(name.to_owned(), StreamSummary::of_last(&event));
            }
        }
        Ok(streams.into_values().take(limit).collect())
    }

    /// The position of the newest event committed so far, whether or not readers can see it
    /// yet. A store that delivers events only once every older transaction has ended (so
    /// that no reader skips a late commit) may be ahead of [`head`](EventReader::head) here
    /// for a moment; everywhere else the two are equal (the default).
    ///
    /// Waiting until `head` reaches it is how a caller knows that every event committed
    /// before it asked is deliverable: to settle a system in a test, say.
    ///
    /// # Errors
    ///
    /// As [`EventReader::read_stream`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use cqrs_core::{EventReader, EventStore, ExpectedVersion, InMemoryEventStore, Json, NewEvent};
    /// # tokio_test::block_on(async {
    /// let store = InMemoryEventStore::new();
    /// store.append(&"seat-1".parse()?, ExpectedVersion::Any, vec![NewEvent::new("seat.added", Json::null())]).await?;
    /// assert_eq!(store.last_committed().await?, store.head().await?);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    async fn last_committed(&self) -> Result<Position, StoreError> {
        self.head().await
    }

    /// Streams every event that passes `filter` from position `from` on, in batches: first
    /// those already stored, then new ones as they commit.
    ///
    /// A batch may hold no events when only filtered-out events went by; its
    /// [`ReadBatch::next`] still advances, and [`ReadBatch::end`] tells that the subscription
    /// has caught up with what was visible. Stores build this with
    /// [`subscription`]. The stream ends only when the store is closed; an
    /// error item is followed by the end.
    fn subscribe_batches(&self, from: Position, filter: EventFilter) -> BatchStream;

    /// Streams every event that passes `filter` from position `from` on: first those already
    /// stored, then new ones as they commit.
    ///
    /// # Examples
    ///
    /// ```
    /// use cqrs_core::{EventFilter, EventReader, EventStore, ExpectedVersion, InMemoryEventStore, Json, NewEvent, Position, StreamId};
    /// use futures::StreamExt;
    ///
    /// # tokio_test::block_on(async {
    /// let store = InMemoryEventStore::new();
    /// let mut live = store.subscribe(Position::START, EventFilter::all().with_categories(["seats"]));
    /// let stream = StreamId::new("seats-1")?;
    /// store.append(&stream, ExpectedVersion::Any, vec![NewEvent::new("seats.added", Json::parse("{}")?)]).await?;
    /// let first = live.next().await.unwrap()?;
    /// assert_eq!(first.event_type, "seats.added");
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    fn subscribe(&self, from: Position, filter: EventFilter) -> EventStream {
        self.subscribe_batches(from, filter)
            .flat_map(|batch| {
                let items: Vec<Result<RecordedEvent, StoreError>> = match batch {
                    Ok(batch) => batch.events.into_iter().map(Ok).collect(),
                    Err(err) => vec![Err(err)],
                };
                futures::stream::iter(items)
            })
            .boxed()
    }
}

/// Appends events atomically with optimistic concurrency.
///
/// Usable as `Arc<dyn EventStore>`, so that an application picks its store at run time:
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{EventStore, InMemoryEventStore, Storage};
///
/// let events: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
/// let everything: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
/// let upcast: Arc<dyn EventStore> = everything; // a `Storage` is an `EventStore`
/// # drop((events, upcast));
/// ```
///
/// # Contract
///
/// - An append is all or nothing (conformance: `conflicting_batch_writes_nothing`).
/// - The expectation is checked atomically with the write: among concurrent appends at the same
///   expected version, exactly one wins (conformance: `concurrent_writers_on_one_stream`).
/// - A stale expectation fails with [`StoreError::Conflict`] carrying the actual version.
/// - A commit carrying a [`CommandRecord`] whose id the store already holds writes nothing and
///   fails with [`StoreError::DuplicateCommand`], checked *before* the expected version, so a
///   redelivered command is recognised even when its stream has moved on (conformance:
///   `duplicate_command_id_writes_nothing`). Command ids are one namespace across commits and
///   [`ProcessStore::save_process`].
/// - A commit with no events still checks its expectation atomically with the other writes to
///   the stream (it is how a rejection is recorded "at the version it was decided on").
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event store",
    note = "stores implement `cqrs_core::EventStore` and run `cqrs_core::conformance_suite!` to prove it"
)]
#[async_trait]
pub trait EventStore: EventReader {
    /// Commits events and, optionally, the record of the command that caused them.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if the stream is not at the expected version,
    /// [`StoreError::DuplicateCommand`] if the command id is already recorded,
    /// [`StoreError::Invalid`] if the commit breaks a limit, [`StoreError::Backend`] if the
    /// store fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: if the future is dropped, the commit may or may not have happened.
    /// Retry with the same command id to find out.
    async fn commit(&self, commit: Commit) -> Result<Appended, StoreError>;

    /// Reads `stream` from version `from`, hands the events to `decide` one by one, and commits
    /// what it then decides: how a command is handled.
    ///
    /// The default reads, decides and commits as three steps, and the commit's expected version
    /// guards against a writer that came in between (a [`StoreError::Conflict`] then asks the
    /// caller to try again). A store with a single writer overrides it to run all three in its
    /// write path, atomically, so that commands on one stream never conflict; `decide` must
    /// then be quick and must not block, as it holds up other writes.
    ///
    /// Returns `None` if `decide` returned `None` (nothing was written).
    ///
    /// # Errors
    ///
    /// As [`EventStore::commit`], and the read's errors.
    ///
    /// # Cancel safety
    ///
    /// As [`EventStore::commit`].
    async fn read_then_commit(
        &self,
        stream: &StreamId,
        from: Version,
        decide: Decide,
    ) -> Result<Option<Appended>, StoreError> {
        let mut decide = decide;
        self.visit_stream(stream, from, &mut |event| decide.event(event))
            .await?;
        match decide.decide() {
            Some(commit) => self.commit(commit).await.map(Some),
            None => Ok(None),
        }
    }

    /// Appends `events` to `stream` if it is at `expected`.
    ///
    /// # Examples
    ///
    /// ```
    /// use cqrs_core::{EventReader, EventStore, ExpectedVersion, InMemoryEventStore, Json, NewEvent, StreamId, Version};
    ///
    /// # tokio_test::block_on(async {
    /// let store = InMemoryEventStore::new();
    /// let stream = StreamId::new("seats-1")?;
    /// let added = NewEvent::new("seats.added", Json::parse(r#"{"quantity":10}"#)?);
    /// let appended = store.append(&stream, ExpectedVersion::NoStream, vec![added.clone()]).await?;
    /// assert_eq!(appended.version, Version::new(1));
    ///
    /// // A second writer that also expected an empty stream loses.
    /// let err = store.append(&stream, ExpectedVersion::NoStream, vec![added]).await.unwrap_err();
    /// assert!(err.is_conflict());
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`EventStore::commit`].
    ///
    /// # Cancel safety
    ///
    /// As [`EventStore::commit`].
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.commit(Commit::new(stream.clone(), expected, events))
            .await
    }

    /// Appends `commits` in the order given, so that their events' global positions follow
    /// the list: for bulk copies such as a [store migration](crate::migrate). Each commit is
    /// checked as if alone, against its stream as the earlier commits left it.
    ///
    /// The default commits one by one and stops at the first error, leaving the earlier
    /// commits appended. A store that can do better writes them in one transaction: all or
    /// none (the SQLite store does).
    ///
    /// # Errors
    ///
    /// The first commit's error, as [`EventStore::commit`].
    ///
    /// # Cancel safety
    ///
    /// As [`EventStore::commit`], for each commit.
    async fn commit_in_order(&self, commits: Vec<Commit>) -> Result<Vec<Appended>, StoreError> {
        let mut appended = Vec::with_capacity(commits.len());
        for commit in commits {
            appended.push(self.commit(commit).await?);
        }
        Ok(appended)
    }
}

/// [`EventReader::visit_stream`] as its default does it: [`EventReader::read_stream`], then
/// each event viewed. For stores that decode from their rows only on some paths.
///
/// # Errors
///
/// As [`EventReader::read_stream`].
pub async fn visit_by_reading<R: EventReader + ?Sized>(
    reader: &R,
    stream: &StreamId,
    from: Version,
    visit: &mut (dyn for<'e> FnMut(EventView<'e>) -> ControlFlow<()> + Send),
) -> Result<(), StoreError> {
    for event in reader.read_stream(stream, from).await? {
        if visit(event.view()).is_break() {
            break;
        }
    }
    Ok(())
}

/// [`EventStore::read_then_commit`] as its default does it, but reading whole events (with
/// their metadata) through [`EventReader::read_stream`]: for decisions whose upcasters read
/// the metadata.
pub(crate) async fn read_whole_then_commit<S: EventStore + ?Sized>(
    store: &S,
    stream: &StreamId,
    from: Version,
    decide: Decide,
) -> Result<Option<Appended>, StoreError> {
    let mut decide = decide;
    visit_by_reading(store, stream, from, &mut |event| decide.event(event)).await?;
    match decide.decide() {
        Some(commit) => store.commit(commit).await.map(Some),
        None => Ok(None),
    }
}

/// A decision over a stream's events, as [`EventStore::read_then_commit`] runs it: it is
/// given the events read, in version order, then asked what to commit.
///
/// # Examples
///
/// ```
/// use std::ops::ControlFlow;
/// use cqrs_core::store::StreamDecision;
/// use cqrs_core::{Commit, EventView, ExpectedVersion, NewEvent, Json, StreamId, Version};
///
/// /// Appends one event at the version read.
/// struct Next { stream: StreamId, version: Version }
///
/// impl StreamDecision for Next {
///     fn event(&mut self, event: EventView<'_>) -> ControlFlow<()> {
///         self.version = event.version;
///         ControlFlow::Continue(())
///     }
///
///     fn decide(self: Box<Self>) -> Option<Commit> {
///         let expected = ExpectedVersion::Exact(self.version);
///         Some(Commit::new(self.stream, expected, vec![NewEvent::new("seats.added", Json::null())]))
///     }
/// }
/// ```
pub trait StreamDecision: Send {
    /// Takes the stream's next event; `Break` stops the read (the decision is then made on
    /// what was read, and should commit nothing that depends on the rest).
    fn event(&mut self, event: EventView<'_>) -> ControlFlow<()>;

    /// What to commit, once the events were read (or nothing).
    fn decide(self: Box<Self>) -> Option<Commit>;
}

/// A boxed [`StreamDecision`], as [`EventStore::read_then_commit`] takes it.
pub type Decide = Box<dyn StreamDecision>;

/// One atomic write: events for one stream and, optionally, the command that caused them.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The stream to append to.
    pub stream: StreamId,
    /// The version the stream must be at.
    pub expected: ExpectedVersion,
    /// The events, in order (may be empty, to record a command alone).
    pub events: Vec<NewEvent>,
    /// The command to record in the message log with the events.
    pub command: Option<CommandRecord>,
}

impl Commit {
    /// A commit of `events` without a command record.
    #[must_use]
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            stream,
            expected,
            events,
            command: None,
        }
    }

    /// Records `command` with the events.
    #[must_use]
    pub fn with_command(mut self, command: CommandRecord) -> Self {
        self.command = Some(command);
        self
    }

    /// Checks the limits every store enforces: type names are 1 to 200 bytes without control
    /// characters; header names are non-empty; no header holds a NUL character; the command
    /// record is for this commit's stream.
    ///
    /// Stores call this first, so that every store rejects the same commits.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the offending part.
    pub fn validate(&self) -> Result<(), StoreError> {
        for (i, event) in self.events.iter().enumerate() {
            check_type_name(&event.event_type)
                .and_then(|()| check_headers(&event.metadata.headers))
                .map_err(|why| StoreError::Invalid(format!("event {i}: {why}")))?;
        }
        if let Some(command) = &self.command {
            check_type_name(&command.command_type)
                .and_then(|()| check_headers(&command.headers))
                .map_err(|why| StoreError::Invalid(format!("command: {why}")))?;
            if command.target != self.stream {
                return Err(StoreError::Invalid(format!(
                    "the command record is for {} but the commit is for {}",
                    command.target, self.stream
                )));
            }
        }
        Ok(())
    }
}

/// A name or header outside the limits every store enforces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// A type name is empty, too long, or holds a control character.
    #[error("type name {name:?} must be 1 to {MAX_TYPE_NAME_LEN} bytes without control characters")]
    TypeName {
        /// The name.
        name: String,
    },
    /// A header's name is empty.
    #[error("a header name is empty")]
    EmptyHeaderName,
    /// A header's name or value holds a NUL character (which some databases cannot store in
    /// text).
    #[error("header {name:?} holds a NUL character")]
    NulInHeader {
        /// The header's name.
        name: String,
    },
}

impl From<Invalid> for StoreError {
    fn from(err: Invalid) -> Self {
        Self::Invalid(err.to_string())
    }
}

/// Checks a type name against the limits every store enforces: 1 to
/// [`MAX_TYPE_NAME_LEN`] bytes, no control characters.
///
/// # Errors
///
/// [`Invalid::TypeName`].
///
/// # Examples
///
/// ```
/// use cqrs_core::store::{Invalid, check_type_name};
///
/// assert!(check_type_name("order.placed").is_ok());
/// assert_eq!(check_type_name(""), Err(Invalid::TypeName { name: String::new() }));
/// ```
pub fn check_type_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > MAX_TYPE_NAME_LEN || name.chars().any(char::is_control) {
        return Err(Invalid::TypeName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Checks headers against the limits every store enforces: names are non-empty, and neither
/// names nor values hold a NUL character.
///
/// # Errors
///
/// [`Invalid::EmptyHeaderName`] or [`Invalid::NulInHeader`].
pub fn check_headers(headers: &crate::event::Headers) -> Result<(), Invalid> {
    for (name, value) in headers {
        if name.is_empty() {
            return Err(Invalid::EmptyHeaderName);
        }
        if name.contains('\0') || value.contains('\0') {
            return Err(Invalid::NulInHeader { name: name.clone() });
        }
    }
    Ok(())
}

/// What one version of a durable read model is to it, given the version readers see: how a
/// store's transactional projection decides, each batch, whether to apply, build, or stand
/// down (see [`ReadModelSpec`](crate::ReadModelSpec)).
///
/// ```
/// use cqrs_core::store::ReadModelRole;
///
/// assert_eq!(ReadModelRole::of(None, 1), ReadModelRole::Live, "the first version is live at once");
/// assert_eq!(ReadModelRole::of(Some(1), 2), ReadModelRole::Building { live: 1 });
/// assert_eq!(ReadModelRole::of(Some(2), 1), ReadModelRole::Retired);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadModelRole {
    /// Readers see it.
    Live,
    /// It is being built beside the live `version`; it takes over once it has read as far.
    Building {
        /// The live version.
        live: u32,
    },
    /// A newer version took over: this one applies nothing more.
    Retired,
}

impl ReadModelRole {
    /// The role of `version` when readers see `live` (`None`: no version yet, so this one).
    #[must_use]
    pub fn of(live: Option<u32>, version: u32) -> Self {
        match live.unwrap_or(version).cmp(&version) {
            std::cmp::Ordering::Equal => Self::Live,
            std::cmp::Ordering::Less => Self::Building {
                live: live.unwrap_or(version),
            },
            std::cmp::Ordering::Greater => Self::Retired,
        }
    }
}

/// A count, version or position as a database's signed 64-bit integer.
///
/// # Errors
///
/// [`StoreError::Invalid`] above `i64::MAX`, which no store can hold.
///
/// # Examples
///
/// ```
/// use cqrs_core::store::{from_i64, to_i64};
///
/// assert_eq!(to_i64(42).unwrap(), 42);
/// assert!(to_i64(u64::MAX).is_err());
/// assert_eq!(from_i64(42, "version", None).unwrap(), 42);
/// assert!(from_i64(-1, "version", None).unwrap_err().to_string().contains("version -1 is negative"));
/// ```
pub fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("{value} does not fit the store")))
}

/// A stored signed integer back as a count, version or position: `what` and the event's
/// `position` (if the row is an event) name it in the error.
///
/// # Errors
///
/// [`StoreError::Corrupt`] if it is negative, which the store never writes.
pub fn from_i64(value: i64, what: &str, position: Option<Position>) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        position,
        what: format!("{what} {value} is negative"),
    })
}

/// Headers as a store keeps them in a text column: `None` (SQL `NULL`) when there are none,
/// a JSON object of strings otherwise. [`HeadersText`] reads them back.
///
/// # Examples
///
/// ```
/// use cqrs_core::Headers;
/// use cqrs_core::store::headers_json;
///
/// assert_eq!(headers_json(&Headers::new()), None);
/// let headers: Headers = [("user".to_owned(), "ana".to_owned())].into_iter().collect();
/// assert_eq!(headers_json(&headers).as_deref(), Some(r#"{"user":"ana"}"#));
/// ```
#[must_use]
pub fn headers_json(headers: &crate::event::Headers) -> Option<String> {
    if headers.is_empty() {
        None
    } else {
        serde_json::to_string(headers).ok()
    }
}

/// Reads headers kept by [`headers_json`] back, parsing a run of identical texts once: the
/// events of a read mostly share their headers (one user's commands, say), and a parsed map
/// shared by reference count (a [`Headers`](crate::Headers) clone) costs no allocation.
///
/// # Examples
///
/// ```
/// use cqrs_core::store::HeadersText;
///
/// let mut text = HeadersText::default();
/// let a = text.parse(Some(r#"{"user":"ana"}"#), None).unwrap();
/// let b = text.parse(Some(r#"{"user":"ana"}"#), None).unwrap();
/// assert_eq!(a.get("user").map(String::as_str), Some("ana"));
/// assert_eq!(a, b);
/// assert!(text.parse(None, None).unwrap().is_empty());
/// assert!(text.parse(Some("[1]"), None).is_err());
/// ```
#[derive(Debug, Default)]
pub struct HeadersText {
    last: Option<(String, crate::event::Headers)>,
}

impl HeadersText {
    /// The headers in `text` (`None`: no headers) of the event at `position`, if it is one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`], naming `position`, if `text` is not a JSON object of strings.
    pub fn parse(
        &mut self,
        text: Option<&str>,
        position: Option<Position>,
    ) -> Result<crate::event::Headers, StoreError> {
        let Some(text) = text else {
            return Ok(crate::event::Headers::new());
        };
        if let Some((last, parsed)) = &self.last
            && last == text
        {
            return Ok(parsed.clone());
        }
        let parsed: crate::event::Headers =
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                position,
                what: format!("headers are not a JSON object of strings: {e}"),
            })?;
        self.last = Some((text.to_owned(), parsed.clone()));
        Ok(parsed)
    }
}

/// A page size as SQL's `LIMIT`: a `usize` beyond `i64::MAX` means "no limit", so it saturates.
///
/// # Examples
///
/// ```
/// use cqrs_core::store::limit_to_i64;
///
/// assert_eq!(limit_to_i64(100), 100);
/// assert_eq!(limit_to_i64(usize::MAX), i64::MAX);
/// ```
#[must_use]
pub fn limit_to_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Until when a claim made at `now` for `lease` holds; the far future if that overflows, so
/// a huge lease never wraps into the past (which would hand the command out again at once).
///
/// # Examples
///
/// ```
/// use cqrs_core::chrono::{DateTime, Duration, Utc};
/// use cqrs_core::store::lease_until;
///
/// let now = DateTime::<Utc>::UNIX_EPOCH;
/// assert_eq!(lease_until(now, Duration::seconds(30)), now + Duration::seconds(30));
/// assert_eq!(lease_until(DateTime::<Utc>::MAX_UTC, Duration::seconds(1)), DateTime::<Utc>::MAX_UTC);
/// ```
#[must_use]
pub fn lease_until(now: DateTime<Utc>, lease: chrono::Duration) -> DateTime<Utc> {
    now.checked_add_signed(lease)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Where a commit landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// The stream's version after the commit.
    pub version: Version,
    /// The global position of the last event appended (`None` if none were).
    pub position: Option<Position>,
}

/// A stream as [`EventReader::list_streams`] lists it: its version and its last event's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// The stream.
    pub stream: StreamId,
    /// Its version: how many events it holds.
    pub version: Version,
    /// Its last event's position.
    pub position: Position,
    /// When its last event was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl StreamSummary {
    /// The summary of a stream whose last event is `last`.
    #[must_use]
    pub fn of_last(last: &RecordedEvent) -> Self {
        Self {
            stream: last.stream.clone(),
            version: last.version,
            position: last.position,
            recorded_at: last.metadata.recorded_at,
        }
    }
}

/// Lists up to `limit` categories of the streams in `reader` (the part of a stream's name
/// before its first `-`), skipping from category to category in the order of stream names,
/// after the streams of category `after`: one [`EventReader::list_streams`] call per
/// category. That is byte order of the categories, unless a name holds a character that
/// sorts before `-` (`c!x-1` sorts between `c` and `c-1`): such a category is still listed
/// once per call, where its streams are.
///
/// # Errors
///
/// As [`EventReader::list_streams`].
///
/// # Examples
///
/// ```
/// # use cqrs_core::{EventStore, ExpectedVersion, InMemoryEventStore, Json, NewEvent};
/// # use cqrs_core::store::list_categories;
/// # tokio_test::block_on(async {
/// let store = InMemoryEventStore::new();
/// for stream in ["order-2", "seats-1", "order-1", "registration-9"] {
///     store.append(&stream.parse()?, ExpectedVersion::Any, vec![NewEvent::new("e", Json::null())]).await?;
/// }
/// assert_eq!(list_categories(&store, None, 10).await?, ["order", "registration", "seats"]);
/// assert_eq!(list_categories(&store, Some("order"), 1).await?, ["registration"]);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub async fn list_categories<R: EventReader + ?Sized>(
    reader: &R,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    // Past every stream `c-…` of a category: no stream id holds U+10FFFF, the largest
    // character, so `c-\u{10FFFF}` sorts after all of them.
    let past = |category: &str| format!("{category}-\u{10FFFF}");
    let mut categories: Vec<String> = Vec::new();
    let mut cursor = after.map(past);
    while categories.len() < limit {
        let Some(next) = reader
            .list_streams("", cursor.as_deref(), 1)
            .await?
            .into_iter()
            .next()
        else {
            break;
        };
        let name = next.stream.as_str();
        let category = next.stream.category().to_owned();
        // A stream named as its category alone may be followed by streams of other
        // categories before its own `c-…` ones: step past it alone.
        cursor = Some(if name == category {
            name.to_owned()
        } else {
            past(&category)
        });
        if after != Some(category.as_str()) && !categories.contains(&category) {
            categories.push(category);
        }
    }
    Ok(categories)
}

/// A page of [`EventReader::read_filtered`]: it advances or it is at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    /// The events that passed the filter, in position order.
    pub events: Vec<RecordedEvent>,
    /// Where the next read continues.
    pub next: Position,
    /// Whether the read reached the end of what is visible now.
    pub end: bool,
}

/// Keeps the newest snapshot of each stream, per snapshot schema version.
///
/// Keeping one snapshot per schema version lets an old and a new build of an aggregate run
/// side by side (during a rolling upgrade) without replacing each other's snapshots.
///
/// # Contract
///
/// A saved snapshot replaces the stored one of the same stream and schema version unless that
/// one is of a higher stream version (conformance: `snapshots_keep_the_newest`).
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// The newest snapshot of `stream` written with `schema_version`, if any.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u16,
    ) -> Result<Option<Snapshot>, StoreError>;

    /// Stores `snapshot`, unless a snapshot of the same stream and schema version with a higher
    /// stream version is already stored.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;
}

/// An aggregate's serialized state at a stream version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream: StreamId,
    /// The stream version the state includes.
    pub version: Version,
    /// The schema version of the serialized state ([`Aggregate::SNAPSHOT_VERSION`](crate::Aggregate::SNAPSHOT_VERSION)).
    pub schema_version: u16,
    /// The serialized state.
    pub state: Json,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// Remembers how far each projection (or other log consumer) has read.
///
/// # Contract
///
/// Saving overwrites; a name never saved loads as `None` (conformance: `checkpoints_round_trip`).
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The last position `name` processed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError>;

    /// Records that `name` has processed everything up to `position`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError>;

    /// Forgets `name`'s checkpoint (to rebuild from the start).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn delete_checkpoint(&self, name: &str) -> Result<(), StoreError>;
}

/// The log of every command and every event, for audit, debugging and replay.
///
/// Commands get in through [`EventStore::commit`] and [`ProcessStore::save_process`]; events are
/// the event log itself. Log order is (`recorded_at`, commands before events, then store
/// sequence: command sequence or event position).
///
/// # Contract
///
/// Conformance: `message_log_queries_combine_criteria`, `command_records_round_trip`.
#[async_trait]
pub trait MessageLog: Send + Sync + 'static {
    /// The record of command `id`, if it was handled.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn find_command(&self, id: Uuid) -> Result<Option<CommandRecord>, StoreError>;

    /// Commands and events that match `query`, in log order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn query_log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError>;
}

/// Whether a log entry is a command or an event. Commands sort first at equal times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A command.
    Command,
    /// An event.
    Event,
}

/// Where an entry sits in log order; pass the last one seen as [`LogQuery::after`] to page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogCursor {
    /// When the message was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Commands first.
    pub kind: MessageKind,
    /// The store's sequence: a command's log sequence or an event's position.
    pub sequence: u64,
}

/// A filter over the message log. Values within one criterion are OR-ed, criteria are AND-ed,
/// and an empty criterion matches everything.
///
/// # Examples
///
/// ```
/// use cqrs_core::{LogQuery, MessageKind};
/// use uuid::Uuid;
///
/// let flow = Uuid::new_v4();
/// let query = LogQuery::new()
///     .with_kind(MessageKind::Event)
///     .with_types(["order.placed", "order.confirmed"])
///     .with_correlation_ids([flow])
///     .with_limit(50);
/// assert_eq!(query.limit, 50);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Only commands or only events.
    pub kind: Option<MessageKind>,
    /// Type names (command or event).
    pub types: Vec<String>,
    /// Streams: an event's stream or a command's target.
    pub streams: Vec<StreamId>,
    /// Correlation ids.
    pub correlation_ids: Vec<Uuid>,
    /// Recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Recorded strictly before this time.
    pub until: Option<DateTime<Utc>>,
    /// Strictly after this entry (for paging).
    pub after: Option<LogCursor>,
    /// At most this many entries.
    pub limit: usize,
}

impl LogQuery {
    /// The default page size.
    pub const DEFAULT_LIMIT: usize = 100;

    /// A query for everything, [`LogQuery::DEFAULT_LIMIT`] entries at a time.
    #[must_use]
    pub fn new() -> Self {
        Self {
            kind: None,
            types: Vec::new(),
            streams: Vec::new(),
            correlation_ids: Vec::new(),
            since: None,
            until: None,
            after: None,
            limit: Self::DEFAULT_LIMIT,
        }
    }

    /// Only commands or only events.
    #[must_use]
    pub fn with_kind(mut self, kind: MessageKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Adds type names.
    #[must_use]
    pub fn with_types<I: IntoIterator<Item = S>, S: Into<String>>(mut self, types: I) -> Self {
        self.types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Adds streams.
    #[must_use]
    pub fn with_streams<I: IntoIterator<Item = StreamId>>(mut self, streams: I) -> Self {
        self.streams.extend(streams);
        self
    }

    /// Adds correlation ids.
    #[must_use]
    pub fn with_correlation_ids<I: IntoIterator<Item = Uuid>>(mut self, ids: I) -> Self {
        self.correlation_ids.extend(ids);
        self
    }

    /// Only entries recorded in `[since, until)`; either end may be open.
    #[must_use]
    pub fn with_time_range(
        mut self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Self {
        self.since = since;
        self.until = until;
        self
    }

    /// Continues after `cursor`.
    #[must_use]
    pub fn with_after(mut self, cursor: LogCursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// Returns at most `limit` entries.
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether an entry with these parts matches (stores that filter in memory use this).
    #[must_use]
    pub fn matches(
        &self,
        cursor: &LogCursor,
        message_type: &str,
        stream: &StreamId,
        correlation: Option<Uuid>,
    ) -> bool {
        self.kind.is_none_or(|k| k == cursor.kind)
            && (self.types.is_empty() || self.types.iter().any(|t| t == message_type))
            && (self.streams.is_empty() || self.streams.contains(stream))
            && (self.correlation_ids.is_empty()
                || correlation.is_some_and(|c| self.correlation_ids.contains(&c)))
            && self.since.is_none_or(|t| cursor.recorded_at >= t)
            && self.until.is_none_or(|t| cursor.recorded_at < t)
            && self.after.is_none_or(|a| *cursor > a)
    }
}

impl Default for LogQuery {
    fn default() -> Self {
        Self::new()
    }
}

/// Puts the entries a store gathered for `query` (commands and events, each already in order)
/// into log order and keeps the first [`limit`](LogQuery::limit).
#[must_use]
pub fn log_page(query: &LogQuery, mut entries: Vec<LogEntry>) -> Vec<LogEntry> {
    entries.sort_by_key(|e| e.cursor);
    entries.truncate(query.limit);
    entries
}

/// One entry of the message log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Where it sits in log order.
    pub cursor: LogCursor,
    /// The command or event.
    pub message: LoggedMessage,
}

impl LogEntry {
    /// The entry of a command record, `sequence` being its place among the store's commands.
    #[must_use]
    pub fn command(sequence: u64, record: CommandRecord) -> Self {
        Self {
            cursor: LogCursor {
                recorded_at: record.recorded_at,
                kind: MessageKind::Command,
                sequence,
            },
            message: LoggedMessage::Command(record),
        }
    }

    /// The entry of an event (its global position is its place among events).
    ///
    /// # Examples
    ///
    /// ```
    /// use cqrs_core::{Json, LogEntry, LogQuery, MessageKind, Metadata, Position, RecordedEvent, StreamId, Version};
    ///
    /// // Two events recorded at the same instant: log order falls back to their positions.
    /// let metadata = Metadata::default();
    /// let event = |position: u64| RecordedEvent {
    ///     stream: StreamId::new("order-1").unwrap(),
    ///     version: Version::new(position),
    ///     position: Position::new(position),
    ///     event_type: "order.placed".into(),
    ///     schema_version: 1,
    ///     payload: Json::null(),
    ///     metadata: metadata.clone(),
    ///     tags: vec![],
    /// };
    /// let entries = vec![LogEntry::event(event(2)), LogEntry::event(event(1))];
    /// let page = cqrs_core::store::log_page(&LogQuery::new().with_limit(1), entries);
    /// assert_eq!(page.len(), 1);
    /// assert_eq!(page[0].cursor.kind, MessageKind::Event);
    /// assert_eq!(page[0].cursor.sequence, 1);
    /// ```
    #[must_use]
    pub fn event(event: RecordedEvent) -> Self {
        Self {
            cursor: LogCursor {
                recorded_at: event.metadata.recorded_at,
                kind: MessageKind::Event,
                sequence: event.position.get(),
            },
            message: LoggedMessage::Event(event),
        }
    }

    /// The entry's type name.
    #[must_use]
    pub fn message_type(&self) -> &str {
        match &self.message {
            LoggedMessage::Command(c) => &c.command_type,
            LoggedMessage::Event(e) => &e.event_type,
        }
    }
}

/// A command or an event, as the message log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum LoggedMessage {
    /// A command and its outcome.
    Command(CommandRecord),
    /// An event.
    Event(RecordedEvent),
}

/// Durable scheduled commands: timeouts and the outbox of process managers.
///
/// A scheduled command is delivered at or after its due time, at least once; receivers
/// deduplicate by command id, so its effect happens once.
///
/// # Contract
///
/// Conformance: `scheduled_commands_fire_when_due_and_once_claimed`,
/// `parked_commands_wait_for_retry_or_discard`.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Stores commands to deliver at their due time. An id already scheduled is left as it is
    /// (an id completed and then scheduled again is delivered again: receivers deduplicate).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn schedule(&self, commands: Vec<ScheduledCommand>) -> Result<(), StoreError>;

    /// Claims up to `limit` commands due at `now`, earliest first, hiding them from other
    /// claims until `now + lease`, and counts the claim in their
    /// [`attempts`](ScheduledCommand::attempts). A claimed command that is not completed in
    /// time becomes claimable again. `now` is the caller's clock: dispatchers sharing a store
    /// need clocks that agree to within a small part of the lease.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: chrono::Duration,
    ) -> Result<Vec<ScheduledCommand>, StoreError>;

    /// Every command scheduled and not completed yet (claimed or not), in id order, after
    /// `after`, up to `limit`: for copying a store ([`migrate`](crate::migrate)).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn list_scheduled(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ScheduledCommand>, StoreError>;

    /// Removes delivered commands.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn complete_scheduled(&self, ids: &[Uuid]) -> Result<(), StoreError>;

    /// When the next command becomes claimable, if any is scheduled (parked commands never
    /// become claimable).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Sets the scheduled command `id` aside as a dead letter, if it is not parked and has been
    /// claimed `attempts` times (so a dispatcher whose claim another has taken over since
    /// cannot park it; give 0 for a command never claimed): it stays in the schedule with
    /// `reason` and the time it was parked, is never claimed, and is left out of
    /// [`list_scheduled`](ScheduleStore::list_scheduled) and
    /// [`next_due`](ScheduleStore::next_due), until an operator retries it
    /// ([`retry_parked`](ScheduleStore::retry_parked)) or discards it
    /// ([`complete_scheduled`](ScheduleStore::complete_scheduled), after recording it; see
    /// [`discard_parked`](crate::discard_parked)). A [`CommandDispatcher`](crate::CommandDispatcher)
    /// parks a command whose last attempt failed.
    ///
    /// Returns whether the command was parked: `false` when `id` is not scheduled, is parked
    /// already, has been claimed another number of times, or the store does not keep dead
    /// letters. The default keeps none, and the
    /// dispatcher then records the command as rejected in the message log and drops it;
    /// stores override it (the conformance suite's `schedule` group checks parking).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn park(
        &self,
        id: Uuid,
        attempts: u32,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _ = (id, attempts, reason, at);
        Ok(false)
    }

    /// Whether this store keeps dead letters ([`park`](ScheduleStore::park) and the methods
    /// after it). The default is `false`: a store that implements parking says so, and a
    /// dispatcher then never drops a command it could not park (another dispatcher parked it
    /// first, or an operator took it away meanwhile).
    fn keeps_dead_letters(&self) -> bool {
        false
    }

    /// The parked commands, in id order, after `after`, up to `limit`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn list_parked(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ParkedCommand>, StoreError> {
        let _ = (after, limit);
        Ok(Vec::new())
    }

    /// How many commands are parked, counting no further than `up_to` (a count of `up_to`
    /// means "at least that many"): for a metric or an overview, without reading the dead
    /// letters themselves.
    ///
    /// The default pages through [`list_parked`](ScheduleStore::list_parked); a store that can
    /// count without reading the rows overrides it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn count_parked(&self, up_to: usize) -> Result<usize, StoreError> {
        const PAGE: usize = 1_000;
        let mut count = 0;
        let mut after = None;
        while count < up_to {
            let asked = PAGE.min(up_to - count);
            let page = self.list_parked(after, asked).await?;
            count += page.len();
            match page.last() {
                Some(last) if page.len() == asked => after = Some(last.scheduled.command.id),
                _ => break,
            }
        }
        Ok(count.min(up_to))
    }

    /// The parked command `id`, if it is parked.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn find_parked(&self, id: Uuid) -> Result<Option<ParkedCommand>, StoreError> {
        let _ = id;
        Ok(None)
    }

    /// Puts the parked command `id` back in the schedule, due at `due_at` with its attempts
    /// counted from zero again: for after the cause of its failures is mended. Returns whether
    /// it was parked.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn retry_parked(&self, id: Uuid, due_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let _ = (id, due_at);
        Ok(false)
    }
}

/// A scheduled command set aside after its last delivery attempt failed: a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedCommand {
    /// The command, its due time and the attempts it was given.
    pub scheduled: ScheduledCommand,
    /// When it was parked, to the microsecond.
    pub parked_at: DateTime<Utc>,
    /// Why: the last attempt's error.
    pub reason: String,
}

/// A command to deliver at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledCommand {
    /// The command.
    pub command: CommandEnvelope,
    /// When to deliver it, to the microsecond.
    pub due_at: DateTime<Utc>,
    /// How many times it has been claimed, the current claim included: 0 until the first
    /// claim. Stores count it; the value given to [`ScheduleStore::schedule`] is ignored.
    #[serde(default)]
    pub attempts: u32,
}

impl ScheduledCommand {
    /// `command`, due at `due_at`.
    #[must_use]
    pub fn new(command: CommandEnvelope, due_at: DateTime<Utc>) -> Self {
        Self {
            command,
            due_at,
            attempts: 0,
        }
    }

    /// Checks the limits every store enforces on a scheduled command: its type name and its
    /// headers, as [`Commit::validate`] does for a command record. Stores call this before
    /// scheduling, so that every store rejects the same commands.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the offending part.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_type_name(&self.command.command_type)
            .and_then(|()| check_headers(&self.command.headers))
            .map_err(|why| {
                StoreError::Invalid(format!("scheduled command {}: {why}", self.command.id))
            })
    }
}

/// Keeps process-manager instances, saving each one's state together with the commands it
/// sends (the outbox), so that a crash neither loses nor duplicates a command.
///
/// # Contract
///
/// Conformance: `process_state_and_outbox_commit_together`.
#[async_trait]
pub trait ProcessStore: Send + Sync + 'static {
    /// The instance `id`, if it was ever saved.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn load_process(&self, id: &StreamId) -> Result<Option<ProcessState>, StoreError>;

    /// Saves an instance's new state, schedules its outbox and records the command it handled,
    /// all or nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if the instance is not at `save.expected` (its `stream` is the
    /// instance id), [`StoreError::DuplicateCommand`] if `save.handled` was already recorded.
    async fn save_process(&self, save: ProcessSave) -> Result<(), StoreError>;

    /// Every instance, in id order, after `after`, up to `limit`: for copying a store
    /// ([`migrate`](crate::migrate)).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if the store fails.
    async fn list_processes(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<ProcessState>, StoreError>;
}

/// A stored process-manager instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    /// `"{process manager name}-{instance}"`.
    pub id: StreamId,
    /// Bumped by every save; 1 after the first.
    pub version: Version,
    /// The serialized state.
    pub state: Json,
    /// Whether the instance has finished (it then ignores further messages).
    pub completed: bool,
    /// The position of the last event the instance handled.
    pub last_position: Position,
    /// When it was last saved.
    pub updated_at: DateTime<Utc>,
}

/// One atomic process-manager save.
#[derive(Debug, Clone)]
pub struct ProcessSave {
    /// The instance.
    pub id: StreamId,
    /// The version the instance must be at ([`Version::ZERO`] for a new one).
    pub expected: Version,
    /// The new state.
    pub state: Json,
    /// Whether the instance has finished.
    pub completed: bool,
    /// The position of the last event handled.
    pub last_position: Position,
    /// Commands to deliver (now or later).
    pub outbox: Vec<ScheduledCommand>,
    /// Scheduled commands to forget (timeouts no longer wanted), in the same commit; ids not
    /// scheduled (already delivered, or never) are ignored.
    pub cancel: Vec<Uuid>,
    /// The command this save handled, recorded in the message log.
    pub handled: Option<CommandRecord>,
    /// When the save happens.
    pub saved_at: DateTime<Utc>,
}

impl ProcessSave {
    /// Checks the instance's version as the store found it (`None`: no row yet, version 0)
    /// against [`expected`](Self::expected), inside the save's transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] reporting both versions if another save came first;
    /// [`StoreError::Corrupt`] if the stored version is negative.
    ///
    /// # Examples
    ///
    /// ```
    /// use cqrs_core::{Json, Position, ProcessSave, StoreError, StreamId, Version};
    /// use cqrs_core::chrono::Utc;
    ///
    /// let save = ProcessSave {
    ///     id: StreamId::new("registration-1")?,
    ///     expected: Version::new(2),
    ///     state: Json::parse("{}")?,
    ///     completed: false,
    ///     last_position: Position::new(7),
    ///     outbox: vec![],
    ///     cancel: vec![],
    ///     handled: None,
    ///     saved_at: Utc::now(),
    /// };
    /// assert!(save.check_stored_version(Some(2)).is_ok());
    /// assert!(matches!(
    ///     save.check_stored_version(Some(3)),
    ///     Err(StoreError::Conflict { actual, .. }) if actual == Version::new(3)
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_stored_version(&self, stored: Option<i64>) -> Result<(), StoreError> {
        let actual = Version::new(stored.map_or(Ok(0), |v| from_i64(v, "process version", None))?);
        if actual == self.expected {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                stream: self.id.clone(),
                expected: ExpectedVersion::Exact(self.expected),
                actual,
            })
        }
    }
}

/// Everything a complete store provides. Applications hold one `Arc<dyn Storage>`.
///
/// Implemented for every type that implements all the store traits.
pub trait Storage:
    EventStore + DcbStore + SnapshotStore + CheckpointStore + MessageLog + ScheduleStore + ProcessStore
{
}

impl<T> Storage for T where
    T: EventStore
        + DcbStore
        + SnapshotStore
        + CheckpointStore
        + MessageLog
        + ScheduleStore
        + ProcessStore
{
}

/// What a store reports when it cannot do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another writer got there first. Reload and retry.
    #[error("stream {stream} is at version {actual}, expected {expected}")]
    Conflict {
        /// The stream (or process instance).
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// What the store found.
        actual: Version,
    },
    /// An event matching a conditional commit's query was appended after the position the
    /// decision read. Read again and decide again.
    #[error(
        "an event matching the condition was appended at position {found}{}",
        after.map(|p| format!(", after position {p}")).unwrap_or_default()
    )]
    ConditionFailed {
        /// The position the condition allowed matching events up to (`None`: none at all).
        after: Option<Position>,
        /// The first matching event's position after it.
        found: Position,
    },
    /// The commit's command id is already recorded: the command was handled before.
    #[error("command {command_id} was already handled")]
    DuplicateCommand {
        /// The command id.
        command_id: Uuid,
    },
    /// The request breaks a limit every store enforces.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A stored row cannot be read back.
    #[error("corrupt row{}: {what}", position.map(|p| format!(" at position {p}")).unwrap_or_default())]
    Corrupt {
        /// The event's position, when the row is an event.
        position: Option<Position>,
        /// What is wrong.
        what: String,
    },
    /// The store was written by a newer version of the software.
    #[error("the store's schema version {found} is newer than the {supported} this build supports")]
    SchemaTooNew {
        /// The version found.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
    /// The storage backend failed.
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(err: impl StdError + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(err))
    }

    /// Whether this is an optimistic-concurrency conflict: a stream not at its expected
    /// version, or a failed append condition. Reading again and deciding again may succeed.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::ConditionFailed { .. })
    }

    /// Whether this is a command id handled before.
    #[must_use]
    pub fn is_duplicate_command(&self) -> bool {
        matches!(self, Self::DuplicateCommand { .. })
    }
}
