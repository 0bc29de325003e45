use std::fmt::Debug;
use std::sync::Arc;

use crate::aggregate::Aggregate;
use crate::command::CommandContext;
use crate::event::NewEvent;
use crate::message::{DomainEvent, encode_message};
use crate::repository::{CommandError, Repository};
use crate::store::Storage;
use crate::upcast::Upcasters;
use crate::version::ExpectedVersion;

/// Given these events, when this command, then these events or this error: a test of one
/// aggregate decision, with no store.
///
/// `when` replays the given events through [`Aggregate::apply`], decides with
/// [`Aggregate::handle`], and checks on the way that every event (given or new) survives
/// encoding and decoding and applies to the state before it, so a missing serde rename or an
/// `apply` that disagrees with `handle` fails the test too.
///
/// # Examples
///
/// ```
/// # use cqrs_core::{Aggregate, ApplyError, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone)] struct Light { on: bool }
/// # #[derive(Debug, Serialize, Deserialize)] enum Switch { #[serde(rename = "light.install")] Install, #[serde(rename = "light.turn_on")] TurnOn }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)] enum LightEvent { #[serde(rename = "light.installed")] Installed, #[serde(rename = "light.turned_on")] TurnedOn }
/// # impl DomainEvent for LightEvent {}
/// # #[derive(Debug, PartialEq, thiserror::Error, Serialize, Deserialize)] enum LightError { #[error("already on")] AlreadyOn, #[error("no light")] Missing }
/// # impl Aggregate for Light {
/// #     const TYPE: &'static str = "light";
/// #     type Id = u32; type Command = Switch; type Event = LightEvent; type Error = LightError;
/// #     fn handle(s: Option<&Self>, _: &u32, c: Switch) -> Result<Vec<LightEvent>, LightError> {
/// #         match (s, c) {
/// #             (None, Switch::Install) => Ok(vec![LightEvent::Installed]),
/// #             (None, _) | (Some(_), Switch::Install) => Err(LightError::Missing),
/// #             (Some(l), Switch::TurnOn) if l.on => Err(LightError::AlreadyOn),
/// #             (Some(_), Switch::TurnOn) => Ok(vec![LightEvent::TurnedOn]),
/// #         }
/// #     }
/// #     fn apply(s: Option<Self>, e: &LightEvent) -> Result<Self, ApplyError> {
/// #         Ok(match e { LightEvent::Installed => Light { on: false }, LightEvent::TurnedOn => Light { on: true } })
/// #     }
/// # }
/// use cqrs_core::testing::Scenario;
///
/// Scenario::<Light>::new(1)
///     .given([LightEvent::Installed])
///     .when(Switch::TurnOn)
///     .then_events([LightEvent::TurnedOn])
///     .then_state(|light| assert!(light.on));
///
/// Scenario::<Light>::new(1)
///     .given([LightEvent::Installed, LightEvent::TurnedOn])
///     .when(Switch::TurnOn)
///     .then_error(LightError::AlreadyOn);
/// ```
pub struct Scenario<A: Aggregate> {
    id: A::Id,
    given: Vec<A::Event>,
}

impl<A: Aggregate> Scenario<A> {
    /// A scenario for the aggregate `id`, which does not exist yet.
    pub fn new(id: A::Id) -> Self {
        Self {
            id,
            given: Vec::new(),
        }
    }

    /// Adds events that already happened.
    #[must_use]
    pub fn given(mut self, events: impl IntoIterator<Item = A::Event>) -> Self {
        self.given.extend(events);
        self
    }

    /// Decides `command` on the state the given events build.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if a given event does not encode, decode or apply.
    #[track_caller]
    pub fn when(self, command: A::Command) -> Then<A> {
        let state = replay_checked::<A>(&self.given);
        let result = A::handle(state.as_ref(), &self.id, command);
        Then { state, result }
    }

    /// Runs the scenario through a [`Repository`] on `storage`: the given events are appended
    /// to the aggregate's stream first, then the command is handled as in production (encoded,
    /// logged, appended).
    ///
    /// `storage` should not hold the aggregate's stream yet.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the given events cannot be stored, or handling fails for a
    /// reason other than a rejection.
    pub async fn when_on(self, storage: Arc<dyn Storage>, command: A::Command) -> Then<A> {
        let stream = A::stream_id(&self.id).expect("the aggregate id makes a valid stream id");
        if !self.given.is_empty() {
            let events = self
                .given
                .iter()
                .map(|e| {
                    let (event_type, payload) = encode_message(e).expect("given events encode");
                    NewEvent::new(event_type, payload)
                        .with_schema_version(A::Event::schema_version(event_type))
                        .with_tags(e.tags())
                })
                .collect();
            storage
                .append(&stream, ExpectedVersion::NoStream, events)
                .await
                .expect("given events are stored");
        }
        let repository = Repository::<A>::new(Arc::clone(&storage));
        let result = match repository
            .handle_with(&self.id, command, CommandContext::new())
            .await
        {
            Ok(handled) => Ok(handled.events),
            Err(CommandError::Rejected(e)) => Err(e),
            Err(other) => panic!("handling the command failed: {other}"),
        };
        Then {
            state: replay_checked::<A>(&self.given),
            result,
        }
    }
}

