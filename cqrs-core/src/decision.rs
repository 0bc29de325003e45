//! Decisions: rules that span streams, decided on the events a query selects and committed
//! only if none of those changed meanwhile (dynamic consistency boundaries).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, field};
use uuid::Uuid;

use crate::aggregate::ApplyError;
use crate::clock::{Clock, SystemClock};
use crate::command::{CommandContext, CommandRecord, Outcome};
use crate::dcb::{AppendCondition, ConditionalCommit, EventQuery, StreamAppend};
use crate::event::{Json, Metadata, NewEvent, RecordedEvent, StreamId};
use crate::message::{DomainEvent, Message, MessageError, encode_message};
use crate::repository::{CommandError, LoadError};
use crate::store::{Appended, Storage, StoreError};
use crate::upcast::Upcasters;
use crate::version::{ExpectedVersion, Position, Version};

/// A rule that spans streams: it declares the events a command depends on (an
/// [`EventQuery`]), folds them into a state, and decides. A [`Decider`] commits what it
/// decides only if no event matching the query was appended since it read, retrying on a
/// fresh read otherwise.
///
/// Like an aggregate, a decision is pure: no I/O, no clock. Unlike an aggregate, its state is
/// not one stream's but whatever its query selects, across streams, so two commands whose
/// queries do not overlap never wait for each other.
///
/// # Examples
///
/// A slug names one conference at most: creating a conference reads the events tagged with
/// its slug.
///
/// ```
/// use cqrs_core::{Decision, DomainEvent, Emit, EventQuery, ExpectedVersion, QueryItem, StreamId, Tag};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum ConferenceEvent {
///     #[serde(rename = "conference.created")]
///     Created { id: u32, slug: String },
/// }
///
/// impl DomainEvent for ConferenceEvent {
///     fn tags(&self) -> Vec<Tag> {
///         let Self::Created { slug, .. } = self;
///         Tag::new("slug", slug).into_iter().collect()
///     }
/// }
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// enum CreateConference {
///     #[serde(rename = "conference.create")]
///     Create { id: u32, slug: String },
/// }
///
/// #[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
/// #[error("the slug {0} is taken")]
/// struct SlugTaken(String);
///
/// struct UniqueSlug;
///
/// impl Decision for UniqueSlug {
///     const NAME: &'static str = "conference.unique_slug";
///     type Command = CreateConference;
///     type Event = ConferenceEvent;
///     type Error = SlugTaken;
///     type State = bool;
///
///     fn target(CreateConference::Create { id, .. }: &CreateConference) -> StreamId {
///         StreamId::for_aggregate("conference", id).expect("a short id")
///     }
///
///     fn query(CreateConference::Create { slug, .. }: &CreateConference) -> EventQuery {
///         let tag = Tag::new("slug", slug).expect("a valid slug");
///         EventQuery::items([QueryItem::types(["conference.created"]).with_tag(tag)])
///     }
///
///     fn initial(_: &CreateConference) -> bool {
///         false
///     }
///
///     fn apply(taken: &mut bool, _: &ConferenceEvent) {
///         *taken = true;
///     }
///
///     fn decide(taken: &bool, command: &CreateConference) -> Result<Vec<Emit<ConferenceEvent>>, SlugTaken> {
///         let CreateConference::Create { id, slug } = command;
///         if *taken {
///             return Err(SlugTaken(slug.clone()));
///         }
///         let created = ConferenceEvent::Created { id: *id, slug: slug.clone() };
///         Ok(vec![Emit::to(Self::target(command), created).expecting(ExpectedVersion::NoStream)])
///     }
/// }
/// ```
pub trait Decision: Sized + Send + Sync + 'static {
    /// The decision's name, for logs and spans, such as `"conference.unique_slug"`.
    const NAME: &'static str;
    /// The commands it decides (an enum with stable, renamed variants, as an aggregate's).
    type Command: Message;
    /// The events it reads and appends.
    type Event: DomainEvent;
    /// Why it rejects a command; recorded in the message log, so a command retried with the
    /// same id gets the same answer.
    type Error: std::error::Error + Message;
    /// What it folds the selected events into.
    type State: Send;

    /// The stream the command is about: where the message log records it (it may receive no
    /// event).
    fn target(command: &Self::Command) -> StreamId;

    /// The events the command depends on.
    fn query(command: &Self::Command) -> EventQuery;

    /// The state before the first selected event: it may keep what it needs of the command
    /// (the member and the book a loan is about, say) to fold the events by.
    fn initial(command: &Self::Command) -> Self::State;

    /// Folds one selected event into the state, in log order.
    fn apply(state: &mut Self::State, event: &Self::Event);

    /// Whether the decision reads its target's own stream as well (default: no).
    ///
    /// A decision that does is an aggregate's command under a rule across streams: the
    /// [`Decider`] folds the target's events with [`apply_target`](Self::apply_target) first,
    /// then the events the query selects, and commits only while the target is still at the
    /// version it read (retrying on a fresh read otherwise, as for the query). The target's
    /// own rules need no tags then, and stay where they are (the aggregate's `handle`).
    const READS_TARGET: bool = false;

    /// Folds one of the target stream's events into the state, in version order, when
    /// [`READS_TARGET`](Self::READS_TARGET) is set. An event of the target that the query
    /// selects too is folded twice: once here, then by [`apply`](Self::apply) in log order.
    ///
    /// # Errors
    ///
    /// An [`ApplyError`] if the event does not fit the state: the target's history is broken,
    /// and the command fails with [`LoadError::History`].
    fn apply_target(state: &mut Self::State, event: &Self::Event) -> Result<(), ApplyError> {
        let _ = (state, event);
        Ok(())
    }

    /// Decides what the command appends, and where, on the folded state.
    ///
    /// # Errors
    ///
    /// The domain error if the command is not allowed.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
    ) -> Result<Vec<Emit<Self::Event>>, Self::Error>;
}

