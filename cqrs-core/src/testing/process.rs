use std::fmt::Debug;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clock::{Clock, ManualClock};
use crate::event::{Metadata, NewEvent, RecordedEvent, StreamId};
use crate::message::{DomainEvent, encode_message};
use crate::process::{EventContext, Outgoing, ProcessManager, Reaction, TimeoutContext};
use crate::version::{Position, Version};

/// Given these events, when this event or timeout, then these commands: a test of one process
/// manager instance, with no store.
///
/// # Examples
///
/// ```
/// # use chrono::Duration;
/// # use cqrs_core::{DomainEvent, EventContext, Outgoing, ProcessManager, Reaction, TimeoutContext};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum OrderEvent { #[serde(rename = "order.placed")] Placed { order: String }, #[serde(rename = "order.paid")] Paid { order: String } }
/// # impl DomainEvent for OrderEvent {}
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum Timeout { #[serde(rename = "payment.expire")] Expire }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # struct Payment { order: String }
/// # impl ProcessManager for Payment {
/// #     const NAME: &'static str = "payment";
/// #     type Event = OrderEvent; type Timeout = Timeout; type Error = std::convert::Infallible;
/// #     fn route(e: &OrderEvent, _: &cqrs_core::StreamId) -> Option<String> { match e { OrderEvent::Placed { order } | OrderEvent::Paid { order } => Some(order.clone()) } }
/// #     fn react(s: Option<&Self>, e: &OrderEvent, cx: &EventContext<'_>) -> Result<Reaction<Self>, Self::Error> {
/// #         Ok(match (s, e) {
/// #             (None, OrderEvent::Placed { order }) => Reaction::new(Payment { order: order.clone() })
/// #                 .send(Outgoing::timeout::<Self>(order, &Timeout::Expire).at(cx.now + Duration::minutes(15))),
/// #             (Some(_), OrderEvent::Paid { .. }) => Reaction::unchanged().complete(),
/// #             _ => Reaction::unchanged(),
/// #         })
/// #     }
/// #     fn on_timeout(_: &Self, _: Timeout, _: &TimeoutContext<'_>) -> Result<Reaction<Self>, Self::Error> { Ok(Reaction::unchanged().complete()) }
/// # }
/// use cqrs_core::testing::ProcessScenario;
///
/// let scenario = ProcessScenario::<Payment>::new();
/// let expiry = scenario.now() + Duration::minutes(15);
/// scenario
///     .when(OrderEvent::Placed { order: "o1".into() })
///     .then_sends([Outgoing::timeout::<Payment>("o1", &Timeout::Expire).at(expiry)])
///     .then_not_completed();
///
/// ProcessScenario::<Payment>::new()
///     .given([OrderEvent::Placed { order: "o1".into() }])
///     .when_timeout(Timeout::Expire)
///     .then_no_sends()
///     .then_completed();
/// ```
pub struct ProcessScenario<P: ProcessManager> {
    state: Option<P>,
    completed: bool,
    clock: ManualClock,
    position: u64,
    instance: Option<String>,
    stream: StreamId,
}

impl<P: ProcessManager> ProcessScenario<P> {
    /// A scenario for an instance that has not started, at 2026-01-01T00:00:00Z.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: None,
            completed: false,
            clock: ManualClock::default(),
            position: 0,
            instance: None,
            stream: StreamId::new("scenario-1").expect("a valid stream id"),
        }
    }

    /// Sets the time the reactions see.
    #[must_use]
    pub fn at(self, now: DateTime<Utc>) -> Self {
        self.clock.set(now);
        self
    }

    /// The time the reactions see.
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Starts from `state` instead of from nothing.
    #[must_use]
    pub fn given_state(mut self, state: P) -> Self {
        self.state = Some(state);
        self
    }

    /// Feeds events that already happened through [`ProcessManager::react`], as the runner
    /// would: events that route nowhere, and everything after the instance finishes, change
    /// nothing.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the manager refuses one: a given history should be one
    /// the manager accepts.
    #[must_use]
    #[track_caller]
    pub fn given(self, events: impl IntoIterator<Item = P::Event>) -> Self
    where
        P::Error: Debug,
    {
        let stream = self.stream.clone();
        self.given_on(&stream, events)
    }

    /// As [`given`](Self::given), for events recorded in `stream` (for managers that route by
    /// the stream an event was recorded in).
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the manager refuses one.
    #[must_use]
    #[track_caller]
    pub fn given_on(mut self, stream: &StreamId, events: impl IntoIterator<Item = P::Event>) -> Self
    where
        P::Error: Debug,
    {
        for event in events {
            let metadata = Metadata::at(self.clock.now());
            match self.react(&event, stream, metadata) {
                Ok(reaction) => self.absorb(reaction),
                Err(err) => panic!("a given event was refused: {err:?}"),
            }
        }
        self
    }

    /// Sets the stream that [`given`](Self::given) and [`when`](Self::when) record events in
    /// (`scenario-1` otherwise).
    #[must_use]
    pub fn in_stream(mut self, stream: StreamId) -> Self {
        self.stream = stream;
        self
    }

    /// Reacts to `event`, recorded now with fresh metadata.
    #[must_use]
    #[track_caller]
    pub fn when(self, event: P::Event) -> ProcessThen<P> {
        let metadata = Metadata::at(self.clock.now());
        self.when_with(event, metadata)
    }

    /// Reacts to `event` recorded with `metadata` (to set a correlation or causation id).
    #[must_use]
    #[track_caller]
    pub fn when_with(self, event: P::Event, metadata: Metadata) -> ProcessThen<P> {
        let stream = self.stream.clone();
        self.when_on_with(&stream, event, metadata)
    }

    /// Reacts to `event` recorded in `stream` with `metadata`.
    #[must_use]
    #[track_caller]
    pub fn when_on_with(
        mut self,
        stream: &StreamId,
        event: P::Event,
        metadata: Metadata,
    ) -> ProcessThen<P> {
        let result = self.react(&event, stream, metadata);
        ProcessThen {
            before: self.state,
            completed_before: self.completed,
            result,
        }
    }

    /// Reacts to a timeout falling due, with a fresh command id.
    #[must_use]
    #[track_caller]
    pub fn when_timeout(self, timeout: P::Timeout) -> ProcessThen<P> {
        self.when_timeout_with_id(timeout, Uuid::now_v7())
    }

    /// Reacts to a timeout with command id `id` (as [`Outgoing::id`] gave when it was sent).
    /// As with the runner, a finished instance ignores it.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the instance has not started.
    #[must_use]
    #[track_caller]
    pub fn when_timeout_with_id(self, timeout: P::Timeout, id: Uuid) -> ProcessThen<P> {
        let state = self
            .state
            .as_ref()
            .expect("a timeout needs a started instance: add `given` events");
        let result = if self.completed {
            Ok(Reaction::unchanged())
        } else {
            let instance = self.instance.as_deref().unwrap_or("scenario");
            P::on_timeout(
                state,
                timeout,
                &TimeoutContext {
                    instance,
                    command_id: id,
                    now: self.clock.now(),
                },
            )
        };
        ProcessThen {
            before: self.state,
            completed_before: self.completed,
            result,
        }
    }

    /// Runs `event` through routing and [`ProcessManager::react`] as the runner does.
    fn react(
        &mut self,
        event: &P::Event,
        stream: &StreamId,
        metadata: Metadata,
    ) -> Result<Reaction<P>, P::Error> {
        let recorded = self.record(event, stream, metadata);
        let Some(instance) = P::route(event, stream) else {
            return Ok(Reaction::unchanged());
        };
        if self.completed {
            return Ok(Reaction::unchanged());
        }
        let context = EventContext {
            instance: &instance,
            recorded: &recorded,
            now: self.clock.now(),
        };
        let result = P::react(self.state.as_ref(), event, &context);
        if let Ok(reaction) = &result {
            // The runner saves an instance's outbox with its state: it has none to save here.
            assert!(
                self.state.is_some() || reaction.state.is_some() || reaction.is_unchanged(),
                "a reaction that starts an instance must give it a state \
                 (the runner refuses to save one without: ProcessError::NoState)"
            );
        }
        self.instance.get_or_insert(instance);
        result
    }

    fn record(&mut self, event: &P::Event, stream: &StreamId, metadata: Metadata) -> RecordedEvent {
        self.position += 1;
        let (name, payload) = encode_message(event).expect("process events encode");
        let stream = stream.clone();
        RecordedEvent::from_new(
            NewEvent::new(name, payload)
                .with_schema_version(P::Event::schema_version(name))
                .with_metadata(metadata),
            stream,
            Version::new(self.position),
            Position::new(self.position),
        )
    }

    fn absorb(&mut self, reaction: Reaction<P>) {
        if let Some(state) = reaction.state {
            self.state = Some(state);
        }
        self.completed |= reaction.completed;
    }
}

