use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::clock::{Clock, SystemClock};
use crate::command::{CommandContext, CommandEnvelope, CommandRecord, EnvelopeError, Outcome};
use crate::event::{EventFilter, Json, RecordedEvent, StreamId};
use crate::message::{DomainEvent, Message, decode_message};
use crate::projection::{Projection, ProjectionError};
use crate::repository::{CommandError, Repository};
use crate::store::{Commit, ProcessSave, ScheduleStore, ScheduledCommand, Storage, StoreError};
use crate::task::Background;
use crate::upcast::Upcasters;
use crate::version::{ExpectedVersion, Position, Version};

/// A long-running business process that reacts to events, keeps state, and sends commands:
/// a saga, such as the registration of one order.
///
/// Like an aggregate it is pure: [`ProcessManager::react`] and [`ProcessManager::on_timeout`]
/// return a [`Reaction`] (the new state, the commands to send, whether it is finished) and do no
/// I/O. The [`ProcessManagerRunner`] routes events to instances, saves each instance's state
/// together with the commands it sends (an outbox), and delivers them; so a crash neither loses
/// nor duplicates a command. Timeouts are durable scheduled messages that come back to
/// [`ProcessManager::on_timeout`] once, after restarts too.
///
/// # Examples
///
/// ```
/// use chrono::Duration;
/// use cqrs_core::{DomainEvent, EventContext, Outgoing, ProcessManager, Reaction, TimeoutContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum OrderEvent {
///     #[serde(rename = "order.placed")]
///     Placed { order: String },
///     #[serde(rename = "order.paid")]
///     Paid { order: String },
/// }
/// impl DomainEvent for OrderEvent {}
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum Timeout {
///     #[serde(rename = "payment.expire")]
///     Expire,
/// }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct Payment { order: String }
///
/// impl ProcessManager for Payment {
///     const NAME: &'static str = "payment";
///     type Event = OrderEvent;
///     type Timeout = Timeout;
///     type Error = std::convert::Infallible;
///
///     fn route(event: &OrderEvent, _stream: &cqrs_core::StreamId) -> Option<String> {
///         match event {
///             OrderEvent::Placed { order } | OrderEvent::Paid { order } => Some(order.clone()),
///         }
///     }
///
///     fn react(state: Option<&Self>, event: &OrderEvent, cx: &EventContext<'_>) -> Result<Reaction<Self>, Self::Error> {
///         Ok(match (state, event) {
///             (None, OrderEvent::Placed { order }) => Reaction::new(Payment { order: order.clone() })
///                 .send(Outgoing::timeout::<Self>(order, &Timeout::Expire).at(cx.now + Duration::minutes(15))),
///             (Some(_), OrderEvent::Paid { .. }) => Reaction::unchanged().complete(),
///             _ => Reaction::unchanged(),
///         })
///     }
///
///     fn on_timeout(_state: &Self, _timeout: Timeout, _cx: &TimeoutContext<'_>) -> Result<Reaction<Self>, Self::Error> {
///         Ok(Reaction::unchanged().complete())
///     }
/// }
/// ```
pub trait ProcessManager: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stream category of this manager's instances (`"{NAME}-{instance}"`) and the address
    /// of its timeouts. It must not contain `-`.
    const NAME: &'static str;
    /// The events it reacts to (an enum over every type it needs, from any aggregate).
    type Event: DomainEvent;
    /// The messages it schedules for itself.
    type Timeout: Message;
    /// Why it refuses an input (the runner logs it and moves on).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The instance `event` belongs to, or `None` if it concerns no instance. `stream` is the
    /// stream it was recorded in, so that events of an aggregate can be routed by its id
    /// without repeating the id in every payload.
    fn route(event: &Self::Event, stream: &StreamId) -> Option<String>;

    /// Reacts to an event (`state` is `None` for an instance not started yet).
    ///
    /// # Errors
    ///
    /// The manager's error for an input it cannot accept in this state.
    fn react(
        state: Option<&Self>,
        event: &Self::Event,
        context: &EventContext<'_>,
    ) -> Result<Reaction<Self>, Self::Error>;

    /// Reacts to one of its timeouts falling due. Not called for finished instances.
    ///
    /// # Errors
    ///
    /// The manager's error for an input it cannot accept in this state.
    fn on_timeout(
        state: &Self,
        timeout: Self::Timeout,
        context: &TimeoutContext<'_>,
    ) -> Result<Reaction<Self>, Self::Error>;
}

/// What a process manager gets with an event.
#[derive(Debug, Clone, Copy)]
pub struct EventContext<'a> {
    /// The instance the event was routed to.
    pub instance: &'a str,
    /// The stored event, with its metadata (correlation and causation ids, time, position).
    pub recorded: &'a RecordedEvent,
    /// The current time, from the runner's clock.
    pub now: DateTime<Utc>,
}

/// What a process manager gets with a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutContext<'a> {
    /// The instance the timeout is for.
    pub instance: &'a str,
    /// The timeout's command id (as [`Outgoing::id`] returned when it was scheduled).
    pub command_id: Uuid,
    /// The current time, from the runner's clock.
    pub now: DateTime<Utc>,
}

/// What a process manager decided: its new state, the commands to send, and whether it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaction<P> {
    /// The new state, or `None` to keep the current one.
    pub state: Option<P>,
    /// Commands to send, now or later.
    pub sends: Vec<Outgoing>,
    /// Scheduled commands to cancel (by [`Outgoing::id`]), with the same save.
    pub cancels: Vec<Uuid>,
    /// Whether the instance is finished (it then ignores everything).
    pub completed: bool,
}

impl<P> Reaction<P> {
    /// Replaces the state with `state`.
    #[must_use]
    pub fn new(state: P) -> Self {
        Self {
            state: Some(state),
            sends: Vec::new(),
            cancels: Vec::new(),
            completed: false,
        }
    }

    /// Keeps the state as it is (for an instance not started yet: nothing happens).
    #[must_use]
    pub fn unchanged() -> Self {
        Self {
            state: None,
            sends: Vec::new(),
            cancels: Vec::new(),
            completed: false,
        }
    }

    /// Sends `command` too.
    #[must_use]
    pub fn send(mut self, command: Outgoing) -> Self {
        self.sends.push(command);
        self
    }

    /// Cancels the scheduled command `id` (a timeout sent earlier, by its [`Outgoing::id`]),
    /// in the same save as the rest of the reaction. A command already being delivered may
    /// still arrive once; [`ProcessManager::on_timeout`] should check the id it expects, as
    /// it always should.
    #[must_use]
    pub fn cancel(mut self, id: Uuid) -> Self {
        self.cancels.push(id);
        self
    }