/// An event a decision appends: to `stream`, which must be at `expected`
/// ([`ExpectedVersion::Any`] unless set: the decision's condition is the guard).
#[derive(Debug, Clone, PartialEq)]
pub struct Emit<E> {
    /// The stream it goes to.
    pub stream: StreamId,
    /// The version the stream must be at (checked once per stream, for its first event).
    pub expected: ExpectedVersion,
    /// The event.
    pub event: E,
}

impl<E> Emit<E> {
    /// `event`, appended to `stream` whatever its version.
    #[must_use]
    pub fn to(stream: StreamId, event: E) -> Self {
        Self {
            stream,
            expected: ExpectedVersion::Any,
            event,
        }
    }

    /// Also requires `stream` to be at `expected` (an aggregate's creation: `NoStream`).
    #[must_use]
    pub fn expecting(mut self, expected: ExpectedVersion) -> Self {
        self.expected = expected;
        self
    }
}

/// What a [`Decider`] committed for a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided<E> {
    /// The command's target stream.
    pub target: StreamId,
    /// Where each stream's events landed, in the order the decision first named the stream.
    pub appended: Vec<(StreamId, Appended)>,
    /// The global position of the command's last event (`None` if it caused none).
    pub position: Option<Position>,
    /// The events, in the order the decision emitted them.
    pub events: Vec<E>,
    /// The stream each event went to, aligned with `events`.
    pub streams: Vec<StreamId>,
    /// The command id.
    pub command_id: Uuid,
    /// True when the command id had been handled before and this is the recorded result.
    pub replayed: bool,
}

