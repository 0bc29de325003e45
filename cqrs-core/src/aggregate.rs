use std::fmt;
use std::str::FromStr;

use crate::event::{InvalidStreamId, StreamId};
use crate::message::{DomainEvent, Message};

/// A type that can identify an aggregate: printable into a stream id and parsable back.
///
/// Implemented for every `Display + FromStr + Clone + Send + Sync` type, such as
/// `uuid::Uuid`, `u64` or a newtype of your own.
pub trait AggregateId: fmt::Display + FromStr + Clone + Send + Sync + 'static {}

impl<T: fmt::Display + FromStr + Clone + Send + Sync + 'static> AggregateId for T {}

/// A consistency boundary that decides on commands and evolves by events.
///
/// An aggregate is pure and synchronous: [`Aggregate::handle`] decides which events a command
/// causes, and [`Aggregate::apply`] evolves the state by one event. Neither does I/O; anything
/// a decision needs (a price, the time, a new id) comes in with the command. The
/// [`Repository`](crate::Repository) does the loading, appending, retrying and logging.
///
/// Both functions get the state as an `Option`: `None` means that the aggregate does not exist
/// yet (its stream has no events), which no real state can be confused with. `handle` also
/// gets the aggregate's id, so that creation events can carry it.
///
/// # Examples
///
/// ```
/// use cqrs_core::{Aggregate, ApplyError, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone)]
/// struct Counter { value: u32 }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// enum CounterCommand {
///     #[serde(rename = "counter.create")]
///     Create,
///     #[serde(rename = "counter.increment")]
///     Increment { by: u32 },
/// }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent {
///     #[serde(rename = "counter.created")]
///     Created { id: String },
///     #[serde(rename = "counter.incremented")]
///     Incremented { by: u32 },
/// }
/// impl DomainEvent for CounterEvent {}
///
/// #[derive(Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
/// enum CounterError {
///     #[error("the counter already exists")]
///     AlreadyExists,
///     #[error("no such counter")]
///     NotFound,
/// }
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Id = String;
///     type Command = CounterCommand;
///     type Event = CounterEvent;
///     type Error = CounterError;
///
///     fn handle(state: Option<&Self>, id: &String, command: CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
///         match (state, command) {
///             (None, CounterCommand::Create) => Ok(vec![CounterEvent::Created { id: id.clone() }]),
///             (Some(_), CounterCommand::Create) => Err(CounterError::AlreadyExists),
///             (None, _) => Err(CounterError::NotFound),
///             (Some(_), CounterCommand::Increment { by }) => Ok(vec![CounterEvent::Incremented { by }]),
///         }
///     }
///
///     fn apply(state: Option<Self>, event: &CounterEvent) -> Result<Self, ApplyError> {
///         match (state, event) {
///             (None, CounterEvent::Created { .. }) => Ok(Counter { value: 0 }),
///             (Some(c), CounterEvent::Incremented { by }) => Ok(Counter { value: c.value + by }),
///             (state, event) => Err(ApplyError::unexpected(state.is_some(), event)),
///         }
///     }
/// }
///
/// let events = Counter::handle(None, &"c1".to_owned(), CounterCommand::Create)?;
/// let counter = cqrs_core::replay::<Counter>(&events)?.expect("created");
/// assert_eq!(counter.value, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an aggregate",
    note = "implement `cqrs_core::Aggregate` for it: see the trait's documentation for a complete example"
)]
pub trait Aggregate: Sized + Send + Sync + 'static {
    /// The stream category of this aggregate, such as `"order"`: its streams are
    /// `"{TYPE}-{id}"`. It must not contain `-`, and it must never change once events exist.
    const TYPE: &'static str;

    /// The schema version of this aggregate's serialized state in snapshots. Raise it when the
    /// state's shape changes: snapshots of another version are then ignored, never misread.
    const SNAPSHOT_VERSION: u16 = 1;

    /// The aggregate's id.
    type Id: AggregateId;
    /// The commands it handles (an enum with stable, renamed variants; see [`DomainEvent`]).
    type Command: Message;
    /// The events it records.
    type Event: DomainEvent;
    /// Why it rejects a command. It is serialized into the message log, so that a command
    /// retried with the same id gets the same rejection back.
    type Error: std::error::Error + Message;

    /// Decides which events `command` causes, given the current state (`None` if the aggregate
    /// does not exist yet). Pure: no I/O, no clock, no randomness.
    ///
    /// # Errors
    ///
    /// The domain error if the command is not allowed in this state.
    fn handle(
        state: Option<&Self>,
        id: &Self::Id,
        command: Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves the state by one event (`state` is `None` for the stream's first event). Pure,
    /// and free of business rules: the event already happened.
    ///
    /// # Errors
    ///
    /// [`ApplyError`] if the event cannot follow this state, which means the stored history is
    /// broken; command handling then fails with an error naming the event.
    fn apply(state: Option<Self>, event: &Self::Event) -> Result<Self, ApplyError>;

    /// The stream that holds the aggregate `id`: `"{TYPE}-{id}"`.
    ///
    /// # Errors
    ///
    /// [`InvalidStreamId`] if the id makes the stream id too long or adds control characters.
    fn stream_id(id: &Self::Id) -> Result<StreamId, InvalidStreamId> {
        StreamId::for_aggregate(Self::TYPE, id)
    }
}

/// Folds events into an aggregate's state, as loading does.
///
/// Returns `None` when `events` is empty.
///
/// # Errors
///
/// The first [`ApplyError`].
pub fn replay<'a, A: Aggregate>(
    events: impl IntoIterator<Item = &'a A::Event>,
) -> Result<Option<A>, ApplyError> {
    let mut state = None;
    for event in events {
        state = Some(A::apply(state, event)?);
    }
    Ok(state)
}

/// An event that cannot follow the state it is applied to: the history is broken.
///
/// # Examples
///
/// ```
/// use cqrs_core::ApplyError;
///
/// let err = ApplyError::new("a seat was released twice");
/// assert_eq!(err.to_string(), "a seat was released twice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApplyError {
    message: String,
}

impl ApplyError {
    /// An error with this message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The error for an event that does not fit the state: `existed` tells whether there was
    /// a state at all.
    #[must_use]
    pub fn unexpected(existed: bool, event: &impl fmt::Debug) -> Self {
        if existed {
            Self::new(format!(
                "event {event:?} does not apply to the current state"
            ))
        } else {
            Self::new(format!("event {event:?} cannot start a stream"))
        }
    }
}
