use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use crate::command::{CommandContext, CommandRecord, Outcome};
use crate::event::{Headers, Json, Metadata, NewEvent, StreamId};
use crate::repository::Repository;
use crate::store::{Commit, LogEntry, LogQuery, LoggedMessage, MessageKind, Storage, StoreError};
use crate::testing::conformance::fixtures::{
    Tally, TallyCommand, TallyError, TallyEvent, at, event, settle_streams, stream,
};
use crate::version::{ExpectedVersion, Position, Version};

fn record(
    id: Uuid,
    ty: &str,
    target: &StreamId,
    correlation: Option<Uuid>,
    minutes: i64,
    outcome: Outcome,
) -> CommandRecord {
    let mut headers = Headers::new();
    headers.insert("user".into(), "ana ✓".into());
    CommandRecord {
        command_id: id,
        command_type: ty.to_owned(),
        target: target.clone(),
        payload: Json::from(json!({ "seats": 2, "note": "quote \" ✓" })),
        correlation_id: correlation,
        causation_id: Some(Uuid::new_v4()),
        recorded_at: at(minutes),
        headers,
        outcome,
    }
}

/// A command record written with a commit comes back whole from `find_command`, with or
/// without events, accepted or rejected.
pub async fn command_records_round_trip(store: Arc<dyn Storage>) {
    let s = stream("order");
    let accepted = record(
        Uuid::new_v4(),
        "order.place",
        &s,
        Some(Uuid::new_v4()),
        0,
        Outcome::Accepted {
            version: Version::new(2),
            events: 2,
        },
    );
    store
        .commit(
            Commit::new(
                s.clone(),
                ExpectedVersion::NoStream,
                vec![event("e", 1), event("e", 2)],
            )
            .with_command(accepted.clone()),
        )
        .await
        .expect("commit with a command");
    assert_eq!(
        store.find_command(accepted.command_id).await.expect("find"),
        Some(accepted)
    );

    let rejected = record(
        Uuid::new_v4(),
        "order.confirm",
        &s,
        None,
        1,
        Outcome::Rejected {
            error: Json::from(json!({ "NotReserved": null })),
            message: "not reserved".into(),
        },
    );
    store
        .commit(
            Commit::new(
                s.clone(),
                ExpectedVersion::Exact(Version::new(2)),
                Vec::new(),
            )
            .with_command(rejected.clone()),
        )
        .await
        .expect("commit of a command alone");
    assert_eq!(
        store.find_command(rejected.command_id).await.expect("find"),
        Some(rejected)
    );
    assert_eq!(
        store
            .read_stream(&s, Version::START)
            .await
            .expect("read")
            .len(),
        2,
        "a command alone adds no event"
    );
    assert_eq!(
        store.find_command(Uuid::new_v4()).await.expect("find"),
        None
    );
}

/// A commit whose command id is already recorded writes nothing and says so, even on another
/// stream and even when its expectation would also conflict.
pub async fn duplicate_command_id_writes_nothing(store: Arc<dyn Storage>) {
    let (a, b) = (stream("order"), stream("order"));
    let id = Uuid::new_v4();
    let first = record(
        id,
        "order.place",
        &a,
        None,
        0,
        Outcome::Accepted {
            version: Version::new(1),
            events: 1,
        },
    );
    store
        .commit(
            Commit::new(a.clone(), ExpectedVersion::NoStream, vec![event("e", 1)])
                .with_command(first.clone()),
        )
        .await
        .expect("first");
    let again = record(
        id,
        "order.place",
        &b,
        None,
        1,
        Outcome::Accepted {
            version: Version::new(1),
            events: 1,
        },
    );
    let err = store
        .commit(
            Commit::new(b.clone(), ExpectedVersion::NoStream, vec![event("e", 2)])
                .with_command(again.clone()),
        )
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, StoreError::DuplicateCommand { command_id } if command_id == id),
        "got {err:?}"
    );
    assert!(
        store
            .read_stream(&b, Version::START)
            .await
            .expect("read")
            .is_empty(),
        "a duplicate command wrote events"
    );
    let err = store
        .commit(
            Commit::new(a.clone(), ExpectedVersion::NoStream, vec![event("e", 3)]).with_command(
                CommandRecord {
                    target: a.clone(),
                    ..again
                },
            ),
        )
        .await
        .expect_err("duplicate");
    assert!(
        err.is_duplicate_command(),
        "a duplicate command id is reported before a conflict, got {err:?}"
    );
    assert_eq!(
        store.find_command(id).await.expect("find"),
        Some(first),
        "the first record stays"
    );
    settle_streams(&*store, std::slice::from_ref(&a)).await;
    assert_eq!(
        store
            .read_all(Position::START, 10)
            .await
            .expect("read_all")
            .len(),
        1
    );
}

