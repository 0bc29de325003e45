//! What the NATS store guarantees beyond the conformance suite: reads that see every
//! acknowledged write whichever replica answers, subscribers woken by other processes'
//! commits, stream names that are no valid subject tokens, and the streams it finds.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use cqrs_core::{
    CommandRecord, Commit, EventFilter, EventReader, EventStore, ExpectedVersion, Json, MessageLog,
    NewEvent, Outcome, Position, StoreError, StreamId, Version,
};
use cqrs_store_nats::testing::{Cluster, cluster, shared_cluster};
use cqrs_store_nats::{NatsEventStore, NatsOptions};
use futures::StreamExt;

/// The record of a command on `stream` that appended one event.
fn record(stream: &StreamId) -> CommandRecord {
    CommandRecord {
        command_id: uuid::Uuid::new_v4(),
        command_type: "reserve".into(),
        target: stream.clone(),
        payload: Json::null(),
        correlation_id: None,
        causation_id: None,
        recorded_at: chrono::Utc::now(),
        headers: Default::default(),
        outcome: Outcome::Accepted {
            version: Version::new(1),
            events: 1,
        },
    }
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn options(prefix: &str) -> NatsOptions {
    NatsOptions::default()
        .with_stream_prefix(format!("S{prefix}"))
        .with_subject_prefix(format!("s{prefix}"))
        .with_replicas(3)
}

fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "seat.reserved",
        Json::parse(format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(200))).unwrap(),
    )
}

