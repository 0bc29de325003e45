//! Small helpers and a test aggregate shared by the cases.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::aggregate::{Aggregate, ApplyError};
use crate::command::CommandEnvelope;
use crate::dcb::{EventQuery, QueryItem, Tag};
use crate::event::{Json, Metadata, NewEvent, RecordedEvent, StreamId};
use crate::message::DomainEvent;
use crate::store::{EventStream, ScheduledCommand};

/// How long a case waits for something that should happen at once before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A stream id unique to this call, in `category`.
pub(crate) fn stream(category: &str) -> StreamId {
    StreamId::new(format!("{category}-{}", Uuid::new_v4().simple())).expect("valid stream id")
}

/// An event of type `ty` whose payload carries `n`.
pub(crate) fn event(ty: &str, n: u64) -> NewEvent {
    NewEvent::new(ty, Json::from(json!({ "n": n })))
}

/// `count` events of type `ty`, numbered from `first`.
pub(crate) fn events(ty: &str, first: u64, count: u64) -> Vec<NewEvent> {
    (first..first + count).map(|n| event(ty, n)).collect()
}

/// The `n` an event of [`event`] carries.
pub(crate) fn n_of(event: &RecordedEvent) -> u64 {
    event.payload.to_value().expect("valid payload")["n"]
        .as_u64()
        .expect("payload has n")
}

/// A fixed instant, to the microsecond, `minutes` after a base time.
pub(crate) fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + minutes * 60, 123_456_000).expect("valid time")
}

/// Metadata with every field set.
pub(crate) fn full_metadata(minutes: i64) -> Metadata {
    Metadata::at(at(minutes))
        .with_correlation_id(Uuid::new_v4())
        .with_causation_id(Uuid::new_v4())
        .with_command_id(Uuid::new_v4())
        .with_header("tenant", "acme")
        .with_header("ünïcode", "✓ \"quoted\"")
}

/// Takes `count` events from a subscription, failing after [`PATIENCE`].
pub(crate) async fn take(subscription: &mut EventStream, count: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        match tokio::time::timeout(PATIENCE, subscription.next()).await {
            Ok(Some(Ok(event))) => out.push(event),
            Ok(Some(Err(err))) => panic!("the subscription failed: {err}"),
            Ok(None) => panic!(
                "the subscription ended after {} of {count} events",
                out.len()
            ),
            Err(_) => panic!(
                "the subscription delivered {} of {count} events, then nothing for {PATIENCE:?}",
                out.len()
            ),
        }
    }
    out
}

/// Asserts that a subscription has nothing more to deliver right now.
pub(crate) async fn assert_quiet(subscription: &mut EventStream) {
    match tokio::time::timeout(Duration::from_millis(200), subscription.next()).await {
        Err(_) => {}
        Ok(Some(item)) => panic!("the subscription delivered more than was appended: {item:?}"),
        Ok(None) => panic!("the subscription ended; it should wait for more"),
    }
}