/// The outcome of a [`Scenario`], to assert on.
pub struct Then<A: Aggregate> {
    state: Option<A>,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Then<A> {
    /// Asserts that the command caused exactly `expected`, in order.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise, or if a new event does not apply to the state.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>) -> Self
    where
        A::Event: PartialEq + Debug,
        A::Error: Debug,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match &self.result {
            Ok(events) => {
                assert_eq!(
                    events, &expected,
                    "the command caused other events than expected"
                );
                for event in events {
                    assert_round_trip::<A>(event);
                }
            }
            Err(err) => {
                panic!("expected events {expected:?}, but the command was rejected: {err:?}")
            }
        }
        self
    }

    /// Asserts that the command was accepted and caused no events.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_no_events(self) -> Self
    where
        A::Event: PartialEq + Debug,
        A::Error: Debug,
    {
        self.then_events([])
    }

    /// Asserts that the command was rejected with `expected`.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Event: Debug,
        A::Error: PartialEq + Debug,
    {
        match &self.result {
            Ok(events) => {
                panic!("expected the error {expected:?}, but the command caused {events:?}")
            }
            Err(err) => assert_eq!(
                err, &expected,
                "the command was rejected with another error"
            ),
        }
    }

    /// Asserts that the command was rejected with an error that passes `check`.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&A::Error) -> bool)
    where
        A::Event: Debug,
        A::Error: Debug,
    {
        match &self.result {
            Ok(events) => panic!("expected an error, but the command caused {events:?}"),
            Err(err) => assert!(
                check(err),
                "the command was rejected with an unexpected error: {err:?}"
            ),
        }
    }

    /// Runs `check` on the state after the new events.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the command was rejected, the aggregate does not exist
    /// afterwards, or a new event does not apply.
    #[track_caller]
    pub fn then_state(self, check: impl FnOnce(&A)) -> Self
    where
        A: Clone,
        A::Error: Debug,
    {
        let events = match &self.result {
            Ok(events) => events,
            Err(err) => panic!("the command was rejected: {err:?}"),
        };
        let after = replay_from::<A>(self.state.clone(), events);
        check(
            after
                .as_ref()
                .expect("the aggregate exists after the command"),
        );
        self
    }

    /// The events, or the rejection, for assertions of your own.
    ///
    /// # Errors
    ///
    /// The rejection.
    pub fn result(&self) -> Result<&[A::Event], &A::Error> {
        self.result.as_deref()
    }
}

#[track_caller]
fn replay_checked<A: Aggregate>(events: &[A::Event]) -> Option<A> {
    for event in events {
        check_encodes::<A>(event);
    }
    replay_from::<A>(None, events)
}

#[track_caller]
fn replay_from<A: Aggregate>(mut state: Option<A>, events: &[A::Event]) -> Option<A> {
    for (i, event) in events.iter().enumerate() {
        state = Some(match A::apply(state, event) {
            Ok(s) => s,
            Err(err) => panic!("event {i} does not apply: {err}"),
        });
    }
    state
}

#[track_caller]
fn check_encodes<A: Aggregate>(event: &A::Event) {
    check_event_encodes(event);
}

/// Panics unless `event` encodes, and decodes back through no upcaster.
#[track_caller]
pub(crate) fn check_event_encodes<E: DomainEvent>(event: &E) {
    let (name, payload) = match encode_message(event) {
        Ok(encoded) => encoded,
        Err(err) => panic!("an event does not encode: {err}"),
    };
    let recorded = crate::event::RecordedEvent::from_new(
        NewEvent::new(name, payload).with_schema_version(E::schema_version(name)),
        crate::event::StreamId::new("scenario-1").expect("valid"),
        crate::version::Version::START,
        crate::version::Position::START,
    );
    if let Err(err) = Upcasters::new().decode::<E>(&recorded) {
        panic!(
            "event type {name} does not decode back: {err} ({:?})",
            err.kind
        );
    }
}

#[track_caller]
fn assert_round_trip<A: Aggregate>(event: &A::Event)
where
    A::Event: PartialEq + Debug,
{
    assert_event_round_trip(event);
}

/// Panics unless `event` encodes and decodes back equal.
#[track_caller]
pub(crate) fn assert_event_round_trip<E: DomainEvent + PartialEq + Debug>(event: &E) {
    check_event_encodes(event);
    let (name, payload) = encode_message(event).expect("checked above");
    let back: E = crate::message::decode_message(name, payload.as_str()).expect("checked above");
    assert_eq!(
        &back, event,
        "event {name} changes when encoded and decoded"
    );
}