    /// Marks the instance finished.
    #[must_use]
    pub fn complete(mut self) -> Self {
        self.completed = true;
        self
    }

    /// Whether the reaction changes nothing.
    #[must_use]
    pub fn is_unchanged(&self) -> bool {
        self.state.is_none() && self.sends.is_empty() && self.cancels.is_empty() && !self.completed
    }
}

/// A command a process manager sends: to an aggregate, or to itself as a timeout.
///
/// Building one never fails; a command that does not serialize is reported when the runner
/// saves the reaction.
///
/// # Examples
///
/// ```
/// # use cqrs_core::Outgoing;
/// # #[derive(serde::Serialize)] enum Ping { #[serde(rename = "ping")] Ping }
/// let out = Outgoing::to_stream("pinger-1".parse().unwrap(), &Ping::Ping);
/// assert_eq!(out.command_type(), Some("ping"));
/// assert_eq!(out.due_at(), None, "sent at once");
/// ```
#[derive(Debug, Clone)]
pub struct Outgoing {
    id: Uuid,
    command: Result<(StreamId, &'static str, Json), Arc<EnvelopeError>>,
    due_at: Option<DateTime<Utc>>,
}

impl PartialEq for Outgoing {
    /// Compares target, type, payload (as JSON values) and due time; ids are fresh per
    /// command, so they are left out.
    fn eq(&self, other: &Self) -> bool {
        let same_command = match (&self.command, &other.command) {
            (Ok((t1, c1, p1)), Ok((t2, c2, p2))) => {
                t1 == t2 && c1 == c2 && p1.to_value().ok() == p2.to_value().ok()
            }
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        };
        same_command && self.due_at == other.due_at
    }
}

impl Outgoing {
    /// A command for the aggregate `A` with id `id`.
    #[must_use]
    pub fn to<A: Aggregate>(id: &A::Id, command: &A::Command) -> Self {
        match A::stream_id(id) {
            Ok(stream) => Self::to_stream(stream, command),
            Err(err) => Self::failed(EnvelopeError::Target(err)),
        }
    }

    /// A timeout for instance `instance` of the process manager `P`.
    #[must_use]
    pub fn timeout<P: ProcessManager>(instance: &str, timeout: &P::Timeout) -> Self {
        match StreamId::for_aggregate(P::NAME, &instance) {
            Ok(stream) => Self::to_stream(stream, timeout),
            Err(err) => Self::failed(EnvelopeError::Target(err)),
        }
    }

    /// A command for whatever handles `target`.
    #[must_use]
    pub fn to_stream<C: Serialize + ?Sized>(target: StreamId, command: &C) -> Self {
        let command = crate::message::encode_message(command)
            .map(|(name, payload)| (target, name, payload))
            .map_err(|e| Arc::new(EnvelopeError::Message(e)));
        Self {
            id: Uuid::now_v7(),
            command,
            due_at: None,
        }
    }

    fn failed(why: EnvelopeError) -> Self {
        Self {
            id: Uuid::now_v7(),
            command: Err(Arc::new(why)),
            due_at: None,
        }
    }

    /// Delivers it at `due_at` instead of at once.
    #[must_use]
    pub fn at(mut self, due_at: DateTime<Utc>) -> Self {
        self.due_at = Some(crate::clock::truncate_to_micros(due_at));
        self
    }

    /// Uses `id` as the command id.
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// The command id: keep it to recognize the reply or the timeout later.
    #[must_use]
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// When it is due (`None`: at once).
    #[must_use]
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        self.due_at
    }

    /// The command's type name, if it serialized.
    #[must_use]
    pub fn command_type(&self) -> Option<&'static str> {
        self.command.as_ref().ok().map(|(_, name, _)| *name)
    }

    /// The target stream, if the command was built.
    #[must_use]
    pub fn target(&self) -> Option<&StreamId> {
        self.command.as_ref().ok().map(|(target, _, _)| target)
    }

    /// The command's payload, if it serialized.
    #[must_use]
    pub fn payload(&self) -> Option<&Json> {
        self.command.as_ref().ok().map(|(_, _, payload)| payload)
    }

    /// Puts the command in an envelope carrying the lineage of the message that caused it:
    /// its correlation id (or, if it had none, its own id, which starts the flow), its id as
    /// causation id, and its headers.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Command`] if the command did not serialize.
    pub fn into_scheduled(
        self,
        cause: &Cause<'_>,
        now: DateTime<Utc>,
    ) -> Result<ScheduledCommand, ProcessError> {
        let (target, command_type, payload) = self.command.map_err(ProcessError::Command)?;
        // The framework's own `cqrs.*` headers describe one stored message (where a migration
        // copied it from, say), not the flow: they are not inherited. The trace context is the
        // sending span's, when there is one (see `crate::trace`).
        let mut headers: crate::event::Headers = cause
            .headers
            .iter()
            .filter(|(name, _)| !name.starts_with("cqrs."))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        crate::trace::inject_current(&mut headers);
        Ok(ScheduledCommand {
            command: CommandEnvelope {
                id: self.id,
                target,
                command_type: command_type.to_owned(),
                payload,
                correlation_id: Some(cause.correlation_id.unwrap_or(cause.id)),
                causation_id: Some(cause.id),
                headers,
            },
            due_at: self.due_at.unwrap_or(now),
            attempts: 0,
        })
    }
}

/// The message that caused a process manager's commands: what their lineage is copied from.
#[derive(Debug, Clone, Copy)]
pub struct Cause<'a> {
    /// The message's id (an event id or a command id).
    pub id: Uuid,
    /// The flow it belongs to.
    pub correlation_id: Option<Uuid>,
    /// Its headers.
    pub headers: &'a crate::event::Headers,
}

impl<'a> Cause<'a> {
    /// The lineage of a stored event.
    #[must_use]
    pub fn event(event: &'a RecordedEvent) -> Self {
        Self {
            id: event.metadata.event_id,
            correlation_id: event.metadata.correlation_id,
            headers: &event.metadata.headers,
        }
    }

    /// The lineage of a command.
    #[must_use]
    pub fn command(command: &'a CommandEnvelope) -> Self {
        Self {
            id: command.id,
            correlation_id: command.correlation_id,
            headers: &command.headers,
        }
    }
}

