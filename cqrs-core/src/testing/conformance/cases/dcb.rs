//! Group `dcb`: what a [`DcbStore`] keeps — tags, reads by query, and commits under an append
//! condition, atomic across streams and correct under racing deciders.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::command::{CommandRecord, Outcome};
use crate::dcb::{
    AppendCondition, ConditionalCommit, DcbStore, EventQuery, QueryItem, StreamAppend, Tag,
};
use crate::event::{EventFilter, Headers, Json, NewEvent, RecordedEvent, StreamId};
use crate::store::{Appended, StoreError};
use crate::testing::conformance::fixtures::{
    at, event, n_of, run_model_check, settle, stream, take,
};
use crate::version::{ExpectedVersion, Position, Version};

/// A tag unique to this call: `{key}:{value}-{random}`.
fn tag(key: &str, value: &str) -> Tag {
    Tag::new(key, format!("{value}-{}", Uuid::new_v4().simple())).expect("valid tag")
}

fn tagged(ty: &str, n: u64, tags: &[&Tag]) -> NewEvent {
    event(ty, n).with_tags(tags.iter().map(|t| (*t).clone()))
}

fn one(stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> ConditionalCommit {
    ConditionalCommit::new(vec![StreamAppend::new(stream.clone(), expected, events)])
}

fn ns(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(n_of).collect()
}

fn last_position(appended: &[Appended]) -> Option<Position> {
    appended.iter().filter_map(|a| a.position).max()
}

/// Every matching event from `from` on, in pages of 2 (so stores' paging is exercised).
async fn read_query(
    store: &dyn DcbStore,
    query: &EventQuery,
    from: Position,
) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut from = from;
    loop {
        let page = store.read_query(query, from, 2).await.expect("read_query");
        assert!(page.len() <= 2, "read_query returned more than its limit");
        let Some(last) = page.last() else { return all };
        from = last.position.next();
        all.extend(page);
    }
}

