use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use crate::command::CommandContext;
use crate::decision::{Decider, Decision, Emit};
use crate::event::{NewEvent, StreamId};
use crate::message::{DomainEvent, encode_message};
use crate::repository::CommandError;
use crate::store::Storage;
use crate::testing::scenario::{assert_event_round_trip, check_event_encodes};
use crate::version::{ExpectedVersion, Version};

/// Given these events in these streams, when this command, then these events or this error:
/// a test of one [`Decision`], with no store.
///
/// `when` folds only the given events the decision's query selects (by type name and tags,
/// as a store would), in the order given, so a query that misses an event the rule needs
/// fails the test as it would fail in production; a decision that
/// [reads its target](Decision::READS_TARGET) folds the target's given events first. It checks on the way that every event
/// encodes and decodes back, and that each [`Emit`]'s expected version holds for the streams
/// the given events build.
///
/// # Examples
///
/// ```
/// # use cqrs_core::{Decision, DomainEvent, Emit, EventQuery, ExpectedVersion, QueryItem, StreamId, Tag};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum ConferenceEvent {
/// #     #[serde(rename = "conference.created")] Created { id: u32, slug: String },
/// #     #[serde(rename = "conference.renamed")] Renamed { id: u32, name: String },
/// # }
/// # impl DomainEvent for ConferenceEvent {
/// #     fn tags(&self) -> Vec<Tag> {
/// #         match self { Self::Created { slug, .. } => Tag::new("slug", slug).into_iter().collect(), Self::Renamed { .. } => vec![] }
/// #     }
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
/// use cqrs_core::testing::DecisionScenario;
///
/// let conference = |id: u32| StreamId::for_aggregate("conference", &id).unwrap();
/// let created = |id, slug: &str| ConferenceEvent::Created { id, slug: slug.into() };
/// let create = |id, slug: &str| CreateConference::Create { id, slug: slug.into() };
///
/// DecisionScenario::<UniqueSlug>::new()
///     .given(conference(1), [created(1, "rustconf")])
///     .when(create(2, "devconf"))
///     .then_emitted([(conference(2), created(2, "devconf"))]);
///
/// DecisionScenario::<UniqueSlug>::new()
///     .given(conference(1), [created(1, "devconf")])
///     .when(create(2, "devconf"))
///     .then_error(SlugTaken("devconf".into()));
///
/// // The rename carries no slug: the query selects the creation only.
/// let renamed = ConferenceEvent::Renamed { id: 1, name: "DevConf 2027".into() };
/// DecisionScenario::<UniqueSlug>::new()
///     .given(conference(1), [created(1, "devconf"), renamed])
///     .when(create(2, "devconf"))
///     .then_selected(|events| assert_eq!(events, [created(1, "devconf")]))
///     .then_error(SlugTaken("devconf".into()));
/// ```
pub struct DecisionScenario<D: Decision> {
    given: Vec<(StreamId, D::Event)>,
}

impl<D: Decision> Default for DecisionScenario<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Decision> DecisionScenario<D> {
    /// A scenario on an empty log.
    #[must_use]
    pub fn new() -> Self {
        Self { given: Vec::new() }
    }

    /// Adds events that already happened in `stream`, after those given before.
    #[must_use]
    pub fn given(mut self, stream: StreamId, events: impl IntoIterator<Item = D::Event>) -> Self {
        self.given
            .extend(events.into_iter().map(|e| (stream.clone(), e)));
        self
    }