/// Why a process manager could not handle an input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// An event could not be decoded.
    #[error(transparent)]
    Decode(#[from] crate::upcast::DecodeError),
    /// An instance id makes no valid stream id.
    #[error("instance {instance:?} makes no valid stream id")]
    InstanceId {
        /// The instance id.
        instance: String,
        /// Why.
        #[source]
        source: crate::event::InvalidStreamId,
    },
    /// A stored state does not decode as the process manager's state.
    #[error("the stored state of {id} does not decode")]
    StateDecode {
        /// The instance.
        id: StreamId,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A state does not serialize.
    #[error("the state of {id} does not serialize")]
    StateEncode {
        /// The instance.
        id: StreamId,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A scheduled timeout does not decode as the process manager's timeout.
    #[error("timeout {command_type} for {id} does not decode")]
    TimeoutDecode {
        /// The instance.
        id: StreamId,
        /// The timeout's type name.
        command_type: String,
        /// Why.
        #[source]
        source: crate::message::MessageError,
    },
    /// A command the reaction sends does not serialize, or names an invalid target.
    #[error("a command cannot be sent")]
    Command(#[source] Arc<EnvelopeError>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The instance kept changing under concurrent saves.
    #[error("process {0} kept changing; gave up")]
    Conflict(StreamId),
    /// The reaction sends commands for an instance that has no state.
    #[error("process {0} sends commands but has no state")]
    NoState(StreamId),
}

impl ProcessError {
    /// Whether trying again cannot help: the input or the state is wrong, not the store.
    /// [`ProcessError::Store`] and [`ProcessError::Conflict`] are the passing ones.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Store(_) | Self::Conflict(_))
    }
}

/// Receives serialized commands: what routers, dispatchers and outboxes deliver to.
///
/// [`Repository`] implements it for its aggregate's commands, [`ProcessManagerRunner`] for its
/// timeouts, and [`CommandRouter`] dispatches to either by the target's stream category.
#[async_trait]
pub trait CommandHandler: Send + Sync + 'static {
    /// Handles `envelope`, deduplicating by its id.
    ///
    /// # Errors
    ///
    /// [`DispatchError::Invalid`] for a command that can never be handled (it is dropped and
    /// logged), [`DispatchError::Failed`] for a failure worth retrying.
    async fn deliver(&self, envelope: CommandEnvelope) -> Result<Delivery, DispatchError>;
}

/// What became of a delivered command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Handled.
    Accepted,
    /// Handled, and rejected by the domain (recorded in the message log).
    Rejected(String),
    /// Handled before; nothing was done again.
    Duplicate,
    /// Not for anyone any more (a timeout of a finished process).
    Ignored,
}

/// Why a command could not be delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The command can never be handled: unknown target, undecodable payload.
    #[error("undeliverable command: {0}")]
    Invalid(String),
    /// Handling failed for a reason that may pass (a store error, a conflict storm).
    #[error("delivery failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[async_trait]
impl<A: Aggregate> CommandHandler for Repository<A> {
    async fn deliver(&self, envelope: CommandEnvelope) -> Result<Delivery, DispatchError> {
        if envelope.target.category() != A::TYPE {
            return Err(DispatchError::Invalid(format!(
                "{} is not a {} stream",
                envelope.target,
                A::TYPE
            )));
        }
        let id = envelope
            .target
            .local_id()
            .and_then(|s| s.parse::<A::Id>().ok())
            .ok_or_else(|| {
                DispatchError::Invalid(format!(
                    "{} does not name a {} id",
                    envelope.target,
                    A::TYPE
                ))
            })?;
        let command =
            decode_message::<A::Command>(&envelope.command_type, envelope.payload.as_str())
                .map_err(|e| DispatchError::Invalid(format!("{}: {e}", envelope.command_type)))?;
        match self.handle_with(&id, command, envelope.context()).await {
            Ok(handled) if handled.replayed => Ok(Delivery::Duplicate),
            Ok(_) => Ok(Delivery::Accepted),
            Err(CommandError::Rejected(e)) => Ok(Delivery::Rejected(e.to_string())),
            Err(e @ (CommandError::Encode(_) | CommandError::CommandIdReused { .. })) => {
                Err(DispatchError::Invalid(e.to_string()))
            }
            Err(e) => Err(DispatchError::Failed(Box::new(e))),
        }
    }
}

/// Routes commands to handlers by the stream category of their target.
///
/// # Examples
///
/// ```
/// # use std::sync::Arc;
/// # use cqrs_core::{CommandRouter, InMemoryEventStore};
/// let router = CommandRouter::new();
/// assert!(router.categories().is_empty());
/// ```
#[derive(Clone, Default)]
pub struct CommandRouter {
    routes: HashMap<String, Arc<dyn CommandHandler>>,
}

impl CommandRouter {
    /// A router with no routes.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends commands whose target is in `category` to `handler`.
    ///
    /// # Panics
    ///
    /// Panics if `category` is already routed: one of the two handlers would silently never
    /// receive anything (an aggregate and a process manager with the same name, say).
    #[must_use]
    pub fn route(mut self, category: impl Into<String>, handler: Arc<dyn CommandHandler>) -> Self {
        let category = category.into();
        assert!(
            !self.routes.contains_key(&category),
            "the category {category:?} is routed twice"
        );
        self.routes.insert(category, handler);
        self
    }

    /// Sends commands for the aggregate `A` to `repository`.
    #[must_use]
    pub fn route_aggregate<A: Aggregate>(self, repository: Repository<A>) -> Self {
        self.route(A::TYPE, Arc::new(repository))
    }

    /// Sends the timeouts of the process manager `P` to `runner`.
    #[must_use]
    pub fn route_process<P: ProcessManager>(self, runner: ProcessManagerRunner<P>) -> Self {
        self.route(P::NAME, Arc::new(runner))
    }

    /// The categories routed.
    #[must_use]
    pub fn categories(&self) -> Vec<&str> {
        let mut categories: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        categories.sort_unstable();
        categories
    }
}

impl fmt::Debug for CommandRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandRouter")
            .field("categories", &self.categories())
            .finish()
    }
}

#[async_trait]
impl CommandHandler for CommandRouter {
    async fn deliver(&self, envelope: CommandEnvelope) -> Result<Delivery, DispatchError> {
        let Some(handler) = self.routes.get(envelope.target.category()) else {
            return Err(DispatchError::Invalid(format!(
                "no handler for {}",
                envelope.target
            )));
        };
        handler.deliver(envelope).await
    }
}

/// Wakes a [`CommandDispatcher`] when new commands are scheduled in this process.
#[derive(Debug, Clone, Default)]
pub struct DispatchWaker {
    notify: Arc<Notify>,
}