/// Tags come back as written on every read; queries select by type (any of an item's),
/// by tag (all of an item's), by any item, or everything, from a position on, in log order.
pub async fn tags_round_trip_and_queries_select_by_type_and_tag(store: Arc<dyn DcbStore>) {
    let (book, member, other) = (tag("book", "7"), tag("member", "3"), tag("member", "4"));
    let (s1, s2) = (stream("loan"), stream("loan"));
    let start = store.head().await.expect("head");
    // 0: lent(book, member)   1: returned(book, member)   2: lent(member)   3: lent(other)
    // 4: shelved(book)        5: untagged lent
    store
        .append(
            &s1,
            ExpectedVersion::NoStream,
            vec![
                tagged("dcb.lent", 0, &[&member, &book]),
                tagged("dcb.returned", 1, &[&book, &member]),
            ],
        )
        .await
        .expect("append with tags");
    let appended = store
        .commit_if(ConditionalCommit::new(vec![
            StreamAppend::new(
                s2.clone(),
                ExpectedVersion::NoStream,
                vec![
                    tagged("dcb.lent", 2, &[&member]),
                    tagged("dcb.lent", 3, &[&other]),
                ],
            ),
            StreamAppend::new(
                s1.clone(),
                ExpectedVersion::Exact(Version::new(2)),
                vec![tagged("dcb.shelved", 4, &[&book]), event("dcb.lent", 5)],
            ),
        ]))
        .await
        .expect("a commit over two streams");
    settle(&*store, last_position(&appended)).await;

    let read = store
        .read_stream(&s1, Version::START)
        .await
        .expect("read_stream");
    let mut sorted = vec![book.clone(), member.clone()];
    sorted.sort();
    assert_eq!(
        read[0].tags, sorted,
        "tags come back sorted, on read_stream"
    );
    assert_eq!(read[1].tags, sorted);
    assert_eq!(read[2].tags, std::slice::from_ref(&book));
    assert!(read[3].tags.is_empty(), "an event without tags has none");
    let all = store.read_all(start.next(), 100).await.expect("read_all");
    assert_eq!(
        ns(&all),
        [0, 1, 2, 3, 4, 5],
        "a conditional commit's streams take positions in order"
    );
    assert_eq!(
        all[3].tags,
        std::slice::from_ref(&other),
        "tags come back on read_all"
    );

    let by = |items: Vec<QueryItem>| EventQuery::items(items);
    let cases: Vec<(&str, EventQuery, Vec<u64>)> = vec![
        (
            "one tag",
            by(vec![QueryItem::tagged([book.clone()])]),
            vec![0, 1, 4],
        ),
        (
            "all of an item's tags",
            by(vec![QueryItem::tagged([book.clone(), member.clone()])]),
            vec![0, 1],
        ),
        (
            "a type and a tag",
            by(vec![
                QueryItem::types(["dcb.lent"]).with_tag(member.clone()),
            ]),
            vec![0, 2],
        ),
        (
            "any of an item's types",
            by(vec![
                QueryItem::types(["dcb.lent", "dcb.shelved"]).with_tag(book.clone()),
            ]),
            vec![0, 4],
        ),
        (
            "any item",
            by(vec![
                QueryItem::tagged([other.clone()]),
                QueryItem::types(["dcb.shelved"]).with_tag(book.clone()),
            ]),
            vec![3, 4],
        ),
        (
            "items that overlap",
            by(vec![
                QueryItem::tagged([member.clone()]),
                QueryItem::tagged([book.clone(), member.clone()]),
            ]),
            vec![0, 1, 2],
        ),
        (
            "a tag nothing carries",
            by(vec![QueryItem::tagged([tag("book", "none")])]),
            vec![],
        ),
    ];
    for (what, query, expected) in cases {
        assert_eq!(
            ns(&read_query(&*store, &query, start.next()).await),
            expected,
            "{what}"
        );
    }
    let lent = by(vec![QueryItem::types(["dcb.lent"])]);
    let mine: Vec<u64> = read_query(&*store, &lent, start.next())
        .await
        .iter()
        .filter(|e| e.stream == s1 || e.stream == s2)
        .map(n_of)
        .collect();
    assert_eq!(
        mine,
        [0, 2, 3, 5],
        "an item with types only selects by type"
    );
    let everything = read_query(&*store, &EventQuery::all(), start.next()).await;
    assert_eq!(
        ns(&everything),
        [0, 1, 2, 3, 4, 5],
        "EventQuery::all() reads the whole log"
    );
    let from_third = read_query(
        &*store,
        &by(vec![QueryItem::tagged([book.clone()])]),
        all[2].position,
    )
    .await;
    assert_eq!(ns(&from_third), [4], "reads start at `from`, inclusive");
    let from_fifth = read_query(
        &*store,
        &by(vec![QueryItem::tagged([book.clone()])]),
        all[4].position,
    )
    .await;
    assert_eq!(ns(&from_fifth), [4]);
}

