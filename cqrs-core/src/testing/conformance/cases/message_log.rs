//! Group `message_log`: command records, duplicates and log queries.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use crate::command::{CommandRecord, Outcome};
use crate::event::{Headers, Json, Metadata, NewEvent, StreamId};
use crate::store::{Commit, LogEntry, LogQuery, LoggedMessage, MessageKind, StoreError};
use crate::testing::conformance::EventsAndLog;
use crate::testing::conformance::fixtures::{at, event, settle_streams, stream};
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
pub async fn command_records_round_trip(store: Arc<dyn EventsAndLog>) {
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

    // The repository's shape: the events name their command, and carry its headers or not.
    let other = stream("order");
    let mut version = 0;
    for (record_headers, event_headers) in [(true, true), (false, true), (true, false)] {
        let mut command = record(
            Uuid::new_v4(),
            "order.place",
            &other,
            Some(Uuid::new_v4()),
            2,
            Outcome::Accepted {
                version: Version::new(version + 2),
                events: 2,
            },
        );
        if !record_headers {
            command.headers = Headers::new();
        }
        let events = (1..=2)
            .map(|n| {
                let mut metadata = Metadata::at(command.recorded_at)
                    .with_causation_id(command.command_id)
                    .with_command_id(command.command_id);
                if event_headers {
                    metadata = metadata.with_header("user", "ana ✓");
                }
                event("order.placed", n).with_metadata(metadata)
            })
            .collect();
        store
            .commit(
                Commit::new(other.clone(), ExpectedVersion::Any, events)
                    .with_command(command.clone()),
            )
            .await
            .expect("commit with a command its events name");
        version += 2;
        assert_eq!(
            store.find_command(command.command_id).await.expect("find"),
            Some(command),
            "headers on the record: {record_headers}, on its events: {event_headers}"
        );
    }
}

/// A commit whose command id is already recorded writes nothing and says so, even on another
/// stream and even when its expectation would also conflict.
pub async fn duplicate_command_id_writes_nothing(store: Arc<dyn EventsAndLog>) {
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
    // Its event names it, as the repository's do.
    let named = event("e", 1).with_metadata(Metadata::new().with_command_id(id));
    store
        .commit(
            Commit::new(a.clone(), ExpectedVersion::NoStream, vec![named])
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
    let err = store
        .commit(
            Commit::new(b.clone(), ExpectedVersion::Any, Vec::new()).with_command(CommandRecord {
                target: b.clone(),
                ..first.clone()
            }),
        )
        .await
        .expect_err("duplicate");
    assert!(
        err.is_duplicate_command(),
        "a command alone with a known id, got {err:?}"
    );
    assert_eq!(
        store.find_command(id).await.expect("find"),
        Some(first),
        "the first record stays"
    );

    // The other way round: recorded alone first, then with events that name it.
    let c = stream("order");
    let alone = record(
        Uuid::new_v4(),
        "order.confirm",
        &c,
        None,
        2,
        Outcome::Rejected {
            error: Json::null(),
            message: "not yet".into(),
        },
    );
    store
        .commit(
            Commit::new(c.clone(), ExpectedVersion::Any, Vec::new()).with_command(alone.clone()),
        )
        .await
        .expect("alone");
    let named = event("e", 4).with_metadata(Metadata::new().with_command_id(alone.command_id));
    let err = store
        .commit(
            Commit::new(c.clone(), ExpectedVersion::NoStream, vec![named]).with_command(
                CommandRecord {
                    outcome: Outcome::Accepted {
                        version: Version::new(1),
                        events: 1,
                    },
                    ..alone.clone()
                },
            ),
        )
        .await
        .expect_err("duplicate");
    assert!(err.is_duplicate_command(), "got {err:?}");
    assert_eq!(
        store.find_command(alone.command_id).await.expect("find"),
        Some(alone)
    );
    settle_streams(&*store, &[a.clone(), c.clone()]).await;
    assert_eq!(
        store
            .read_all(Position::START, 10)
            .await
            .expect("read_all")
            .len(),
        1
    );
}

/// Message-log queries OR values within a criterion and AND criteria, over commands and
/// events, with any number of values in a criterion.
pub async fn message_log_queries_combine_criteria(store: Arc<dyn EventsAndLog>) {
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
    // Two of the three commands' events name them, as the repository's do; one's do not.
    let e1 = NewEvent::new("order.placed", Json::null()).with_metadata(
        Metadata::at(at(10))
            .with_correlation_id(flow1)
            .with_command_id(c1.command_id),
    );
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
    let e3 = NewEvent::new("order.placed", Json::null()).with_metadata(
        Metadata::at(at(30))
            .with_correlation_id(flow2)
            .with_command_id(c3.command_id),
    );
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
            .with_streams([seats.clone()]))
        .await
        .is_empty()
    );

    // Any number of values: an owner's every order, say (SQLite binds at most 32,766
    // parameters in a statement).
    const MANY: usize = 40_000;
    let streams: Vec<StreamId> = [orders, seats]
        .into_iter()
        .chain((0..MANY).map(|n| StreamId::new(format!("none-{n}")).expect("short")))
        .collect();
    assert_eq!(
        q(LogQuery::new().with_streams(streams)).await.len(),
        6,
        "{MANY} streams"
    );
    let types: Vec<String> = std::iter::once("order.placed".to_owned())
        .chain((0..MANY).map(|n| format!("none.{n}")))
        .collect();
    assert_eq!(
        q(LogQuery::new().with_types(types)).await.len(),
        2,
        "{MANY} types"
    );
    let flows: Vec<Uuid> = std::iter::once(flow1)
        .chain((0..MANY).map(|_| Uuid::new_v4()))
        .collect();
    assert_eq!(
        q(LogQuery::new().with_correlation_ids(flows)).await.len(),
        4,
        "{MANY} correlation ids"
    );
}