impl DispatchWaker {
    /// A waker no dispatcher listens to yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the dispatcher (a wake-up sent while it is busy is kept for its next wait).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Runs a [`ProcessManager`]: feeds it events, saves its instances with their outboxes, and
/// handles its timeouts.
///
/// On the event side it is a [`Projection`] (checkpoint `process:{NAME}`), so a
/// [`ProjectionRunner`](crate::ProjectionRunner) drives it: catch-up, live, retries. An
/// instance remembers the position of the last event it handled and skips events it has seen,
/// so redelivery after a crash changes nothing. On the timeout side it is a
/// [`CommandHandler`]: route its category to it.
pub struct ProcessManagerRunner<P> {
    storage: Arc<dyn Storage>,
    upcasters: Upcasters,
    clock: Arc<dyn Clock>,
    waker: Option<DispatchWaker>,
    concurrency: usize,
    _process: PhantomData<fn() -> P>,
}

impl<P> Clone for ProcessManagerRunner<P> {
    fn clone(&self) -> Self {
        Self {
            storage: Arc::clone(&self.storage),
            upcasters: self.upcasters.clone(),
            clock: Arc::clone(&self.clock),
            waker: self.waker.clone(),
            concurrency: self.concurrency,
            _process: PhantomData,
        }
    }
}

impl<P: ProcessManager> fmt::Debug for ProcessManagerRunner<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessManagerRunner")
            .field("process", &P::NAME)
            .finish_non_exhaustive()
    }
}

const SAVE_ATTEMPTS: u32 = 10;

/// An instance and the parts of one event routed to it.
type Routed<P> = (String, Vec<<P as ProcessManager>::Event>);

/// An event waiting for its instance, with the parts routed to it.
type Queued<'a, P> = (&'a RecordedEvent, Vec<<P as ProcessManager>::Event>);

/// Instances (of a process manager) or targets (of the dispatcher) handled at once: enough
/// for a group commit to gather many saves into one sync.
const DEFAULT_CONCURRENCY: usize = 16;