/// The condition at its edges: `none_match` on nothing holds; a matching event after `after`
/// fails it (reporting the first such position), one at or before `after` does not; an
/// `after` beyond the head holds; events matching only part of an item do not count; invalid
/// queries are rejected; a failed commit writes nothing.
pub async fn conditions_hold_and_fail_at_their_edges(store: Arc<dyn DcbStore>) {
    let (slug, other) = (tag("slug", "devconf"), tag("slug", "other"));
    let s = stream("conference");
    let query = EventQuery::items([QueryItem::types(["dcb.created"]).with_tag(slug.clone())]);
    let create = |n: u64| tagged("dcb.created", n, &[&slug]);

    let first = store
        .commit_if(
            one(&s, ExpectedVersion::NoStream, vec![create(0)])
                .with_condition(AppendCondition::none_match(query.clone())),
        )
        .await
        .expect("nothing matches yet");
    let first_at = first[0].position.expect("one event");
    settle(&*store, Some(first_at)).await;

    let again = store
        .commit_if(
            one(&s, ExpectedVersion::Any, vec![create(1)])
                .with_condition(AppendCondition::none_match(query.clone())),
        )
        .await;
    match again {
        Err(StoreError::ConditionFailed { after: None, found }) => assert_eq!(found, first_at),
        other => panic!("a second create must fail its condition at {first_at}, got {other:?}"),
    }
    assert!(
        again_is_conflict(&store, &s, &query).await,
        "a failed condition is a conflict"
    );

    let before = Position::new(first_at.get() - 1);
    match store
        .commit_if(
            one(&s, ExpectedVersion::Any, vec![create(2)])
                .with_condition(AppendCondition::none_after(query.clone(), before)),
        )
        .await
    {
        Err(StoreError::ConditionFailed { after, found }) => {
            assert_eq!(
                (after, found),
                (Some(before), first_at),
                "after just before the match"
            );
        }
        other => panic!("a match after `after` must fail the condition, got {other:?}"),
    }

    // Events that match only part of the query: another tag, another type, a tag of another
    // key with the same value.
    let partial = store
        .commit_if(ConditionalCommit::new(vec![StreamAppend::new(
            stream("conference"),
            ExpectedVersion::NoStream,
            vec![
                tagged("dcb.created", 3, &[&other]),
                tagged("dcb.renamed", 4, &[&slug]),
                tagged(
                    "dcb.created",
                    5,
                    &[&Tag::new("name", slug.value()).expect("valid")],
                ),
            ],
        )]))
        .await
        .expect("unconditional");
    let head = last_position(&partial).expect("events");
    settle(&*store, Some(head)).await;

    let at_match = store
        .commit_if(
            one(&s, ExpectedVersion::Any, vec![event("dcb.noted", 6)])
                .with_condition(AppendCondition::none_after(query.clone(), first_at)),
        )
        .await
        .expect("a match at `after` is allowed, and partial matches after it do not count");
    settle(&*store, last_position(&at_match)).await;
    let beyond = Position::new(head.get() + 1_000);
    store
        .commit_if(
            one(&s, ExpectedVersion::Any, vec![event("dcb.noted", 7)])
                .with_condition(AppendCondition::none_after(query.clone(), beyond)),
        )
        .await
        .expect("an `after` beyond the head holds");

    let everything = store
        .commit_if(
            one(&s, ExpectedVersion::Any, vec![event("dcb.noted", 8)])
                .with_condition(AppendCondition::none_after(EventQuery::all(), first_at)),
        )
        .await;
    assert!(
        matches!(everything, Err(StoreError::ConditionFailed { found, .. }) if found > first_at),
        "EventQuery::all() in a condition fails on any later event: {everything:?}"
    );

    for (what, bad) in [
        ("no items", EventQuery::items([])),
        (
            "an item with neither types nor tags",
            EventQuery::items([QueryItem::default()]),
        ),
    ] {
        let result = store
            .commit_if(
                one(&s, ExpectedVersion::Any, vec![event("dcb.noted", 9)])
                    .with_condition(AppendCondition::none_match(bad.clone())),
            )
            .await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{what}: {result:?}"
        );
        let read = store.read_query(&bad, Position::START, 10).await;
        assert!(
            matches!(read, Err(StoreError::Invalid(_))),
            "{what} in a read: {read:?}"
        );
    }
    let events = store
        .read_stream(&s, Version::START)
        .await
        .expect("read_stream");
    assert_eq!(
        ns(&events),
        [0, 6, 7],
        "failed and invalid commits wrote nothing"
    );
}

async fn again_is_conflict(store: &Arc<dyn DcbStore>, s: &StreamId, query: &EventQuery) -> bool {
    let result = store
        .commit_if(
            one(s, ExpectedVersion::Any, vec![event("dcb.created", 99)])
                .with_condition(AppendCondition::none_match(query.clone())),
        )
        .await;
    result.is_err_and(|e| e.is_conflict())
}