    /// Decides `command` on the given events its query selects.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the query is invalid, a given event does not encode and
    /// decode back, or a given event of the target does not apply.
    #[track_caller]
    pub fn when(self, command: D::Command) -> DecisionThen<D> {
        let query = D::query(&command);
        if let Err(err) = query.validate() {
            panic!("the decision's query is invalid: {err}");
        }
        let mut state = D::initial(&command);
        if D::READS_TARGET {
            // As the decider does: the target's own events first, in version order.
            let target = D::target(&command);
            for (_, event) in self.given.iter().filter(|(stream, _)| *stream == target) {
                if let Err(err) = D::apply_target(&mut state, event) {
                    panic!("a given event of the target does not apply: {err}");
                }
            }
        }
        let mut selected = Vec::new();
        let mut versions: HashMap<StreamId, u64> = HashMap::new();
        for (stream, event) in self.given {
            check_event_encodes(&event);
            *versions.entry(stream).or_default() += 1;
            let (event_type, _) = encode_message(&event).expect("checked above");
            if query.matches(event_type, &event.tags()) {
                D::apply(&mut state, &event);
                selected.push(event);
            }
        }
        let outcome = match D::decide(&state, &command) {
            Err(rejection) => Decided::Rejected(rejection),
            Ok(emits) => conflict(&emits, &versions).unwrap_or_else(|| {
                Decided::Emitted(emits.into_iter().map(|e| (e.stream, e.event)).collect())
            }),
        };
        DecisionThen { selected, outcome }
    }

    /// Runs the scenario through a [`Decider`] on `storage`: the given events are appended to
    /// their streams first (with their tags), then the command is decided as in production
    /// (read by query, committed under the condition, recorded in the message log).
    ///
    /// `storage` should not hold the given streams yet.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the given events cannot be stored, or deciding fails for
    /// a reason other than a rejection or a stream's conflict.
    pub async fn when_on(self, storage: Arc<dyn Storage>, command: D::Command) -> DecisionThen<D> {
        let query = D::query(&command);
        let mut selected = Vec::new();
        for (stream, event) in self.given {
            let (event_type, payload) = encode_message(&event).expect("given events encode");
            let tags = event.tags();
            let new = NewEvent::new(event_type, payload)
                .with_schema_version(D::Event::schema_version(event_type))
                .with_tags(tags.iter().cloned());
            storage
                .append(&stream, ExpectedVersion::Any, vec![new])
                .await
                .expect("given events are stored");
            if query.matches(event_type, &tags) {
                selected.push(event);
            }
        }
        let decider = Decider::<D>::new(storage);
        let outcome = match decider.handle_with(command, CommandContext::new()).await {
            Ok(decided) => {
                Decided::Emitted(decided.streams.into_iter().zip(decided.events).collect())
            }
            Err(CommandError::Rejected(rejection)) => Decided::Rejected(rejection),
            Err(CommandError::Conflict { stream, .. }) => Decided::Conflict {
                stream,
                why: "the store refused a stream's expected version".into(),
            },
            Err(other) => panic!("deciding the command failed: {other}"),
        };
        DecisionThen { selected, outcome }
    }
}

/// The first `Emit` whose expected version the given streams do not meet.
fn conflict<D: Decision>(
    emits: &[Emit<D::Event>],
    versions: &HashMap<StreamId, u64>,
) -> Option<Decided<D>> {
    let mut checked: Vec<&StreamId> = Vec::new();
    for emit in emits {
        // A stream's expectation is its first event's, as the decider commits it.
        if checked.contains(&&emit.stream) {
            continue;
        }
        checked.push(&emit.stream);
        let actual = Version::new(versions.get(&emit.stream).copied().unwrap_or(0));
        if !emit.expected.matches(actual) {
            return Some(Decided::Conflict {
                stream: emit.stream.clone(),
                why: format!(
                    "the decision expects {} at {:?}, and the given events leave it at version {}",
                    emit.stream,
                    emit.expected,
                    actual.get()
                ),
            });
        }
    }
    None
}

enum Decided<D: Decision> {
    Emitted(Vec<(StreamId, D::Event)>),
    Rejected(D::Error),
    Conflict { stream: StreamId, why: String },
}

/// The outcome of a [`DecisionScenario`], to assert on.
pub struct DecisionThen<D: Decision> {
    selected: Vec<D::Event>,
    outcome: Decided<D>,
}