impl<P: ProcessManager> ProcessManagerRunner<P> {
    /// A runner over `storage` with the system clock and no upcasters.
    ///
    /// # Panics
    ///
    /// Panics if [`ProcessManager::NAME`] is empty or contains `-` (see [`Repository::new`]).
    #[must_use]
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        crate::event::assert_category("ProcessManager::NAME", P::NAME);
        Self {
            storage,
            upcasters: Upcasters::new(),
            clock: Arc::new(SystemClock),
            waker: None,
            concurrency: DEFAULT_CONCURRENCY,
            _process: PhantomData,
        }
    }

    /// Runs up to `instances` instances at once within a batch of events (16 by default, at
    /// least 1; 1 handles every event in log order).
    #[must_use]
    pub fn with_concurrency(mut self, instances: usize) -> Self {
        self.concurrency = instances.max(1);
        self
    }

    /// Decodes events through `upcasters`.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Uses `clock` for "now".
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Wakes `waker` after saving commands to send.
    #[must_use]
    pub fn with_waker(mut self, waker: DispatchWaker) -> Self {
        self.waker = Some(waker);
        self
    }

    /// The stream id of `instance`.
    ///
    /// # Errors
    ///
    /// [`ProcessError::InstanceId`] if it makes an invalid stream id.
    pub fn instance_id(instance: &str) -> Result<StreamId, ProcessError> {
        StreamId::for_aggregate(P::NAME, &instance).map_err(|source| ProcessError::InstanceId {
            instance: instance.to_owned(),
            source,
        })
    }

    /// Loads the state of `instance`, if it was ever saved, with whether it is finished.
    ///
    /// # Errors
    ///
    /// [`ProcessError`] if the store fails or the state does not decode.
    pub async fn load(&self, instance: &str) -> Result<Option<(P, bool)>, ProcessError> {
        let Some(stored) = self
            .storage
            .load_process(&Self::instance_id(instance)?)
            .await?
        else {
            return Ok(None);
        };
        let state = stored
            .state
            .decode::<P>()
            .map_err(|source| ProcessError::StateDecode {
                id: stored.id.clone(),
                source,
            })?;
        Ok(Some((state, stored.completed)))
    }

    /// Handles one stored event: routes it, reacts, and saves each affected instance with its
    /// outbox. Events an instance has already handled are skipped.
    ///
    /// An event the manager cannot take — it refuses it, its reaction sends commands for an
    /// instance that has no state, a command does not serialize, the stored state does not
    /// decode — is logged at error level and skipped: retrying would not change the outcome,
    /// and one bad event must not stop every other instance.
    ///
    /// # Errors
    ///
    /// [`ProcessError`] if the event does not decode (retrying after an upcaster is deployed
    /// helps) or the store fails.
    pub async fn handle_event(&self, recorded: &RecordedEvent) -> Result<(), ProcessError> {
        for (instance, events) in self.route(recorded)? {
            self.react_logged(&instance, recorded, &events).await?;
        }
        Ok(())
    }

    /// The instances `recorded` goes to, each with its part of the event (a split, upcast event
    /// may route several parts to one instance: they stay together).
    fn route(&self, recorded: &RecordedEvent) -> Result<Vec<Routed<P>>, ProcessError> {
        let mut by_instance: Vec<Routed<P>> = Vec::new();
        for event in self.upcasters.decode::<P::Event>(recorded)? {
            let Some(instance) = P::route(&event, &recorded.stream) else {
                continue;
            };
            match by_instance.iter_mut().find(|(i, _)| *i == instance) {
                Some((_, events)) => events.push(event),
                None => by_instance.push((instance, vec![event])),
            }
        }
        Ok(by_instance)
    }

    /// Reacts and saves; an event the instance can never take is logged and skipped.
    async fn react_logged(
        &self,
        instance: &str,
        recorded: &RecordedEvent,
        events: &[P::Event],
    ) -> Result<(), ProcessError> {
        let span = tracing::info_span!(
            "cqrs.process",
            process = P::NAME,
            instance = %instance,
            position = recorded.position.get(),
            event_type = %recorded.event_type,
            "otel.kind" = "consumer",
            "messaging.system" = "cqrs",
            "messaging.operation.type" = "process",
            "messaging.destination.name" = %recorded.stream,
            "messaging.message.id" = %recorded.metadata.event_id,
        );
        crate::trace::continue_from(&span, &recorded.metadata.headers);
        match self
            .react_and_save(instance, recorded, events)
            .instrument(span)
            .await
        {
            Ok(()) => {
                crate::metric::process_event(P::NAME, "handled");
                Ok(())
            }
            Err(err) if !err.is_permanent() => {
                crate::metric::process_event(P::NAME, "failed");
                Err(err)
            }
            Err(err) => {
                crate::metric::process_event(P::NAME, "skipped");
                tracing::error!(
                    process = P::NAME,
                    %instance,
                    position = recorded.position.get(),
                    event_type = %recorded.event_type,
                    error = %crate::ErrorChain(&err),
                    "process manager cannot take this event; skipping it"
                );
                Ok(())
            }
        }
    }

    /// Handles a batch of events: each instance takes its events in log order, and instances
    /// run beside each other (up to [`with_concurrency`](Self::with_concurrency)), so that a
    /// burst on one instance does not hold the others up and the store can commit their saves
    /// together.
    ///
    /// The events after one that does not decode are left for the retry, as
    /// [`handle_event`](Self::handle_event) would.
    ///
    /// # Errors
    ///
    /// The first [`ProcessError`] that is not permanent; instances that saved keep their saves
    /// (a retry skips what they handled).
    pub async fn handle_events(&self, events: &[RecordedEvent]) -> Result<(), ProcessError> {
        let mut order: Vec<String> = Vec::new();
        let mut queues: HashMap<String, Vec<Queued<'_, P>>> = HashMap::new();
        let mut undecodable = None;
        for recorded in events {
            match self.route(recorded) {
                Ok(routed) => {
                    for (instance, parts) in routed {
                        queues
                            .entry(instance)
                            .or_insert_with_key(|key| {
                                order.push(key.clone());
                                Vec::new()
                            })
                            .push((recorded, parts));
                    }
                }
                Err(err) => {
                    undecodable = Some(err);
                    break;
                }
            }
        }
        let runs = order.into_iter().map(|instance| {
            let queue = queues.remove(&instance).unwrap_or_default();
            async move {
                for (recorded, parts) in queue {
                    self.react_logged(&instance, recorded, &parts).await?;
                }
                Ok::<(), ProcessError>(())
            }
        });
        let mut runs = futures::stream::iter(runs).buffer_unordered(self.concurrency);
        while let Some(result) = runs.next().await {
            result?;
        }
        undecodable.map_or(Ok(()), Err)
    }

    async fn react_and_save(
        &self,
        instance: &str,
        recorded: &RecordedEvent,
        events: &[P::Event],
    ) -> Result<(), ProcessError> {
        let id = Self::instance_id(instance)?;
        for _ in 0..SAVE_ATTEMPTS {
            let stored = self.storage.load_process(&id).await?;
            let (mut state, version) =
                match &stored {
                    Some(s) if s.completed || s.last_position >= recorded.position => return Ok(()),
                    Some(s) => (
                        Some(s.state.decode::<P>().map_err(|source| {
                            ProcessError::StateDecode {
                                id: s.id.clone(),
                                source,
                            }
                        })?),
                        s.version,
                    ),
                    None => (None, Version::ZERO),
                };
            let now = self.clock.now();
            let context = EventContext {
                instance,
                recorded,
                now,
            };
            let mut sends = Vec::new();
            let mut cancels = Vec::new();
            let mut completed = false;
            let mut changed = false;
            for event in events {
                match P::react(state.as_ref(), event, &context) {
                    Ok(reaction) => {
                        changed |= !reaction.is_unchanged();
                        if let Some(new) = reaction.state {
                            state = Some(new);
                        }
                        sends.extend(reaction.sends);
                        cancels.extend(reaction.cancels);
                        completed |= reaction.completed;
                    }
                    Err(err) => {
                        tracing::warn!(process = %id, position = recorded.position.get(), event_type = %recorded.event_type, error = %crate::ErrorChain(&err), "process manager refused an event; skipping it");
                    }
                }
                if completed {
                    break;
                }
            }
            if !changed {
                return Ok(());
            }
            let Some(state) = state else {
                return Err(ProcessError::NoState(id));
            };
            let cause = Cause::event(recorded);
            let outbox = sends
                .into_iter()
                .map(|s| s.into_scheduled(&cause, now))
                .collect::<Result<Vec<_>, _>>()?;
            let has_outbox = !outbox.is_empty();
            let save = ProcessSave {
                id: id.clone(),
                expected: version,
                state: Json::encode(&state).map_err(|source| ProcessError::StateEncode {
                    id: id.clone(),
                    source,
                })?,
                completed,
                last_position: recorded.position,
                outbox,
                cancel: cancels,
                handled: None,
                saved_at: now,
            };
            match self.storage.save_process(save).await {
                Ok(()) => {
                    if has_outbox && let Some(waker) = &self.waker {
                        waker.wake();
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                Err(err) => return Err(err.into()),
            }
        }
        Err(ProcessError::Conflict(id))
    }

    async fn handle_timeout(
        &self,
        mut envelope: CommandEnvelope,
    ) -> Result<Delivery, ProcessError> {
        // The timeout's record, and what it sends, carry the span that delivered it.
        crate::trace::inject_current(&mut envelope.headers);
        let instance = envelope.target.local_id().unwrap_or_default().to_owned();
        for _ in 0..SAVE_ATTEMPTS {
            let Some(stored) = self.storage.load_process(&envelope.target).await? else {
                return Ok(Delivery::Ignored);
            };
            if stored.completed {
                return Ok(Delivery::Ignored);
            }
            let state = stored
                .state
                .decode::<P>()
                .map_err(|source| ProcessError::StateDecode {
                    id: envelope.target.clone(),
                    source,
                })?;
            let timeout =
                decode_message::<P::Timeout>(&envelope.command_type, envelope.payload.as_str())
                    .map_err(|source| ProcessError::TimeoutDecode {
                        id: envelope.target.clone(),
                        command_type: envelope.command_type.clone(),
                        source,
                    })?;
            let now = self.clock.now();
            let context = TimeoutContext {
                instance: &instance,
                command_id: envelope.id,
                now,
            };
            let version = stored.version.next();
            let (reaction, outcome, delivery) = match P::on_timeout(&state, timeout, &context) {
                Ok(reaction) => (
                    reaction,
                    Outcome::Accepted { version, events: 0 },
                    Delivery::Accepted,
                ),
                Err(err) => {
                    tracing::warn!(process = %envelope.target, error = %crate::ErrorChain(&err), "process manager refused a timeout");
                    let message = err.to_string();
                    let outcome = Outcome::Rejected {
                        error: Json::encode(&message).unwrap_or_else(|_| Json::null()),
                        message: message.clone(),
                    };
                    (Reaction::unchanged(), outcome, Delivery::Rejected(message))
                }
            };
            let cause = Cause::command(&envelope);
            let outbox = reaction
                .sends
                .into_iter()
                .map(|s| s.into_scheduled(&cause, now))
                .collect::<Result<Vec<_>, _>>()?;
            let has_outbox = !outbox.is_empty();
            let new_state = reaction.state.unwrap_or(state);
            // The save records the timeout as handled (or refused) in the message log; that
            // record is what makes a redelivered copy a duplicate.
            let save = ProcessSave {
                id: envelope.target.clone(),
                expected: stored.version,
                state: Json::encode(&new_state).map_err(|source| ProcessError::StateEncode {
                    id: envelope.target.clone(),
                    source,
                })?,
                completed: reaction.completed,
                last_position: stored.last_position,
                outbox,
                cancel: reaction.cancels,
                handled: Some(CommandRecord::from_envelope(&envelope, now, outcome)),
                saved_at: now,
            };
            match self.storage.save_process(save).await {
                Ok(()) => {
                    if has_outbox && let Some(waker) = &self.waker {
                        waker.wake();
                    }
                    return Ok(delivery);
                }
                Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                Err(StoreError::DuplicateCommand { .. }) => return Ok(Delivery::Duplicate),
                Err(err) => return Err(err.into()),
            }
        }
        Err(ProcessError::Conflict(envelope.target))
    }
}

#[async_trait]
impl<P: ProcessManager> Projection for ProcessManagerRunner<P> {
    fn name(&self) -> &str {
        P::NAME
    }

    fn filter(&self) -> EventFilter {
        self.upcasters
            .expand_filter(EventFilter::all().with_types(P::Event::event_types().iter().copied()))
    }

    fn key(&self) -> String {
        format!("process:{}", P::NAME)
    }

    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        Ok(self.storage.load_checkpoint(&Projection::key(self)).await?)
    }

    async fn apply(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        self.handle_events(events)
            .await
            .map_err(ProjectionError::from_error)?;
        Ok(self
            .storage
            .save_checkpoint(&Projection::key(self), checkpoint)
            .await?)
    }

    async fn reset(&self) -> Result<(), ProjectionError> {
        // Replaying a process manager would send its commands again.
        Err(ProjectionError::new(
            "a process manager cannot be rebuilt: it would send its commands again",
        ))
    }
}