/// Runs [`Decision`]s against a store: reads what the query selects, decides, commits under
/// the condition that nothing matching was appended since, and retries (bounded) when it was.
///
/// Idempotent by command id and recorded in the message log, as a repository's commands are.
///
/// # Examples
///
/// See [`Decision`]; with it:
///
/// ```
/// # use cqrs_core::{Decision, DomainEvent, Emit, EventQuery, ExpectedVersion, QueryItem, StreamId, Tag};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum ConferenceEvent { #[serde(rename = "conference.created")] Created { id: u32, slug: String } }
/// # impl DomainEvent for ConferenceEvent {
/// #     fn tags(&self) -> Vec<Tag> { let Self::Created { slug, .. } = self; Tag::new("slug", slug).into_iter().collect() }
/// # }
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # enum CreateConference { #[serde(rename = "conference.create")] Create { id: u32, slug: String } }
/// # #[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
/// # #[error("the slug {0} is taken")] struct SlugTaken(String);
/// # struct UniqueSlug;
/// # impl Decision for UniqueSlug {
/// #     const NAME: &'static str = "conference.unique_slug";
/// #     type Command = CreateConference; type Event = ConferenceEvent; type Error = SlugTaken; type State = bool;
/// #     fn target(CreateConference::Create { id, .. }: &CreateConference) -> StreamId { StreamId::for_aggregate("conference", id).unwrap() }
/// #     fn query(CreateConference::Create { slug, .. }: &CreateConference) -> EventQuery {
/// #         EventQuery::items([QueryItem::types(["conference.created"]).with_tag(Tag::new("slug", slug).unwrap())])
/// #     }
/// #     fn initial(_: &CreateConference) -> bool { false }
/// #     fn apply(taken: &mut bool, _: &ConferenceEvent) { *taken = true; }
/// #     fn decide(taken: &bool, c: &CreateConference) -> Result<Vec<Emit<ConferenceEvent>>, SlugTaken> {
/// #         let CreateConference::Create { id, slug } = c;
/// #         if *taken { return Err(SlugTaken(slug.clone())); }
/// #         Ok(vec![Emit::to(Self::target(c), ConferenceEvent::Created { id: *id, slug: slug.clone() }).expecting(ExpectedVersion::NoStream)])
/// #     }
/// # }
/// use std::sync::Arc;
/// use cqrs_core::{Decider, InMemoryEventStore};
///
/// # tokio_test::block_on(async {
/// let decider = Decider::<UniqueSlug>::new(Arc::new(InMemoryEventStore::new()));
/// let create = |id| CreateConference::Create { id, slug: "devconf".into() };
/// decider.handle(create(1)).await?;
/// let second = decider.handle(create(2)).await.unwrap_err();
/// assert_eq!(second.rejection(), Some(&SlugTaken("devconf".into())));
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub struct Decider<D: Decision> {
    storage: Arc<dyn Storage>,
    upcasters: Upcasters,
    clock: Arc<dyn Clock>,
    max_attempts: u32,
    decision: PhantomData<fn() -> D>,
}

impl<D: Decision> Clone for Decider<D> {
    fn clone(&self) -> Self {
        Self {
            storage: Arc::clone(&self.storage),
            upcasters: self.upcasters.clone(),
            clock: Arc::clone(&self.clock),
            max_attempts: self.max_attempts,
            decision: PhantomData,
        }
    }
}

impl<D: Decision> std::fmt::Debug for Decider<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider")
            .field("decision", &D::NAME)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// How many events a decision reads per page.
const PAGE: usize = 1_000;

/// How long a decider waits for an event that failed its condition to become readable (on
/// PostgreSQL, once older transactions have ended) before it reads again anyway.
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

impl<D: Decision> Decider<D> {
    /// The default number of attempts when conditions fail.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