/// A conditional commit is one transaction over its streams: a stale expected version on any
/// stream (the command's target given no events included), a failed condition or a command id
/// handled before writes nothing; a commit that names a stream twice, has a stream without
/// events, or records a command for a stream it does not append to is invalid.
pub async fn conditional_commits_span_streams_atomically(store: Arc<dyn DcbStore>) {
    let (a, b) = (stream("member"), stream("book"));
    let loan = tag("loan", "1");
    store
        .append(&a, ExpectedVersion::NoStream, vec![event("dcb.joined", 0)])
        .await
        .expect("append");
    let record = |target: &StreamId, id: Uuid| CommandRecord {
        command_id: id,
        command_type: "dcb.lend".into(),
        target: target.clone(),
        payload: Json::null(),
        correlation_id: None,
        causation_id: None,
        recorded_at: at(0),
        headers: Headers::new(),
        outcome: Outcome::Accepted {
            version: Version::new(2),
            events: 3,
        },
    };
    let both = |a_expected: Version, id: Uuid| {
        ConditionalCommit::new(vec![
            StreamAppend::new(
                a.clone(),
                ExpectedVersion::Exact(a_expected),
                vec![tagged("dcb.lent", 1, &[&loan])],
            ),
            StreamAppend::new(
                b.clone(),
                ExpectedVersion::NoStream,
                vec![tagged("dcb.lent", 2, &[&loan]), event("dcb.noted", 3)],
            ),
        ])
        .with_command(record(&b, id))
    };

    let stale = store.commit_if(both(Version::ZERO, Uuid::new_v4())).await;
    match stale {
        Err(StoreError::Conflict { stream, actual, .. }) => {
            assert_eq!(
                (stream, actual),
                (a.clone(), Version::new(1)),
                "the stale stream is named"
            );
        }
        other => panic!("a stale stream must fail the whole commit, got {other:?}"),
    }
    let command_id = Uuid::new_v4();
    let appended = store
        .commit_if(both(Version::new(1), command_id))
        .await
        .expect("commit");
    assert_eq!(appended.len(), 2, "one result per stream, in order");
    assert_eq!(appended[0].version, Version::new(2));
    assert_eq!(appended[1].version, Version::new(2));
    let (pa, pb) = (
        appended[0].position.expect("event"),
        appended[1].position.expect("events"),
    );
    assert_eq!(
        pb.get(),
        pa.get() + 2,
        "the streams' events take consecutive positions"
    );
    settle(&*store, Some(pb)).await;

    let again = store.commit_if(both(Version::new(2), command_id)).await;
    assert!(
        matches!(again, Err(StoreError::DuplicateCommand { command_id: id }) if id == command_id),
        "the command is recorded with the events, and a command id handled before writes \
         nothing: {again:?}"
    );
    let failed = store
        .commit_if(
            ConditionalCommit::new(vec![StreamAppend::new(
                b.clone(),
                ExpectedVersion::Any,
                vec![event("dcb.noted", 4)],
            )])
            .with_condition(AppendCondition::none_after(
                EventQuery::items([QueryItem::tagged([loan.clone()])]),
                pa,
            )),
        )
        .await;
    assert!(
        matches!(failed, Err(StoreError::ConditionFailed { found, .. }) if found == Position::new(pa.get() + 1)),
        "{failed:?}"
    );

    let c = stream("other");
    let invalid = [
        (
            "a stream named twice",
            ConditionalCommit::new(vec![
                StreamAppend::new(c.clone(), ExpectedVersion::Any, vec![event("dcb.noted", 5)]),
                StreamAppend::new(c.clone(), ExpectedVersion::Any, vec![event("dcb.noted", 6)]),
            ]),
        ),
        (
            "a stream without events",
            ConditionalCommit::new(vec![StreamAppend::new(
                c.clone(),
                ExpectedVersion::Any,
                vec![],
            )]),
        ),
        ("no streams", ConditionalCommit::new(vec![])),
        (
            "a command for another stream",
            one(&c, ExpectedVersion::Any, vec![event("dcb.noted", 7)])
                .with_command(record(&a, Uuid::new_v4())),
        ),
    ];
    for (what, commit) in invalid {
        let result = store.commit_if(commit).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{what}: {result:?}"
        );
    }

    // A rejection is recorded on the command's target with no events, under the condition it
    // was decided on; a command whose events all go elsewhere is recorded on its target too.
    // The record alone still holds its target to the version the decision read.
    let stale_record = store
        .commit_if(
            one(&a, ExpectedVersion::Exact(Version::new(1)), vec![]).with_command(CommandRecord {
                outcome: Outcome::Rejected {
                    error: Json::null(),
                    message: "decided on version 1".into(),
                },
                ..record(&a, Uuid::new_v4())
            }),
        )
        .await;
    assert!(
        matches!(stale_record, Err(StoreError::Conflict { ref stream, actual, .. }) if *stream == a && actual == Version::new(2)),
        "a target that moved refuses even a record alone: {stale_record:?}"
    );
    let rejection_id = Uuid::new_v4();
    let rejected = CommandRecord {
        outcome: Outcome::Rejected {
            error: Json::null(),
            message: "no".into(),
        },
        ..record(&c, rejection_id)
    };
    let recorded = store
        .commit_if(
            one(&c, ExpectedVersion::Any, vec![])
                .with_condition(AppendCondition::none_after(
                    EventQuery::items([QueryItem::tagged([loan.clone()])]),
                    Position::new(pa.get() + 1),
                ))
                .with_command(rejected.clone()),
        )
        .await
        .expect("a record alone");
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].version, recorded[0].position),
        (Version::ZERO, None),
        "nothing was appended to the target"
    );
    let again = store
        .commit_if(one(&c, ExpectedVersion::Any, vec![]).with_command(rejected))
        .await;
    assert!(
        matches!(again, Err(StoreError::DuplicateCommand { command_id }) if command_id == rejection_id),
        "the record alone was kept: {again:?}"
    );
    let elsewhere = store
        .commit_if(
            ConditionalCommit::new(vec![
                StreamAppend::new(
                    a.clone(),
                    ExpectedVersion::Exact(Version::new(2)),
                    vec![event("dcb.noted", 8)],
                ),
                StreamAppend::new(c.clone(), ExpectedVersion::NoStream, vec![]),
            ])
            .with_command(record(&c, Uuid::new_v4())),
        )
        .await
        .expect("events elsewhere, the record on the target");
    assert_eq!(elsewhere[0].version, Version::new(3));
    assert_eq!(elsewhere[1].version, Version::ZERO);

    assert_eq!(
        ns(&store.read_stream(&a, Version::START).await.expect("read")),
        [0, 1, 8]
    );
    assert_eq!(
        ns(&store.read_stream(&b, Version::START).await.expect("read")),
        [2, 3]
    );
    assert!(
        store
            .read_stream(&c, Version::START)
            .await
            .expect("read")
            .is_empty()
    );
}