/// Message-log queries OR values within a criterion and AND criteria, over commands and events.
pub async fn message_log_queries_combine_criteria(store: Arc<dyn Storage>) {
    let (orders, seats) = (stream("order"), stream("seats"));
    let (flow1, flow2) = (Uuid::new_v4(), Uuid::new_v4());
    let c1 = record(
        Uuid::new_v4(),
        "order.place",
        &orders,
        Some(flow1),
        10,
        Outcome::Accepted {
            version: Version::new(1),
            events: 1,
        },
    );
    let e1 = NewEvent::new("order.placed", Json::null())
        .with_metadata(Metadata::at(at(10)).with_correlation_id(flow1));
    store
        .commit(
            Commit::new(orders.clone(), ExpectedVersion::Any, vec![e1]).with_command(c1.clone()),
        )
        .await
        .expect("commit");
    let c2 = record(
        Uuid::new_v4(),
        "seats.reserve",
        &seats,
        Some(flow1),
        20,
        Outcome::Accepted {
            version: Version::new(1),
            events: 1,
        },
    );
    let e2 = NewEvent::new("seats.reserved", Json::null())
        .with_metadata(Metadata::at(at(20)).with_correlation_id(flow1));
    store
        .commit(Commit::new(seats.clone(), ExpectedVersion::Any, vec![e2]).with_command(c2.clone()))
        .await
        .expect("commit");
    let c3 = record(
        Uuid::new_v4(),
        "order.place",
        &orders,
        Some(flow2),
        30,
        Outcome::Accepted {
            version: Version::new(2),
            events: 1,
        },
    );
    let e3 = NewEvent::new("order.placed", Json::null())
        .with_metadata(Metadata::at(at(30)).with_correlation_id(flow2));
    store
        .commit(
            Commit::new(orders.clone(), ExpectedVersion::Any, vec![e3]).with_command(c3.clone()),
        )
        .await
        .expect("commit");

    settle_streams(&*store, &[orders.clone(), seats.clone()]).await;
    let names = |entries: Vec<LogEntry>| -> Vec<String> {
        entries
            .iter()
            .map(|e| match &e.message {
                LoggedMessage::Command(c) => format!(
                    "C {} {}",
                    c.command_type,
                    c.recorded_at.timestamp() / 60 % 100
                ),
                LoggedMessage::Event(ev) => format!(
                    "E {} {}",
                    ev.event_type,
                    ev.metadata.recorded_at.timestamp() / 60 % 100
                ),
            })
            .collect()
    };
    let q = |query: LogQuery| {
        let store = Arc::clone(&store);
        async move { names(store.query_log(&query).await.expect("query")) }
    };
    let all = q(LogQuery::new()).await;
    assert_eq!(
        all.len(),
        6,
        "every command and event is in the log: {all:?}"
    );
    let t = |m: i64| (at(m).timestamp() / 60 % 100).to_string();
    assert_eq!(
        all,
        [
            format!("C order.place {}", t(10)),
            format!("E order.placed {}", t(10)),
            format!("C seats.reserve {}", t(20)),
            format!("E seats.reserved {}", t(20)),
            format!("C order.place {}", t(30)),
            format!("E order.placed {}", t(30)),
        ],
        "log order is time, then commands before events"
    );
    assert_eq!(
        q(LogQuery::new().with_types(["order.placed", "seats.reserve"]))
            .await
            .len(),
        3,
        "types are OR-ed"
    );
    assert_eq!(
        q(LogQuery::new().with_streams([seats.clone()])).await.len(),
        2,
        "a stream selects its events and the commands for it"
    );
    assert_eq!(
        q(LogQuery::new().with_correlation_ids([flow1])).await.len(),
        4
    );
    assert_eq!(
        q(LogQuery::new().with_correlation_ids([flow1, flow2]))
            .await
            .len(),
        6,
        "correlation ids are OR-ed"
    );
    assert_eq!(
        q(LogQuery::new().with_kind(MessageKind::Command))
            .await
            .len(),
        3
    );
    assert_eq!(
        q(LogQuery::new().with_time_range(Some(at(20)), Some(at(30)))).await,
        [
            format!("C seats.reserve {}", t(20)),
            format!("E seats.reserved {}", t(20))
        ],
        "since is inclusive, until exclusive"
    );
    assert_eq!(
        q(LogQuery::new()
            .with_types(["order.placed", "order.place"])
            .with_correlation_ids([flow2])
            .with_kind(MessageKind::Event))
        .await,
        [format!("E order.placed {}", t(30))],
        "criteria are AND-ed"
    );
    assert!(
        q(LogQuery::new()
            .with_types(["order.placed"])
            .with_streams([seats]))
        .await
        .is_empty()
    );
}