    /// A decider over `storage`, with no upcasters, the system clock and
    /// [`Decider::DEFAULT_MAX_ATTEMPTS`].
    #[must_use]
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            upcasters: Upcasters::new(),
            clock: Arc::new(SystemClock),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            decision: PhantomData,
        }
    }

    /// Decodes stored events through `upcasters`.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Takes the time for records and metadata from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Gives up after `attempts` failed conditions (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Decides `command` with a fresh command id.
    ///
    /// # Errors
    ///
    /// As [`Decider::handle_with`].
    pub async fn handle(
        &self,
        command: D::Command,
    ) -> Result<Decided<D::Event>, CommandError<D::Error>> {
        self.handle_with(command, CommandContext::new()).await
    }

    /// Decides `command`: reads the events its query selects, folds them, decides, and commits
    /// the events and the command's record on the condition that nothing matching was
    /// appended since. A command id handled before returns its recorded result.
    ///
    /// The message log records the command on its [`Decision::target`], under the same
    /// condition (a rejection stands only if the state it was decided on did), with
    /// `Outcome::Accepted { version: 0, events }`: a decision's events may go to several
    /// streams, and `events` counts them all.
    ///
    /// # Errors
    ///
    /// [`CommandError::Rejected`] with the decision's reason (recorded, so a retry with the
    /// same id gets it again); [`CommandError::Conflict`] after every attempt found the
    /// condition broken, or at once, naming the stream, if a stream was not at the version an
    /// [`Emit`] required; [`CommandError::CommandIdReused`] if the id was
    /// used for another command; decoding and store errors.
    pub async fn handle_with(
        &self,
        command: D::Command,
        context: CommandContext,
    ) -> Result<Decided<D::Event>, CommandError<D::Error>> {
        let (command_type, payload) = encode_message(&command).map_err(CommandError::Encode)?;
        let target = D::target(&command);
        let span = tracing::info_span!(
            "cqrs.decision",
            decision = D::NAME,
            target = %target,
            command = command_type,
            command_id = %context.command_id,
            events = field::Empty,
            attempts = field::Empty,
            outcome = field::Empty,
            elapsed_us = field::Empty,
        );
        let mut context = context;
        crate::trace::command(&span, &mut context.headers);
        let started = Instant::now();
        let result = self
            .handle_inner(target, command, command_type, payload, context)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(d) if d.replayed => "replayed",
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
        crate::metric::command(D::NAME, command_type, outcome, elapsed);
        result
    }

    async fn handle_inner(
        &self,
        target: StreamId,
        command: D::Command,
        command_type: &'static str,
        payload: Json,
        context: CommandContext,
    ) -> Result<Decided<D::Event>, CommandError<D::Error>> {
        // Events stored under names the upcasters rename count as what they become.
        let query = self.upcasters.expand_query(D::query(&command));
        query.validate()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            tracing::Span::current().record("attempts", attempt);
            let called = Instant::now();
            let folded = self.fold(&target, &command, &query).await;
            crate::metric::store_call("query", called.elapsed());
            let (state, last, target_version) = folded?;
            // A decision that read its target commits only while the target is as it read it.
            let target_expected = if D::READS_TARGET {
                ExpectedVersion::Exact(target_version)
            } else {
                ExpectedVersion::Any
            };
            let now = self.clock.now();
            let record = |outcome| CommandRecord {
                command_id: context.command_id,
                command_type: command_type.to_owned(),
                target: target.clone(),
                payload: payload.clone(),
                correlation_id: Some(context.correlation_id()),
                causation_id: context.causation_id,
                recorded_at: now,
                headers: context.headers.clone(),
                outcome,
            };
            let condition = AppendCondition {
                query: query.clone(),
                after: last,
            };
            let decided = D::decide(&state, &command);
            let (commit, (event_streams, events), rejection) = match decided {
                Err(rejection) => {
                    let outcome = Outcome::Rejected {
                        error: Json::encode(&rejection)
                            .map_err(|e| CommandError::Encode(MessageError::Payload(e)))?,
                        message: rejection.to_string(),
                    };
                    // Recorded on the state it was decided on: it stands only if that held.
                    let commit = ConditionalCommit::new(vec![StreamAppend::new(
                        target.clone(),
                        target_expected,
                        vec![],
                    )])
                    .with_condition(condition)
                    .with_command(record(outcome));
                    (commit, (Vec::new(), Vec::new()), Some(rejection))
                }
                Ok(emits) => {
                    let (appends, placed) =
                        self.appends(&target, target_expected, emits, &context, now)?;
                    let (streams, events): (Vec<_>, Vec<_>) = placed.into_iter().unzip();
                    let count = events.len() as u64;
                    let version = Version::new(0);
                    let commit = ConditionalCommit::new(appends)
                        .with_condition(condition)
                        .with_command(record(Outcome::Accepted {
                            version,
                            events: count,
                        }));
                    (commit, (streams, events), None)
                }
            };
            let streams: Vec<StreamId> = commit.appends.iter().map(|a| a.stream.clone()).collect();
            let called = Instant::now();
            let committed = self.storage.commit_if(commit).await;
            crate::metric::store_call("decide_commit", called.elapsed());
            if matches!(
                committed,
                Err(StoreError::ConditionFailed { .. } | StoreError::Conflict { .. })
            ) {
                crate::metric::conflict(D::NAME);
            }
            match committed {
                Ok(appended) => {
                    if let Some(rejection) = rejection {
                        return Err(CommandError::Rejected(rejection));
                    }
                    tracing::Span::current().record("events", events.len());
                    let position = appended.iter().filter_map(|a| a.position).max();
                    return Ok(Decided {
                        target,
                        appended: streams.into_iter().zip(appended).collect(),
                        position,
                        events,
                        streams: event_streams,
                        command_id: context.command_id,
                        replayed: false,
                    });
                }
                Err(StoreError::ConditionFailed { found, .. }) => {
                    if attempt >= self.max_attempts {
                        return Err(CommandError::Conflict {
                            stream: target,
                            attempts: attempt,
                        });
                    }
                    // A store that shows the log only below a horizon (PostgreSQL) may refuse
                    // on an event the read could not see yet: wait until it can.
                    self.wait_until_readable(found).await;
                    tokio::task::yield_now().await;
                }
                // The target moved since it was read: deciding on a fresh read may differ.
                Err(StoreError::Conflict { stream, .. })
                    if D::READS_TARGET && stream == target && attempt < self.max_attempts =>
                {
                    tokio::task::yield_now().await;
                }
                // A stream was not at the version an `Emit` required (or the target, on the
                // last attempt): the query did not cover it, so deciding again would decide
                // the same.
                Err(StoreError::Conflict { stream, .. }) => {
                    return Err(CommandError::Conflict {
                        stream,
                        attempts: attempt,
                    });
                }
                Err(StoreError::DuplicateCommand { .. }) => {
                    return self.replay(&target, command_type, context.command_id).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The state folded from the target's events (if the decision reads them) then from every
    /// event `query` selects, the last position read, and the target's version read.
    async fn fold(
        &self,
        target: &StreamId,
        command: &D::Command,
        query: &EventQuery,
    ) -> Result<(D::State, Option<Position>, Version), CommandError<D::Error>> {
        let mut state = D::initial(command);
        let mut version = Version::ZERO;
        if D::READS_TARGET {
            for recorded in self.storage.read_stream(target, Version::START).await? {
                for event in self
                    .upcasters
                    .decode::<D::Event>(&recorded)
                    .map_err(LoadError::from)?
                {
                    D::apply_target(&mut state, &event).map_err(|source| LoadError::History {
                        stream: target.clone(),
                        version: recorded.version,
                        source,
                    })?;
                }
                version = recorded.version;
            }
        }
        let mut last = None;
        loop {
            let from = last.map_or(Position::START, Position::next);
            let page = self.storage.read_query(query, from, PAGE).await?;
            for recorded in &page {
                for event in self
                    .upcasters
                    .decode::<D::Event>(recorded)
                    .map_err(LoadError::from)?
                {
                    D::apply(&mut state, &event);
                }
            }
            match page.last() {
                Some(event) => last = Some(event.position),
                None => return Ok((state, last, version)),
            }
            if page.len() < PAGE {
                return Ok((state, last, version));
            }
        }
    }

    /// The decision's events as appends, one per stream in the order first named, the
    /// target's included (with no events if none go to it, so the record has its stream).
    /// The target's append expects `target_expected` unless the decision said otherwise.
    #[allow(clippy::type_complexity, reason = "a private helper's pair of results")]
    fn appends(
        &self,
        target: &StreamId,
        target_expected: ExpectedVersion,
        emits: Vec<Emit<D::Event>>,
        context: &CommandContext,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Vec<StreamAppend>, Vec<(StreamId, D::Event)>), CommandError<D::Error>> {
        let mut appends: Vec<StreamAppend> = Vec::new();
        let mut events = Vec::with_capacity(emits.len());
        for emit in emits {
            let (event_type, payload) =
                encode_message(&emit.event).map_err(CommandError::Encode)?;
            let event = NewEvent::new(event_type, payload)
                .with_schema_version(D::Event::schema_version(event_type))
                .with_metadata(Metadata {
                    event_id: Uuid::now_v7(),
                    correlation_id: Some(context.correlation_id()),
                    causation_id: Some(context.command_id),
                    command_id: Some(context.command_id),
                    recorded_at: now,
                    headers: context.headers.clone(),
                })
                .with_tags(emit.event.tags());
            match appends.iter_mut().find(|a| a.stream == emit.stream) {
                Some(append) => append.events.push(event),
                None => {
                    let expected = match emit.expected {
                        ExpectedVersion::Any if emit.stream == *target => target_expected,
                        expected => expected,
                    };
                    appends.push(StreamAppend::new(
                        emit.stream.clone(),
                        expected,
                        vec![event],
                    ));
                }
            }
            events.push((emit.stream, emit.event));
        }
        if !appends.iter().any(|a| a.stream == *target) {
            appends.push(StreamAppend::new(target.clone(), target_expected, vec![]));
        }
        Ok((appends, events))
    }

    async fn wait_until_readable(&self, position: Position) {
        let deadline = Instant::now() + VISIBLE_WITHIN;
        while Instant::now() < deadline {
            match self.storage.head().await {
                Ok(head) if head >= position => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(err) => {
                    tracing::warn!(error = %crate::ErrorChain(&err), "reading the head failed");
                    return;
                }
            }
        }
    }

    /// The recorded result of a command id handled before.
    async fn replay(
        &self,
        target: &StreamId,
        command_type: &str,
        command_id: Uuid,
    ) -> Result<Decided<D::Event>, CommandError<D::Error>> {
        let Some(record) = self.storage.find_command(command_id).await? else {
            return Err(CommandError::Store(StoreError::Corrupt {
                position: None,
                what: format!("command {command_id} was reported handled but has no record"),
            }));
        };
        if record.target != *target || record.command_type != command_type {
            return Err(CommandError::CommandIdReused {
                command_id,
                target: record.target,
                command_type: record.command_type,
            });
        }
        match record.outcome {
            Outcome::Accepted { .. } => {
                // The command's events carry its id: read them back from the log by it.
                let mut events = Vec::new();
                let mut streams = Vec::new();
                let mut position = None;
                let mut appended: Vec<(StreamId, Appended)> = Vec::new();
                for recorded in self.command_events(&record).await? {
                    let decoded = self.upcasters.decode::<D::Event>(&recorded);
                    for event in decoded.map_err(LoadError::from)? {
                        events.push(event);
                        streams.push(recorded.stream.clone());
                    }
                    position = Some(recorded.position);
                    let landed = Appended {
                        version: recorded.version,
                        position: Some(recorded.position),
                    };
                    match appended.iter_mut().find(|(s, _)| *s == recorded.stream) {
                        Some((_, a)) => *a = landed,
                        None => appended.push((recorded.stream.clone(), landed)),
                    }
                }
                Ok(Decided {
                    target: target.clone(),
                    appended,
                    position,
                    events,
                    streams,
                    command_id,
                    replayed: true,
                })
            }
            Outcome::Rejected { error, .. } => match error.decode::<D::Error>() {
                Ok(rejection) => Err(CommandError::Rejected(rejection)),
                Err(e) => Err(CommandError::Encode(MessageError::Payload(e))),
            },
        }
    }

    /// The events the recorded command appended, in log order, from the message log (they
    /// carry its correlation id and, in their metadata, its id).
    async fn command_events(
        &self,
        record: &CommandRecord,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let command_id = record.command_id;
        // They were recorded with the command, at the same time.
        let until = record.recorded_at + chrono::Duration::microseconds(1);
        let mut query = crate::store::LogQuery::new()
            .with_kind(crate::store::MessageKind::Event)
            .with_correlation_ids(record.correlation_id)
            .with_time_range(Some(record.recorded_at), Some(until))
            .with_limit(PAGE);
        let mut events = Vec::new();
        loop {
            let page = self.storage.query_log(&query).await?;
            let full = page.len() >= PAGE;
            query.after = page.last().map(|entry| entry.cursor);
            events.extend(page.into_iter().filter_map(|entry| match entry.message {
                crate::store::LoggedMessage::Event(event)
                    if event.metadata.command_id == Some(command_id) =>
                {
                    Some(event)
                }
                _ => None,
            }));
            if !full {
                return Ok(events);
            }
        }
    }
}