#[async_trait]
impl<P: ProcessManager> CommandHandler for ProcessManagerRunner<P> {
    async fn deliver(&self, envelope: CommandEnvelope) -> Result<Delivery, DispatchError> {
        if envelope.target.category() != P::NAME {
            return Err(DispatchError::Invalid(format!(
                "{} is not a {} instance",
                envelope.target,
                P::NAME
            )));
        }
        self.handle_timeout(envelope).await.map_err(|e| {
            if e.is_permanent() {
                DispatchError::Invalid(crate::ErrorChain(&e).to_string())
            } else {
                DispatchError::Failed(Box::new(e))
            }
        })
    }
}

/// Delivers scheduled commands (timeouts and outboxes) when they fall due.
///
/// It claims due commands with a lease, hands each to its [`CommandHandler`] (usually a
/// [`CommandRouter`]), and removes the delivered ones. A command whose delivery fails is
/// retried when its lease runs out; one that can never be delivered is recorded in the message
/// log as rejected and dropped. Time comes from the [`Clock`], so tests fire a 29-minute timeout
/// by advancing a [`ManualClock`](crate::ManualClock).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{CommandDispatcher, CommandRouter, InMemoryEventStore};
///
/// # tokio_test::block_on(async {
/// let store = Arc::new(InMemoryEventStore::new());
/// let dispatcher = CommandDispatcher::new(store, Arc::new(CommandRouter::new()));
/// assert_eq!(dispatcher.run_due().await?, 0, "nothing scheduled");
/// # Ok::<(), cqrs_core::StoreError>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct CommandDispatcher {
    storage: Arc<dyn Storage>,
    handler: Arc<dyn CommandHandler>,
    clock: Arc<dyn Clock>,
    waker: DispatchWaker,
    lease: chrono::Duration,
    batch: usize,
    idle_poll: chrono::Duration,
    max_attempts: u32,
    concurrency: usize,
}