/// The log pages with `after` and `limit`, losing and repeating nothing.
pub async fn message_log_pages_in_log_order(store: Arc<dyn Storage>) {
    let s = stream("order");
    for i in 0..9 {
        let minutes = [3, 1, 2][i % 3];
        let c = record(
            Uuid::new_v4(),
            "order.touch",
            &s,
            None,
            minutes,
            Outcome::Accepted {
                version: Version::new(i as u64 + 1),
                events: 1,
            },
        );
        let e =
            NewEvent::new("order.touched", Json::null()).with_metadata(Metadata::at(at(minutes)));
        store
            .commit(Commit::new(s.clone(), ExpectedVersion::Any, vec![e]).with_command(c))
            .await
            .expect("commit");
    }
    settle_streams(&*store, std::slice::from_ref(&s)).await;
    let everything = store
        .query_log(&LogQuery::new().with_limit(1000))
        .await
        .expect("query");
    assert_eq!(everything.len(), 18);
    assert!(
        everything.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "entries are in strictly increasing cursor order"
    );
    let mut paged = Vec::new();
    let mut query = LogQuery::new().with_limit(4);
    loop {
        let page = store.query_log(&query).await.expect("query");
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        query = query.with_after(last.cursor);
        paged.extend(page);
    }
    assert_eq!(paged, everything);
}

/// Through a repository, a command id handled before is not executed again: an accepted one
/// returns the same events and version, a rejected one the same error, even after the state
/// changed.
pub async fn repository_commands_are_idempotent(store: Arc<dyn Storage>) {
    let tallies = Repository::<Tally>::new(Arc::clone(&store));
    let id = format!("t{}", Uuid::new_v4().simple());
    tallies
        .handle(&id, TallyCommand::Open { limit: 10 })
        .await
        .expect("open");
    let add = CommandContext::new();
    let first = tallies
        .handle_with(&id, TallyCommand::Add { amount: 4 }, add.clone())
        .await
        .expect("add");
    assert!(!first.replayed);
    let again = tallies
        .handle_with(&id, TallyCommand::Add { amount: 4 }, add.clone())
        .await
        .expect("same id");
    assert!(again.replayed, "the second handling is a replay");
    assert_eq!(
        (again.version, again.position, &again.events),
        (first.version, first.position, &first.events)
    );
    assert_eq!(again.events, [TallyEvent::Added { amount: 4 }]);
    assert_eq!(
        tallies
            .load(&id)
            .await
            .expect("load")
            .state
            .expect("exists")
            .total,
        4,
        "the command ran once"
    );

    let over = CommandContext::new();
    let err = tallies
        .handle_with(&id, TallyCommand::Add { amount: 7 }, over.clone())
        .await
        .expect_err("over limit");
    assert_eq!(
        err.rejection(),
        Some(&TallyError::OverLimit {
            amount: 7,
            limit: 10
        })
    );
    tallies
        .handle(&id, TallyCommand::Add { amount: 0 })
        .await
        .expect("a command that causes nothing is accepted");
    let err = tallies
        .handle_with(&id, TallyCommand::Add { amount: 7 }, over.clone())
        .await
        .expect_err("same id");
    assert_eq!(
        err.rejection(),
        Some(&TallyError::OverLimit {
            amount: 7,
            limit: 10
        }),
        "the recorded rejection comes back"
    );

    let err = tallies
        .handle_with(&id, TallyCommand::Open { limit: 1 }, add.clone())
        .await
        .expect_err("reused id");
    assert!(
        matches!(err, crate::repository::CommandError::CommandIdReused { .. }),
        "a command id reused for another command type is an error, got {err:?}"
    );
    let other = format!("t{}", Uuid::new_v4().simple());
    let err = tallies
        .handle_with(&other, TallyCommand::Open { limit: 1 }, add)
        .await
        .expect_err("reused id");
    assert!(
        matches!(err, crate::repository::CommandError::CommandIdReused { .. }),
        "got {err:?}"
    );

    let logged = store
        .find_command(over.command_id)
        .await
        .expect("find")
        .expect("recorded");
    assert!(matches!(logged.outcome, Outcome::Rejected { .. }));
    assert_eq!(
        logged.correlation_id,
        Some(over.command_id),
        "a command starting a flow correlates by its own id"
    );
    let events = store
        .read_stream(
            &<Tally as crate::aggregate::Aggregate>::stream_id(&id).expect("stream"),
            Version::START,
        )
        .await
        .expect("read");
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].metadata.command_id,
        Some(first.command_id),
        "events name their command"
    );
    assert_eq!(
        events[1].metadata.causation_id,
        Some(first.command_id),
        "a command causes its events"
    );
}