impl<D: Decision> DecisionThen<D>
where
    D::Event: PartialEq + Debug,
    D::Error: PartialEq + Debug,
{
    #[track_caller]
    fn emitted(&self) -> &[(StreamId, D::Event)] {
        match &self.outcome {
            Decided::Emitted(emitted) => {
                for (_, event) in emitted {
                    assert_event_round_trip(event);
                }
                emitted
            }
            Decided::Rejected(err) => panic!("the command was rejected: {err:?}"),
            Decided::Conflict { why, .. } => panic!("the commit would conflict: {why}"),
        }
    }

    /// Asserts that the command caused exactly `expected`, in order, wherever they went.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise, or if a new event does not encode and decode back
    /// equal.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = D::Event>) -> Self {
        let expected: Vec<D::Event> = expected.into_iter().collect();
        let events: Vec<&D::Event> = self.emitted().iter().map(|(_, e)| e).collect();
        let expected_refs: Vec<&D::Event> = expected.iter().collect();
        assert_eq!(
            events, expected_refs,
            "the command caused other events than expected"
        );
        self
    }

    /// Asserts that the command caused exactly `expected`, each in its stream, in order.
    ///
    /// # Panics
    ///
    /// As [`then_events`](Self::then_events).
    #[track_caller]
    pub fn then_emitted(self, expected: impl IntoIterator<Item = (StreamId, D::Event)>) -> Self {
        let expected: Vec<(StreamId, D::Event)> = expected.into_iter().collect();
        assert_eq!(
            self.emitted(),
            expected.as_slice(),
            "the command caused other events (or in other streams) than expected"
        );
        self
    }

    /// Asserts that the command was accepted and caused no events.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_no_events(self) -> Self {
        self.then_events([])
    }

    /// Asserts that the command was rejected with `expected`.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_error(self, expected: D::Error) -> Self {
        match &self.outcome {
            Decided::Rejected(err) => assert_eq!(
                err, &expected,
                "the command was rejected with another error"
            ),
            Decided::Emitted(emitted) => {
                panic!("expected the error {expected:?}, but the command caused {emitted:?}")
            }
            Decided::Conflict { why, .. } => {
                panic!("expected the error {expected:?}, but the commit would conflict: {why}")
            }
        }
        self
    }

    /// Asserts that the command was rejected with an error that passes `check`.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&D::Error) -> bool) -> Self {
        match &self.outcome {
            Decided::Rejected(err) => assert!(
                check(err),
                "the command was rejected with an unexpected error: {err:?}"
            ),
            Decided::Emitted(emitted) => {
                panic!("expected an error, but the command caused {emitted:?}")
            }
            Decided::Conflict { why, .. } => {
                panic!("expected an error, but the commit would conflict: {why}")
            }
        }
        self
    }

    /// Asserts that committing would conflict on `stream`: an [`Emit`] requires a version the
    /// stream is not at.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) otherwise.
    #[track_caller]
    pub fn then_conflict(self, stream: &StreamId) -> Self {
        match &self.outcome {
            Decided::Conflict { stream: found, .. } => {
                assert_eq!(found, stream, "the commit would conflict on another stream");
            }
            Decided::Emitted(emitted) => {
                panic!("expected a conflict on {stream}, but the command caused {emitted:?}")
            }
            Decided::Rejected(err) => {
                panic!("expected a conflict on {stream}, but the command was rejected: {err:?}")
            }
        }
        self
    }

    /// Runs `check` on the given events the query selected, in order: the decision's
    /// consistency boundary.
    pub fn then_selected(self, check: impl FnOnce(&[D::Event])) -> Self {
        check(&self.selected);
        self
    }

    /// The events and their streams, or the rejection, for assertions of your own.
    ///
    /// # Errors
    ///
    /// The rejection.
    ///
    /// # Panics
    ///
    /// Panics (failing the test) if the commit would conflict.
    #[track_caller]
    pub fn result(&self) -> Result<&[(StreamId, D::Event)], &D::Error> {
        match &self.outcome {
            Decided::Emitted(emitted) => Ok(emitted),
            Decided::Rejected(err) => Err(err),
            Decided::Conflict { why, .. } => panic!("the commit would conflict: {why}"),
        }
    }
}