/// Deciders racing on one counter: each reads the counter's events, then appends the next
/// increment on the condition that none came after what it read, retrying when refused.
/// Every increment lands exactly once, and each saw a different count: the decisions were
/// serialized. `CQRS_DCB_ROUNDS` increments in all (3,000 by default).
pub async fn racing_deciders_on_one_tag_are_serialized(store: Arc<dyn DcbStore>) {
    const DECIDERS: u64 = 4;
    let rounds: u64 = std::env::var("CQRS_DCB_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let per_decider = rounds.div_ceil(DECIDERS);
    let counter = tag("counter", "shared");
    let query =
        EventQuery::items([QueryItem::types(["dcb.incremented"]).with_tag(counter.clone())]);
    let start = store.head().await.expect("head");
    let refusals = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(usize::try_from(DECIDERS).expect("small")));
    let mut deciders = Vec::new();
    for d in 0..DECIDERS {
        let (store, query, counter) = (Arc::clone(&store), query.clone(), counter.clone());
        let (refusals, barrier) = (Arc::clone(&refusals), Arc::clone(&barrier));
        deciders.push(tokio::spawn(async move {
            let own = stream("decider");
            // What this decider knows of the counter: how many increments, up to which
            // position. Each attempt reads only what came after (as a decider keeping its
            // state between commands would), then decides on the whole.
            let (mut count, mut last) = (0u64, None::<Position>);
            barrier.wait().await;
            for _ in 0..per_decider {
                loop {
                    let from = last.map_or(start.next(), Position::next);
                    let new = store
                        .read_query(&query, from, 10_000)
                        .await
                        .expect("read_query");
                    count += new.len() as u64;
                    last = new.last().map(|e| e.position).or(last);
                    let condition = match last {
                        Some(at) => AppendCondition::none_after(query.clone(), at),
                        None => AppendCondition::none_match(query.clone()),
                    };
                    let increment = event("dcb.incremented", count)
                        .with_tags([counter.clone(), Tag::new("decider", d).expect("valid")]);
                    match store
                        .commit_if(
                            one(&own, ExpectedVersion::Any, vec![increment])
                                .with_condition(condition),
                        )
                        .await
                    {
                        Ok(appended) => {
                            settle(&*store, last_position(&appended)).await;
                            break;
                        }
                        Err(StoreError::ConditionFailed { .. }) => {
                            refusals.fetch_add(1, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                        }
                        Err(other) => panic!("decider {d}: {other}"),
                    }
                }
            }
        }));
    }
    for decider in deciders {
        decider.await.expect("decider");
    }
    let all = read_query(&*store, &query, start.next()).await;
    let total = per_decider * DECIDERS;
    assert_eq!(
        all.len() as u64,
        total,
        "every increment landed exactly once"
    );
    assert_eq!(
        ns(&all),
        (0..total).collect::<Vec<_>>(),
        "each increment saw the count before it: two deciders never decided on the same state"
    );
    let mut by_decider: HashMap<String, u64> = HashMap::new();
    for e in &all {
        let d = e
            .tags
            .iter()
            .find(|t| t.key() == "decider")
            .expect("decider tag");
        *by_decider.entry(d.value().to_owned()).or_default() += 1;
    }
    assert!(
        by_decider.values().all(|n| *n == per_decider),
        "{by_decider:?}"
    );
    tracing::debug!(
        refusals = refusals.load(Ordering::Relaxed),
        total,
        "racing deciders"
    );
}

/// Deciders on disjoint tags never refuse each other: a condition is about its query, not
/// the log. (How much they slow each other is measured in the benchmarks.)
pub async fn deciders_on_disjoint_tags_never_conflict(store: Arc<dyn DcbStore>) {
    const DECIDERS: usize = 6;
    const ROUNDS: u64 = 40;
    let barrier = Arc::new(Barrier::new(DECIDERS));
    let mut deciders = Vec::new();
    for d in 0..DECIDERS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        deciders.push(tokio::spawn(async move {
            let mine = tag("account", &d.to_string());
            let query = EventQuery::items([QueryItem::tagged([mine.clone()])]);
            let own = stream("account");
            barrier.wait().await;
            let mut last = None;
            for n in 0..ROUNDS {
                let condition = match last {
                    Some(at) => AppendCondition::none_after(query.clone(), at),
                    None => AppendCondition::none_match(query.clone()),
                };
                let appended = store
                    .commit_if(
                        one(
                            &own,
                            ExpectedVersion::Any,
                            vec![tagged("dcb.deposited", n, &[&mine])],
                        )
                        .with_condition(condition),
                    )
                    .await
                    .unwrap_or_else(|e| {
                        panic!("decider {d} round {n} was refused by others' events: {e}")
                    });
                last = appended[0].position;
            }
        }));
    }
    for decider in deciders {
        decider.await.expect("decider");
    }
}