/// Commits `count` events one commit each over `streams` streams, each commit with its
/// command record, retrying a commit the cluster could not answer with its command id:
/// returns every event's (stream, version, position).
async fn commit_all(
    store: &NatsEventStore,
    streams: u64,
    range: std::ops::Range<u64>,
) -> Vec<(StreamId, Version, Position)> {
    let mut out = Vec::new();
    for n in range {
        let stream = StreamId::new(format!("seats-{}", n % streams)).unwrap();
        let record = record(&stream);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let commit = Commit::new(stream.clone(), ExpectedVersion::Any, vec![event(n)])
                .with_command(record.clone());
            match store.commit(commit).await {
                Ok(appended) => {
                    out.push((stream, appended.version, appended.position.unwrap()));
                    break;
                }
                // Committed before the answer was lost: the record says where.
                Err(StoreError::DuplicateCommand { .. }) => {
                    let events = store.read_stream(&stream, Version::new(1)).await.unwrap();
                    let mine = events
                        .iter()
                        .find(|e| e.payload.as_str().contains(&format!(r#""n":{n},"#)))
                        .expect("a duplicate command's event is stored");
                    out.push((stream, mine.version, mine.position));
                    break;
                }
                Err(err) => {
                    assert!(
                        Instant::now() < deadline,
                        "commit {n} failed for 60 s: {err}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    out
}

/// The node that leads the log stream of the store with `prefix`.
async fn log_leader(js: &jetstream::Context, prefix: &str, cluster: &Cluster) -> usize {
    let mut log = js.get_stream(format!("S{prefix}_LOG")).await.unwrap();
    log.info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .and_then(|name| cluster.node_named(&name))
        .expect("the log has a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_a_restarted_replica_see_every_acknowledged_event() {
    let Some(mut cluster) = cluster(3) else {
        return;
    };
    let prefix = unique();
    let store = NatsEventStore::connect(&cluster.urls(), options(&prefix))
        .await
        .expect("the store opens");
    let mut acknowledged = commit_all(&store, 6, 0..300).await;

    // Kill the log's leader, write on without it, and bring it back.
    let js = jetstream::new(store.client().clone());
    let leader = log_leader(&js, &prefix, &cluster).await;
    tokio::task::block_in_place(|| cluster.kill(leader));
    acknowledged.extend(commit_all(&store, 6, 300..600).await);
    tokio::task::block_in_place(|| cluster.restart(leader)).expect("the node rejoins");

    // A client of the restarted node alone: its direct reads are answered by the replica
    // still catching up, which a read must not take for the whole log.
    let url = cluster.urls()[leader].clone();
    let reader = NatsEventStore::connect(&[url], options(&prefix))
        .await
        .expect("a store on the restarted node");
    let started = Instant::now();
    let all = reader
        .read_all(Position::START, 10_000)
        .await
        .expect("read_all");
    let took = started.elapsed();
    let read: Vec<(StreamId, Version, Position)> = all
        .iter()
        .map(|e| (e.stream.clone(), e.version, e.position))
        .collect();
    let mut expected = acknowledged.clone();
    expected.sort_by_key(|(_, _, position)| *position);
    assert_eq!(read.len(), expected.len(), "every acknowledged event, once");
    assert_eq!(read, expected, "each where its commit said");
    for s in 0..6 {
        let stream = StreamId::new(format!("seats-{s}")).unwrap();
        let events = reader.read_stream(&stream, Version::new(1)).await.unwrap();
        assert_eq!(events.len(), 100, "{stream}");
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e.version.get() == i as u64 + 1)
        );
    }
    eprintln!(
        "node {leader} (the log's leader) killed after 300 commits, 300 more without it, \
         restarted: its client read all {} events in {took:?}",
        read.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_sees_the_commits_of_another_process() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let prefix = unique();
    let one = NatsEventStore::connect(&cluster.urls(), options(&prefix))
        .await
        .unwrap();
    let other = NatsEventStore::connect(&cluster.urls(), options(&prefix))
        .await
        .unwrap();
    let mut live = one.subscribe(Position::START, EventFilter::all());
    let stream = StreamId::new("order-1").unwrap();
    for n in 0..50 {
        other
            .append(
                &stream,
                ExpectedVersion::Exact(Version::new(n)),
                vec![event(n)],
            )
            .await
            .unwrap();
    }
    for n in 0..50 {
        let next = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("the next event within 10 s")
            .expect("a live subscription does not end")
            .expect("no error");
        assert_eq!(next.version, Version::new(n + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_names_that_are_no_subject_tokens_round_trip() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let store = NatsEventStore::connect(&cluster.urls(), options(&unique()))
        .await
        .unwrap();
    let names = [
        "order-1.2",
        "order-*",
        "order->",
        "order-a b",
        "order-~41",
        "ordre-été",
        "-leading",
        "plain",
        "a.b-c",
    ];
    for name in names {
        let stream = StreamId::new(name).unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .unwrap();
        let events = store.read_stream(&stream, Version::new(1)).await.unwrap();
        assert_eq!(events.len(), 1, "{name}");
        assert_eq!(events[0].stream, stream);
    }
    let all = store.read_all(Position::START, 100).await.unwrap();
    let read: Vec<&str> = all.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(read, names, "read back in commit order, each by its name");
    let orders = store.list_streams("order-", None, 100).await.unwrap();
    let listed: Vec<&str> = orders.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(
        listed,
        ["order-*", "order-1.2", "order->", "order-a b", "order-~41"]
    );
    // `order-1` is not `order-1.2`'s category, nor is `order` a prefix match of `ordre`.
    assert!(
        store
            .read_stream(&StreamId::new("order-1").unwrap(), Version::new(1))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opens_on_its_streams_again_and_refuses_streams_it_cannot_use() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let prefix = unique();
    let first = NatsEventStore::connect(&cluster.urls(), options(&prefix))
        .await
        .unwrap();
    let stream = StreamId::new("order-1").unwrap();
    let record = record(&stream);
    let id = record.command_id;
    first
        .commit(
            Commit::new(stream.clone(), ExpectedVersion::NoStream, vec![event(1)])
                .with_command(record),
        )
        .await
        .unwrap();
    drop(first);
    let again = NatsEventStore::connect(&cluster.urls(), options(&prefix))
        .await
        .unwrap();
    assert_eq!(
        again
            .read_stream(&stream, Version::new(1))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(again.find_command(id).await.unwrap().is_some());

    // A stream of the store's name made by someone else, without atomic batches.
    let other = unique();
    let js = jetstream::new(again.client().clone());
    js.create_stream(stream::Config {
        name: format!("S{other}_LOG"),
        subjects: vec![format!("s{other}.log.>")],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = NatsEventStore::connect(&cluster.urls(), options(&other))
        .await
        .expect_err("a log without atomic batches cannot hold the store");
    assert!(
        matches!(&err, StoreError::Invalid(why) if why.contains("atomic")),
        "{err}"
    );
    let err = NatsEventStore::connect(&cluster.urls(), options("a.b"))
        .await
        .expect_err("a stream prefix with a dot");
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_read_at_once_through_a_follower() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let prefix = unique();
    let urls = cluster.urls();
    let probe = NatsEventStore::connect(&urls[..1], options(&prefix))
        .await
        .unwrap();
    let js = jetstream::new(probe.client().clone());
    let leader = log_leader(&js, &prefix, cluster).await;
    // Writes go through the leader's node, reads through another: its replica applies each
    // commit a little after the leader acknowledged it.
    let writer = NatsEventStore::connect(&urls[leader..=leader], options(&prefix))
        .await
        .unwrap();
    let follower = (leader + 1) % urls.len();
    let reader = NatsEventStore::connect(&urls[follower..=follower], options(&prefix))
        .await
        .unwrap();
    let mut stale = 0;
    for n in 0..300 {
        let stream = StreamId::new(format!("order-{n}")).unwrap();
        let appended = writer
            .append(&stream, ExpectedVersion::NoStream, vec![event(n)])
            .await
            .unwrap();
        let events = reader.read_stream(&stream, Version::new(1)).await.unwrap();
        let all = reader
            .read_all(appended.position.unwrap(), 10)
            .await
            .unwrap();
        if events.len() != 1 || all.len() != 1 {
            stale += 1;
        }
    }
    assert_eq!(
        stale, 0,
        "reads through the follower that missed the commit before them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_append_of_tagged_events_is_seen_by_conditions() {
    use cqrs_core::{
        AppendCondition, ConditionalCommit, DcbStore, EventQuery, QueryItem, StreamAppend, Tag,
    };
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let store = NatsEventStore::connect(&cluster.urls(), options(&unique()))
        .await
        .unwrap();
    let slug = Tag::new("slug", "devconf").unwrap();
    let appended = store
        .append(
            &StreamId::new("conference-1").unwrap(),
            ExpectedVersion::NoStream,
            vec![event(1).with_tags([slug.clone()])],
        )
        .await
        .unwrap();
    let query = EventQuery::items([QueryItem::tagged([slug.clone()])]);
    let found = store.read_query(&query, Position::START, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].tags, std::slice::from_ref(&slug));
    let err = store
        .commit_if(
            ConditionalCommit::new(vec![StreamAppend::new(
                StreamId::new("conference-2").unwrap(),
                ExpectedVersion::NoStream,
                vec![event(2).with_tags([slug])],
            )])
            .with_condition(AppendCondition::none_match(query)),
        )
        .await
        .expect_err("the slug is taken by a plain append");
    assert!(
        matches!(err, StoreError::ConditionFailed { after: None, found } if Some(found) == appended.position),
        "{err}"
    );
}