impl<P: ProcessManager> Default for ProcessScenario<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// The outcome of a [`ProcessScenario`], to assert on.
pub struct ProcessThen<P: ProcessManager> {
    before: Option<P>,
    completed_before: bool,
    result: Result<Reaction<P>, P::Error>,
}

impl<P: ProcessManager> ProcessThen<P> {
    #[track_caller]
    fn reaction(&self) -> &Reaction<P>
    where
        P::Error: Debug,
    {
        match &self.result {
            Ok(r) => r,
            Err(err) => panic!("the process manager refused the input: {err:?}"),
        }
    }

    /// Asserts that exactly `expected` were sent, in order (compared by target, type, payload
    /// and due time; command ids are fresh and left out).
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_sends(self, expected: impl IntoIterator<Item = Outgoing>) -> Self
    where
        P::Error: Debug,
    {
        let expected: Vec<Outgoing> = expected.into_iter().collect();
        assert_eq!(
            self.reaction().sends,
            expected,
            "the process manager sent other commands than expected"
        );
        self
    }

    /// Asserts that exactly the scheduled commands `expected` were cancelled, in order.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_cancels(self, expected: impl IntoIterator<Item = uuid::Uuid>) -> Self
    where
        P::Error: Debug,
    {
        let expected: Vec<uuid::Uuid> = expected.into_iter().collect();
        assert_eq!(
            self.reaction().cancels,
            expected,
            "the process manager cancelled other scheduled commands than expected"
        );
        self
    }