/// A live subscriber sees every event of conditional commits (several streams each, racing)
/// exactly once, in position order, each stream's versions without a gap.
pub async fn subscribers_see_conditional_commits_once_in_order(store: Arc<dyn DcbStore>) {
    const WRITERS: u64 = 4;
    const COMMITS: u64 = 20;
    let total = usize::try_from(WRITERS * COMMITS * 3).expect("small");
    let start = store.head().await.expect("head");
    let mut subscription = store.subscribe(start.next(), EventFilter::all());
    let subscriber = tokio::spawn(async move { take(&mut subscription, total).await });
    let shared = stream("shared");
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, shared) = (Arc::clone(&store), shared.clone());
        writers.push(tokio::spawn(async move {
            let (own, mine) = (stream("writer"), tag("writer", &w.to_string()));
            let query = EventQuery::items([QueryItem::tagged([mine.clone()])]);
            let mut last = Position::ZERO;
            for c in 0..COMMITS {
                let n = w * 1_000 + c * 10;
                let commit = ConditionalCommit::new(vec![
                    StreamAppend::new(
                        own.clone(),
                        ExpectedVersion::Exact(Version::new(c * 2)),
                        vec![tagged("dcb.a", n, &[&mine]), event("dcb.b", n + 1)],
                    ),
                    StreamAppend::new(
                        shared.clone(),
                        ExpectedVersion::Any,
                        vec![event("dcb.c", n + 2)],
                    ),
                ])
                .with_condition(AppendCondition::none_after(query.clone(), last));
                let appended = store
                    .commit_if(commit)
                    .await
                    .expect("only this writer carries its tag");
                last = appended[0].position.expect("events");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let seen = subscriber.await.expect("subscriber");
    let ids: HashSet<_> = seen.iter().map(|e| e.metadata.event_id).collect();
    assert_eq!(ids.len(), total, "the subscriber saw an event twice");
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "out of order"
    );
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    for e in &seen {
        let v = versions.entry(e.stream.clone()).or_default();
        *v += 1;
        assert_eq!(
            e.version.get(),
            *v,
            "stream {} skipped or reordered a version",
            e.stream
        );
    }
    for (i, first) in seen
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event_type == "dcb.a")
    {
        let rest: Vec<u64> = seen[i + 1..i + 3].iter().map(n_of).collect();
        assert_eq!(
            rest,
            [n_of(first) + 1, n_of(first) + 2],
            "a commit's events are contiguous"
        );
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Append one event of type `ty` with the tags in `tags` (bits), unconditionally.
    Append { stream: usize, ty: usize, tags: u8 },
    /// The same, on the condition that no event matches `items` after the model event at
    /// index `after` (`None`: at all; an index past the end: after the last).
    Decide {
        stream: usize,
        ty: usize,
        tags: u8,
        items: Vec<(u8, u8)>,
        after: Option<usize>,
    },
    /// Read the events matching `items` from the model event at index `from`.
    Read { items: Vec<(u8, u8)>, from: usize },
}

const TYPES: usize = 2;
const TAGS: usize = 3;

fn items() -> impl Strategy<Value = Vec<(u8, u8)>> {
    // (types bits, tags bits); an item needs one of them.
    proptest::collection::vec(
        (0u8..4, 0u8..8).prop_filter("an item names something", |(t, g)| *t != 0 || *g != 0),
        1..3,
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 0..TYPES, 0u8..8).prop_map(|(stream, ty, tags)| Op::Append { stream, ty, tags }),
        3 => (0..2usize, 0..TYPES, 0u8..8, items(), proptest::option::of(0usize..12))
            .prop_map(|(stream, ty, tags, items, after)| Op::Decide { stream, ty, tags, items, after }),
        2 => (items(), 0usize..12).prop_map(|(items, from)| Op::Read { items, from }),
    ]
}

/// Random appends, conditional appends and reads by query agree with a plain model: a list of
/// (type, tags) in log order, where a condition fails exactly when a later entry matches.
///
/// Runs `PROPTEST_CASES` cases (32 by default), each with types and tags of its own.
pub async fn dcb_model_check(store: Arc<dyn DcbStore>) {
    run_model_check(proptest::collection::vec(op(), 1..30), move |ops| {
        check(Arc::clone(&store), ops)
    })
    .await;
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

async fn check(store: Arc<dyn DcbStore>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let case = Uuid::new_v4().simple().to_string();
    let types: Vec<String> = (0..TYPES).map(|i| format!("m{case}.t{i}")).collect();
    let tags: Vec<Tag> = (0..TAGS)
        .map(|i| Tag::new(&format!("k{i}"), &case).expect("valid"))
        .collect();
    let streams: Vec<StreamId> = (0..2)
        .map(|i| StreamId::new(format!("dcbmodel{i}-{case}")).expect("valid"))
        .collect();
    let pick_tags = |bits: u8| -> Vec<Tag> {
        (0..TAGS)
            .filter(|i| bits & (1 << i) != 0)
            .map(|i| tags[i].clone())
            .collect()
    };
    let query_of = |items: &[(u8, u8)]| {
        EventQuery::items(items.iter().map(|(t, g)| {
            QueryItem {
                types: (0..TYPES)
                    .filter(|i| t & (1 << i) != 0)
                    .map(|i| types[i].clone())
                    .collect(),
                tags: pick_tags(*g),
            }
        }))
    };
    let start = store.head().await.map_err(fail)?;
    // (type index, tags, position, n)
    let mut model: Vec<(usize, Vec<Tag>, Position, u64)> = Vec::new();
    let mut next_n = 0u64;
    for op in ops {
        match op {
            Op::Append { stream, ty, tags } => {
                let appended = store
                    .append(
                        &streams[stream],
                        ExpectedVersion::Any,
                        vec![event(&types[ty], next_n).with_tags(pick_tags(tags))],
                    )
                    .await
                    .map_err(fail)?;
                let at = appended.position.ok_or_else(|| fail("no position"))?;
                settle(&*store, Some(at)).await;
                let mut t = pick_tags(tags);
                t.sort();
                model.push((ty, t, at, next_n));
                next_n += 1;
            }
            Op::Decide {
                stream,
                ty,
                tags,
                items,
                after,
            } => {
                let query = query_of(&items);
                let after_position = after.map(|i| {
                    model
                        .get(i)
                        .map_or_else(|| model.last().map_or(start, |m| m.2), |m| m.2)
                });
                let condition = AppendCondition {
                    query: query.clone(),
                    after: after_position,
                };
                let expected_failure = model
                    .iter()
                    .find(|(t, g, p, _)| {
                        after_position.is_none_or(|a| *p > a) && query.matches(&types[*t], g)
                    })
                    .map(|m| m.2);
                let result = store
                    .commit_if(
                        one(
                            &streams[stream],
                            ExpectedVersion::Any,
                            vec![event(&types[ty], next_n).with_tags(pick_tags(tags))],
                        )
                        .with_condition(condition),
                    )
                    .await;
                match (expected_failure, result) {
                    (None, Ok(appended)) => {
                        let at = appended[0].position.ok_or_else(|| fail("no position"))?;
                        settle(&*store, Some(at)).await;
                        let mut t = pick_tags(tags);
                        t.sort();
                        model.push((ty, t, at, next_n));
                        next_n += 1;
                    }
                    (
                        Some(found),
                        Err(StoreError::ConditionFailed {
                            found: reported,
                            after: a,
                        }),
                    ) => {
                        prop_assert_eq!(reported, found, "the first matching position is reported");
                        prop_assert_eq!(a, after_position);
                    }
                    (expected, got) => {
                        return Err(fail(format!(
                            "expected the condition to fail at {expected:?}, got {got:?}"
                        )));
                    }
                }
            }
            Op::Read { items, from } => {
                let query = query_of(&items);
                let from_position = model
                    .get(from)
                    .map_or_else(|| model.last().map_or(start, |m| m.2).next(), |m| m.2);
                let read = read_query(&*store, &query, from_position).await;
                let expected: Vec<u64> = model
                    .iter()
                    .filter(|(t, g, p, _)| *p >= from_position && query.matches(&types[*t], g))
                    .map(|m| m.3)
                    .collect();
                prop_assert_eq!(ns(&read), expected);
                for e in &read {
                    let m = model
                        .iter()
                        .find(|m| m.3 == n_of(e))
                        .ok_or_else(|| fail("unknown event"))?;
                    prop_assert_eq!(&e.tags, &m.1, "tags come back as written");
                }
            }
        }
    }
    Ok(())
}