/// A counter: the aggregate the repository cases drive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tally {
    pub(crate) total: u64,
    pub(crate) limit: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum TallyCommand {
    #[serde(rename = "tally.open")]
    Open { limit: u64 },
    #[serde(rename = "tally.add")]
    Add { amount: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum TallyEvent {
    #[serde(rename = "tally.opened")]
    Opened { limit: u64 },
    #[serde(rename = "tally.added")]
    Added { amount: u64 },
}

impl DomainEvent for TallyEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub(crate) enum TallyError {
    #[error("the tally does not exist")]
    Missing,
    #[error("the tally is already open")]
    AlreadyOpen,
    #[error("adding {amount} would pass the limit of {limit}")]
    OverLimit { amount: u64, limit: u64 },
}

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Id = String;
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Error = TallyError;

    fn handle(
        state: Option<&Self>,
        _id: &String,
        command: TallyCommand,
    ) -> Result<Vec<TallyEvent>, TallyError> {
        match (state, command) {
            (None, TallyCommand::Open { limit }) => Ok(vec![TallyEvent::Opened { limit }]),
            (Some(_), TallyCommand::Open { .. }) => Err(TallyError::AlreadyOpen),
            (None, TallyCommand::Add { .. }) => Err(TallyError::Missing),
            (Some(t), TallyCommand::Add { amount }) if t.total + amount > t.limit => {
                Err(TallyError::OverLimit {
                    amount,
                    limit: t.limit,
                })
            }
            (Some(_), TallyCommand::Add { amount: 0 }) => Ok(vec![]),
            (Some(_), TallyCommand::Add { amount }) => Ok(vec![TallyEvent::Added { amount }]),
        }
    }

    fn apply(state: Option<Self>, event: &TallyEvent) -> Result<Self, ApplyError> {
        match (state, event) {
            (None, TallyEvent::Opened { limit }) => Ok(Self {
                total: 0,
                limit: *limit,
            }),
            (Some(t), TallyEvent::Added { amount }) => Ok(Self {
                total: t.total + amount,
                limit: t.limit,
            }),
            (state, event) => Err(ApplyError::unexpected(state.is_some(), event)),
        }
    }
}

/// Waits until readers of the global log see everything up to `position`: at once in most
/// stores; in PostgreSQL, once every transaction that began before the append has ended.
pub(crate) async fn settle(
    store: &dyn crate::store::EventReader,
    position: Option<crate::version::Position>,
) {
    let Some(position) = position else { return };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while store.head().await.expect("head") < position {
        assert!(
            tokio::time::Instant::now() < deadline,
            "position {position} never became visible"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// [`settle`]s on the last event of each of `streams`.
pub(crate) async fn settle_streams(store: &dyn crate::store::EventReader, streams: &[StreamId]) {
    for stream in streams {
        let events = store
            .read_stream(stream, crate::version::Version::START)
            .await
            .expect("read_stream");
        settle(store, events.last().map(|e| e.position)).await;
    }
}

/// A scheduled `order.expire` on `target`, due `minutes` after the base time.
pub(crate) fn scheduled(target: &StreamId, minutes: i64) -> ScheduledCommand {
    ScheduledCommand {
        command: CommandEnvelope {
            id: Uuid::new_v4(),
            target: target.clone(),
            command_type: "order.expire".into(),
            payload: Json::from(json!({ "minutes": minutes })),
            correlation_id: Some(Uuid::new_v4()),
            causation_id: Some(Uuid::new_v4()),
            headers: [("h".to_owned(), "✓".to_owned())].into(),
        },
        due_at: at(minutes),
        attempts: 0,
    }
}

/// `command` as a claim returns it, on its `attempts`th attempt.
pub(crate) fn attempt(command: &ScheduledCommand, attempts: u32) -> ScheduledCommand {
    ScheduledCommand {
        attempts,
        ..command.clone()
    }
}

/// A member holds at most [`Loans::LIMIT`] books, and a book is lent to one member at a time:
/// a rule across the members' and the books' streams, kept by a [`Decision`](crate::Decision).
pub(crate) struct Loans;

impl Loans {
    pub(crate) const LIMIT: usize = 2;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LoanCommand {
    #[serde(rename = "conformance.lend")]
    Lend { member: String, book: String },
    #[serde(rename = "conformance.give_back")]
    GiveBack { member: String, book: String },
}

impl LoanCommand {
    fn parties(&self) -> (&str, &str) {
        match self {
            Self::Lend { member, book } | Self::GiveBack { member, book } => (member, book),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LoanEvent {
    #[serde(rename = "conformance.lent")]
    Lent { member: String, book: String },
    #[serde(rename = "conformance.given_back")]
    GivenBack { member: String, book: String },
}

impl DomainEvent for LoanEvent {
    fn tags(&self) -> Vec<Tag> {
        let (Self::Lent { member, book } | Self::GivenBack { member, book }) = self;
        vec![
            Tag::new("member", member).expect("a short member id"),
            Tag::new("book", book).expect("a short book id"),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub(crate) enum LoanError {
    #[error("{0} already holds {1} books")]
    TooMany(String, usize),
    #[error("{0} is lent")]
    Lent(String),
    #[error("{0} is not lent to {1}")]
    NotLent(String, String),
}

/// The member's open loans and the book's holder.
#[derive(Debug)]
pub(crate) struct LoanState {
    member: String,
    book: String,
    held: usize,
    holder: Option<String>,
}

impl crate::Decision for Loans {
    const NAME: &'static str = "conformance.loans";
    type Command = LoanCommand;
    type Event = LoanEvent;
    type Error = LoanError;
    type State = LoanState;

    fn target(command: &LoanCommand) -> StreamId {
        StreamId::for_aggregate("book", &command.parties().1).expect("a short book id")
    }

    fn query(command: &LoanCommand) -> EventQuery {
        let (member, book) = command.parties();
        let types = ["conformance.lent", "conformance.given_back"];
        EventQuery::items([
            QueryItem::types(types).with_tag(Tag::new("member", member).expect("short")),
            QueryItem::types(types).with_tag(Tag::new("book", book).expect("short")),
        ])
    }

    fn initial(command: &LoanCommand) -> LoanState {
        let (member, book) = command.parties();
        LoanState {
            member: member.to_owned(),
            book: book.to_owned(),
            held: 0,
            holder: None,
        }
    }

    fn apply(state: &mut LoanState, event: &LoanEvent) {
        match event {
            LoanEvent::Lent { member, book } => {
                if *member == state.member {
                    state.held += 1;
                }
                if *book == state.book {
                    state.holder = Some(member.clone());
                }
            }
            LoanEvent::GivenBack { member, book } => {
                if *member == state.member {
                    state.held -= 1;
                }
                if *book == state.book {
                    state.holder = None;
                }
            }
        }
    }

    fn decide(
        state: &LoanState,
        command: &LoanCommand,
    ) -> Result<Vec<crate::Emit<LoanEvent>>, LoanError> {
        let (member, book) = (state.member.clone(), state.book.clone());
        let to = |event| crate::Emit::to(Self::target(command), event);
        match command {
            LoanCommand::Lend { .. } => {
                if state.holder.is_some() {
                    return Err(LoanError::Lent(book));
                }
                if state.held >= Self::LIMIT {
                    return Err(LoanError::TooMany(member, state.held));
                }
                Ok(vec![to(LoanEvent::Lent { member, book })])
            }
            LoanCommand::GiveBack { .. } => {
                if state.holder.as_deref() != Some(member.as_str()) {
                    return Err(LoanError::NotLent(book, member));
                }
                Ok(vec![to(LoanEvent::GivenBack { member, book })])
            }
        }
    }
}

/// [`Loans`] decided on the book's own stream: the book's holder comes from its stream
/// ([`READS_TARGET`](crate::Decision::READS_TARGET)), the member's loans from the query, which
/// names the member only. Two members racing for one book have disjoint queries: only the
/// book's version keeps them apart.
pub(crate) struct LoansOnTheBook;

impl crate::Decision for LoansOnTheBook {
    const NAME: &'static str = "conformance.loans_on_the_book";
    const READS_TARGET: bool = true;
    type Command = LoanCommand;
    type Event = LoanEvent;
    type Error = LoanError;
    type State = LoanState;

    fn target(command: &LoanCommand) -> StreamId {
        Loans::target(command)
    }

    fn query(command: &LoanCommand) -> EventQuery {
        let types = ["conformance.lent", "conformance.given_back"];
        let member = Tag::new("member", command.parties().0).expect("short");
        EventQuery::items([QueryItem::types(types).with_tag(member)])
    }

    fn initial(command: &LoanCommand) -> LoanState {
        Loans::initial(command)
    }

    fn apply_target(state: &mut LoanState, event: &LoanEvent) -> Result<(), crate::ApplyError> {
        state.holder = match event {
            LoanEvent::Lent { member, .. } => Some(member.clone()),
            LoanEvent::GivenBack { .. } => None,
        };
        Ok(())
    }

    fn apply(state: &mut LoanState, event: &LoanEvent) {
        match event {
            LoanEvent::Lent { member, .. } if *member == state.member => state.held += 1,
            LoanEvent::GivenBack { member, .. } if *member == state.member => state.held -= 1,
            _ => {}
        }
    }

    fn decide(
        state: &LoanState,
        command: &LoanCommand,
    ) -> Result<Vec<crate::Emit<LoanEvent>>, LoanError> {
        Loans::decide(state, command)
    }
}

/// Runs a model check: `PROPTEST_CASES` cases (32 by default) of operations drawn from
/// `ops`, each run by `check` on the case's runtime; panics with proptest's minimal failing
/// case if the store disagrees with the model.
pub(crate) async fn run_model_check<S, F, Fut>(ops: S, check: F)
where
    S: proptest::strategy::Strategy + Send + 'static,
    F: Fn(S::Value) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), proptest::test_runner::TestCaseError>>,
{
    use proptest::test_runner::{Config, TestRunner};

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&ops, |ops| handle.block_on(check(ops)))
            .map_err(|e| e.to_string())
    })
    .await
    .expect("the model check ran");
    if let Err(failure) = result {
        panic!("the store disagrees with the model: {failure}");
    }
}