/// The log pages with `after` and `limit`, losing and repeating nothing.
pub async fn message_log_pages_in_log_order(store: Arc<dyn EventsAndLog>) {
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
        // Every other command's event names it, so records of both kinds share minutes.
        let mut metadata = Metadata::at(at(minutes));
        if i % 2 == 0 {
            metadata = metadata.with_command_id(c.command_id);
        }
        let e = NewEvent::new("order.touched", Json::null()).with_metadata(metadata);
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

/// While writers commit commands with their events, every log query sees each command record
/// together with all the events committed with it, or neither: a reader never catches a commit
/// half-visible (the record without its events, or events whose record is missing).
pub async fn log_queries_never_tear_a_command_from_its_events(store: Arc<dyn EventsAndLog>) {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    const WRITERS: u64 = 4;
    const COMMANDS: u64 = 40;
    let flow = Uuid::new_v4();
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let s = stream("order");
                let mut version = 0;
                for c in 0..COMMANDS {
                    let count = 1 + (w + c) % 3;
                    let id = Uuid::new_v4();
                    version += count;
                    let mut command = record(
                        id,
                        "order.place",
                        &s,
                        Some(flow),
                        0,
                        Outcome::Accepted {
                            version: Version::new(version),
                            events: count,
                        },
                    );
                    command.recorded_at = Metadata::new().recorded_at;
                    let events = (0..count)
                        .map(|n| {
                            let mut e = event("order.placed", n);
                            e.metadata = Metadata::at(command.recorded_at)
                                .with_correlation_id(flow)
                                .with_causation_id(id)
                                .with_command_id(id);
                            e
                        })
                        .collect();
                    store
                        .commit(
                            Commit::new(s.clone(), ExpectedVersion::Any, events)
                                .with_command(command),
                        )
                        .await
                        .expect("commit");
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            tokio::spawn(async move {
                let mut queries = 0_u32;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let query = if r == 0 {
                        LogQuery::new().with_correlation_ids([flow])
                    } else {
                        LogQuery::new().with_types(["order.place", "order.placed"])
                    };
                    let entries = store
                        .query_log(&query.with_limit(100_000))
                        .await
                        .expect("query_log");
                    let mut expected: HashMap<Uuid, u64> = HashMap::new();
                    let mut seen: HashMap<Uuid, u64> = HashMap::new();
                    for entry in &entries {
                        match &entry.message {
                            LoggedMessage::Command(c) => {
                                if let Outcome::Accepted { events, .. } = c.outcome {
                                    expected.insert(c.command_id, events);
                                }
                            }
                            LoggedMessage::Event(e) => {
                                let id = e.metadata.command_id.expect("events name their command");
                                *seen.entry(id).or_default() += 1;
                            }
                        }
                    }
                    for (id, n) in &seen {
                        assert_eq!(
                            expected.get(id),
                            Some(n),
                            "query {queries}: a torn read: {n} event(s) of command {id} are \
                             visible, its record says {:?}",
                            expected.get(id)
                        );
                    }
                    for (id, n) in &expected {
                        assert_eq!(
                            seen.get(id).copied().unwrap_or(0),
                            *n,
                            "query {queries}: a torn read: the record of command {id} is \
                             visible without its {n} event(s)"
                        );
                    }
                    queries += 1;
                    if finished {
                        let want = WRITERS * COMMANDS;
                        assert_eq!(
                            expected.len() as u64,
                            want,
                            "the last query sees every command"
                        );
                        return queries;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    // Each reader ends with a query that must see everything.
    settle_log(&*store, flow, WRITERS * COMMANDS).await;
    done.store(true, Ordering::Release);
    for reader in readers {
        let queries = reader.await.expect("reader");
        assert!(queries >= 1);
    }
}

/// Waits until the log shows `commands` command records of the flow (a store may show a commit
/// in its log a little after it returns, as long as it shows it whole).
async fn settle_log(store: &dyn EventsAndLog, flow: Uuid, commands: u64) {
    let deadline = tokio::time::Instant::now() + crate::testing::conformance::fixtures::PATIENCE;
    loop {
        let seen = store
            .query_log(
                &LogQuery::new()
                    .with_kind(MessageKind::Command)
                    .with_correlation_ids([flow])
                    .with_limit(100_000),
            )
            .await
            .expect("query_log")
            .len() as u64;
        if seen == commands {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log shows {seen} of {commands} committed command records"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