impl fmt::Debug for CommandDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandDispatcher")
            .field("lease", &self.lease)
            .field("batch", &self.batch)
            .field("max_attempts", &self.max_attempts)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl CommandDispatcher {
    /// A dispatcher over `storage` delivering to `handler`, on the system clock.
    #[must_use]
    pub fn new(storage: Arc<dyn Storage>, handler: Arc<dyn CommandHandler>) -> Self {
        Self {
            storage,
            handler,
            clock: Arc::new(SystemClock),
            waker: DispatchWaker::new(),
            lease: chrono::Duration::seconds(30),
            batch: 64,
            idle_poll: chrono::Duration::seconds(1),
            max_attempts: 10,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Uses `clock` for due times.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Listens to `waker` (give the same waker to the process-manager runners).
    #[must_use]
    pub fn with_waker(mut self, waker: DispatchWaker) -> Self {
        self.waker = waker;
        self
    }

    /// Hides a claimed command from other dispatchers for `lease` (30 s by default, at least
    /// 1 s): also the pause before a failed delivery is tried again.
    #[must_use]
    pub fn with_lease(mut self, lease: chrono::Duration) -> Self {
        self.lease = lease.max(chrono::Duration::seconds(1));
        self
    }

    /// Checks the store at least this often while idle (1 s by default, at least 10 ms), for
    /// commands scheduled by other processes.
    #[must_use]
    pub fn with_idle_poll(mut self, every: chrono::Duration) -> Self {
        self.idle_poll = every.max(chrono::Duration::milliseconds(10));
        self
    }

    /// Gives a command up after `attempts` failed deliveries (10 by default, at least 1): it is
    /// then parked as a dead letter ([`ScheduleStore::park`]) until an operator retries or
    /// discards it; a store that keeps no dead letters records it as rejected in the message
    /// log and drops it.
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Delivers to up to `targets` targets at once (16 by default, at least 1); each target
    /// still takes its own commands one at a time, in the order they fell due.
    #[must_use]
    pub fn with_concurrency(mut self, targets: usize) -> Self {
        self.concurrency = targets.max(1);
        self
    }

    /// The waker that makes this dispatcher look for new commands.
    #[must_use]
    pub fn waker(&self) -> DispatchWaker {
        self.waker.clone()
    }

    /// Delivers every command due now, and returns how many were finished with (delivered, or
    /// given up and parked).
    ///
    /// A delivery that fails, whether for a passing reason or because this build cannot handle
    /// the command (an unknown type during a rolling upgrade, say), is tried again when its
    /// lease ends; after [`CommandDispatcher::with_max_attempts`] attempts it is given up and
    /// parked as a dead letter.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if claiming or completing fails.
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        let mut handled = 0;
        loop {
            let now = self.clock.now();
            let due = self.storage.claim_due(now, self.batch, self.lease).await?;
            let claimed = due.len();
            crate::metric::due(claimed);
            // Each target takes its commands in the order they fell due; targets run beside
            // each other, so one busy aggregate does not hold up the rest and the store can
            // commit their writes together.
            let mut order: Vec<StreamId> = Vec::new();
            let mut queues: HashMap<StreamId, Vec<ScheduledCommand>> = HashMap::new();
            for scheduled in due {
                queues
                    .entry(scheduled.command.target.clone())
                    .or_insert_with_key(|key| {
                        order.push(key.clone());
                        Vec::new()
                    })
                    .push(scheduled);
            }
            let runs = order.into_iter().map(|target| {
                let queue = queues.remove(&target).unwrap_or_default();
                async move {
                    let mut done = Vec::with_capacity(queue.len());
                    let mut parked = 0;
                    for scheduled in queue {
                        match self.deliver_one(scheduled, now).await? {
                            Attempt::Finished(id) => done.push(id),
                            Attempt::Parked => parked += 1,
                            Attempt::Failed => {}
                        }
                    }
                    Ok::<_, StoreError>((done, parked))
                }
            });
            let mut runs = futures::stream::iter(runs).buffer_unordered(self.concurrency);
            let mut done = Vec::with_capacity(claimed);
            let mut failure = None;
            while let Some(result) = runs.next().await {
                match result {
                    Ok((ids, parked)) => {
                        done.extend(ids);
                        handled += parked;
                    }
                    Err(err) => {
                        failure.get_or_insert(err);
                    }
                }
            }
            handled += done.len();
            if !done.is_empty() {
                self.storage.complete_scheduled(&done).await?;
            }
            if let Some(err) = failure {
                return Err(err);
            }
            if claimed < self.batch {
                crate::metric::due(0);
                return Ok(handled);
            }
        }
    }

    /// Delivers one claimed command.
    async fn deliver_one(
        &self,
        scheduled: ScheduledCommand,
        now: DateTime<Utc>,
    ) -> Result<Attempt, StoreError> {
        let envelope = scheduled.command;
        let id = envelope.id;
        let due_at = scheduled.due_at;
        let span = tracing::info_span!(
            "cqrs.dispatch",
            command = %envelope.command_type,
            command_id = %id,
            target = %envelope.target,
            attempt = scheduled.attempts,
            "otel.kind" = "consumer",
            "messaging.system" = "cqrs",
            "messaging.operation.type" = "process",
            "messaging.destination.name" = %envelope.target,
            "messaging.message.id" = %id,
        );
        // A timeout delivered an hour later is still part of the trace that scheduled it.
        crate::trace::continue_from(&span, &envelope.headers);
        let error = match self
            .handler
            .deliver(envelope.clone())
            .instrument(span)
            .await
        {
            Ok(delivery) => {
                tracing::debug!(command_id = %id, ?delivery, "delivered");
                crate::metric::delivery(&envelope.command_type, "delivered");
                crate::metric::lateness(crate::metric::seconds_between(due_at, self.clock.now()));
                return Ok(Attempt::Finished(id));
            }
            Err(err) => err,
        };
        if scheduled.attempts < self.max_attempts {
            tracing::warn!(command_id = %id, command = %envelope.command_type, attempt = scheduled.attempts, error = %crate::ErrorChain(&error), "delivery failed; it will be tried again");
            crate::metric::delivery(&envelope.command_type, "retry");
            return Ok(Attempt::Failed);
        }
        crate::metric::delivery(&envelope.command_type, "dead_letter");
        let mut why = format!(
            "gave up after {} attempt{}: {}",
            scheduled.attempts,
            if scheduled.attempts == 1 { "" } else { "s" },
            crate::ErrorChain(&error)
        );
        truncate_reason(&mut why);
        if self.storage.keeps_dead_letters() {
            let parked = self
                .storage
                .park(id, scheduled.attempts, &why, self.clock.now())
                .await?;
            if parked {
                tracing::error!(command_id = %id, command = %envelope.command_type, target = %envelope.target, reason = %why, "parked an undeliverable command as a dead letter");
            } else {
                // Another dispatcher, which claimed it after this one's lease ended, holds it
                // or parked it first, or it was completed meanwhile: not this one's to drop.
                tracing::warn!(command_id = %id, command = %envelope.command_type, reason = %why, "an undeliverable command was parked or completed elsewhere meanwhile");
            }
            return Ok(Attempt::Parked);
        }
        // The store keeps no dead letters: the message log is the only trace left.
        tracing::error!(command_id = %id, command = %envelope.command_type, target = %envelope.target, reason = %why, "dropping an undeliverable command");
        record_rejected(&*self.storage, &envelope, &why, now).await?;
        Ok(Attempt::Finished(id))
    }

    /// Runs in the background until stopped: delivers due commands, then sleeps until the next
    /// one is due, a [`DispatchWaker`] wakes it, or the idle poll comes round.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    #[must_use]
    pub fn spawn(self) -> DispatcherHandle {
        let task = Background::spawn(move |mut stop| async move {
            let mut counted: Option<std::time::Instant> = None;
            loop {
                let ran = self.run_due().await;
                if counted.is_none_or(|at| at.elapsed() >= PARKED_COUNTED_EVERY) {
                    counted = Some(std::time::Instant::now());
                    match self.storage.count_parked(PARKED_COUNTED_UP_TO).await {
                        Ok(parked) => crate::metric::parked(parked),
                        Err(err) => {
                            tracing::warn!(error = %crate::ErrorChain(&err), "counting dead letters failed");
                        }
                    }
                }
                let next = match ran {
                    Ok(_) => self.storage.next_due().await.unwrap_or_else(|err| {
                        tracing::warn!(error = %crate::ErrorChain(&err), "reading the next due time failed");
                        None
                    }),
                    Err(err) => {
                        tracing::warn!(error = %crate::ErrorChain(&err), "delivering scheduled commands failed; retrying");
                        None
                    }
                };
                let now = self.clock.now();
                let poll = now
                    .checked_add_signed(self.idle_poll)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                let deadline = next.map_or(poll, |due| due.min(poll));
                tokio::select! {
                    () = self.clock.sleep_until(deadline) => {}
                    () = self.waker.notify.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        DispatcherHandle { task }
    }
}

/// How often a running dispatcher counts the dead letters for its metric.
const PARKED_COUNTED_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The most dead letters a count reads: past this many, the count says "at least".
const PARKED_COUNTED_UP_TO: usize = 100_000;

/// What became of one claimed command.
enum Attempt {
    /// Delivered, or given up where the store keeps no dead letters: complete it.
    Finished(Uuid),
    /// Given up and parked: it stays in the schedule, out of reach of claims.
    Parked,
    /// Failed; tried again when its lease ends.
    Failed,
}

/// The longest reason a dead letter keeps, in bytes: an error chain can be long, and the
/// operator needs its head.
const MAX_REASON: usize = 2_000;

/// Bounds a reason to [`MAX_REASON`] and drops NUL characters, which some databases refuse
/// in text.
fn truncate_reason(why: &mut String) {
    if why.contains('\0') {
        *why = why.replace('\0', "\u{fffd}");
    }
    if why.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
        why.push('…');
    }
}

/// Records `envelope` as rejected with `why` in the message log, with no events: the end of a
/// command that was never handled. Recording it twice is harmless.
async fn record_rejected(
    storage: &dyn Storage,
    envelope: &CommandEnvelope,
    why: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let outcome = Outcome::Rejected {
        error: Json::encode(why).unwrap_or_else(|_| Json::null()),
        message: why.to_owned(),
    };
    let commit = Commit::new(envelope.target.clone(), ExpectedVersion::Any, Vec::new())
        .with_command(CommandRecord::from_envelope(envelope, now, outcome));
    match storage.commit(commit).await {
        Ok(_) | Err(StoreError::DuplicateCommand { .. }) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Discards the parked command `id` (a dead letter): records it in the message log as
/// rejected, with `why` and the reason it was parked, then removes it from the schedule, so it
/// is never delivered. Returns whether `id` was parked. Discarding twice, or after a crash
/// between the two steps, is harmless.
///
/// # Errors
///
/// The store's error.
///
/// # Examples
///
/// ```
/// # use cqrs_core::{InMemoryEventStore, ScheduleStore, ScheduledCommand, CommandEnvelope, StreamId, Json, MessageLog, discard_parked};
/// # tokio_test::block_on(async {
/// let store = InMemoryEventStore::new();
/// let reminder = CommandEnvelope {
///     id: uuid::Uuid::new_v4(),
///     target: StreamId::new("order-1")?,
///     command_type: "order.remind".into(),
///     payload: Json::null(),
///     correlation_id: None,
///     causation_id: None,
///     headers: Default::default(),
/// };
/// let id = reminder.id;
/// let now = chrono::Utc::now();
/// store.schedule(vec![ScheduledCommand::new(reminder, now)]).await?;
/// assert!(store.park(id, 0, "no handler for order.remind", now).await?);
///
/// assert!(discard_parked(&store, id, "the operator discarded it", now).await?);
/// assert!(store.find_parked(id).await?.is_none());
/// let record = store.find_command(id).await?.expect("recorded");
/// assert!(!record.outcome.is_accepted());
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub async fn discard_parked(
    storage: &dyn Storage,
    id: Uuid,
    why: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(parked) = storage.find_parked(id).await? else {
        return Ok(false);
    };
    let mut message = format!("{why} ({})", parked.reason);
    truncate_reason(&mut message);
    record_rejected(storage, &parked.scheduled.command, &message, now).await?;
    storage.complete_scheduled(&[id]).await?;
    Ok(true)
}

/// A [`CommandDispatcher`] running in the background.
#[derive(Debug)]
pub struct DispatcherHandle {
    task: Background,
}

impl DispatcherHandle {
    /// Stops the dispatcher and waits until it has stopped. A command interrupted mid-delivery
    /// is delivered again after its lease (receivers deduplicate by id).
    pub async fn stop(&self) {
        self.task.stop().await;
    }
}

/// Sends a command to an aggregate through the schedule, to be delivered by a
/// [`CommandDispatcher`] at `due_at` (or at once): the way to schedule a durable command outside
/// a process manager.
///
/// # Errors
///
/// [`EnvelopeError`] if the command does not serialize, wrapped in [`ProcessError::Command`], or
/// the store's error.
pub async fn schedule_command<A: Aggregate>(
    storage: &dyn Storage,
    id: &A::Id,
    command: &A::Command,
    context: CommandContext,
    due_at: DateTime<Utc>,
) -> Result<Uuid, ProcessError> {
    let mut envelope = CommandEnvelope::for_aggregate::<A>(id, command, context)
        .map_err(|e: EnvelopeError| ProcessError::Command(Arc::new(e)))?;
    crate::trace::inject_current(&mut envelope.headers);
    let command_id = envelope.id;
    storage
        .schedule(vec![ScheduledCommand::new(
            envelope,
            crate::clock::truncate_to_micros(due_at),
        )])
        .await?;
    Ok(command_id)
}

/// Cancels a command scheduled with [`schedule_command`] (or any scheduled command, by id),
/// so that it is not delivered. Unknown ids, and commands already delivered, are ignored. A
/// command that a dispatcher has already claimed may still be delivered once: receivers
/// deduplicate by id, and a process manager's timeout handler checks the id it expects.
/// A process manager cancels its own timeouts with [`Reaction::cancel`] instead, in the same
/// save as its state.
///
/// # Errors
///
/// The store's error.
///
/// # Examples
///
/// ```
/// # use std::sync::Arc;
/// # use cqrs_core::{InMemoryEventStore, ScheduleStore, ScheduledCommand, CommandEnvelope, StreamId, Json, cancel_command};
/// # tokio_test::block_on(async {
/// let store = InMemoryEventStore::new();
/// let reminder = CommandEnvelope {
///     id: uuid::Uuid::new_v4(),
///     target: StreamId::new("order-1")?,
///     command_type: "order.remind".into(),
///     payload: Json::null(),
///     correlation_id: None,
///     causation_id: None,
///     headers: Default::default(),
/// };
/// let id = reminder.id;
/// store.schedule(vec![ScheduledCommand::new(reminder, chrono::Utc::now())]).await?;
/// cancel_command(&store, id).await?;
/// assert_eq!(store.next_due().await?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub async fn cancel_command(storage: &dyn ScheduleStore, id: Uuid) -> Result<(), StoreError> {
    storage.complete_scheduled(&[id]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_on_a_character_boundary_and_lose_their_nuls() {
        let mut long = "é".repeat(MAX_REASON);
        truncate_reason(&mut long);
        assert!(long.len() <= MAX_REASON + '…'.len_utf8());
        assert!(long.ends_with('…'));
        let mut nul = "bad\0byte".to_owned();
        truncate_reason(&mut nul);
        assert_eq!(nul, "bad\u{fffd}byte");
        let mut short = "no handler".to_owned();
        truncate_reason(&mut short);
        assert_eq!(short, "no handler");
    }
}