    /// Asserts that nothing was sent.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_no_sends(self) -> Self
    where
        P::Error: Debug,
    {
        self.then_sends([])
    }

    /// Asserts that the instance is finished afterwards.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_completed(self) -> Self
    where
        P::Error: Debug,
    {
        assert!(
            self.completed_before || self.reaction().completed,
            "the process should be completed"
        );
        self
    }

    /// Asserts that the instance is not finished afterwards.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_not_completed(self) -> Self
    where
        P::Error: Debug,
    {
        assert!(
            !self.completed_before && !self.reaction().completed,
            "the process should not be completed"
        );
        self
    }

    /// Asserts that the input changed nothing: no state change, no command, not finished.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_ignored(self) -> Self
    where
        P::Error: Debug,
        P: Debug,
    {
        assert!(
            self.reaction().is_unchanged(),
            "expected the input to be ignored, got {:?}",
            self.reaction()
        );
        self
    }

    /// Runs `check` on the state afterwards.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the input was refused or the instance has no state.
    #[track_caller]
    pub fn then_state(self, check: impl FnOnce(&P)) -> Self
    where
        P::Error: Debug,
    {
        let state = self
            .reaction()
            .state
            .as_ref()
            .or(self.before.as_ref())
            .expect("the process has a state");
        check(state);
        self
    }

    /// Asserts that the input was refused with an error that passes `check`.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_error(self, check: impl FnOnce(&P::Error) -> bool)
    where
        P: Debug,
        P::Error: Debug,
    {
        match &self.result {
            Ok(reaction) => panic!("expected the input to be refused, got {reaction:?}"),
            Err(err) => assert!(check(err), "refused with an unexpected error: {err:?}"),
        }
    }

    /// The commands sent, for assertions of your own.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the input was refused.
    #[must_use]
    #[track_caller]
    pub fn sends(&self) -> &[Outgoing]
    where
        P::Error: Debug,
    {
        &self.reaction().sends
    }
}
