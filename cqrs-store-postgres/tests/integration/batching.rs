use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{
    CommandRecord, Commit, EventStore, ExpectedVersion, Headers, Json, NewEvent, Outcome,
    StoreError, StreamId, Version,
};
use tokio::sync::Barrier;

/// Concurrent appends share batches; each still gets its own answer: the winners of a race
/// for a version append, the losers conflict, other streams are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_in_one_batch_get_their_own_answers() {
    let Some(store) = super::store().await else {
        return;
    };
    let store = Arc::new(store);
    let barrier = Arc::new(Barrier::new(24));
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                // Twelve race for version 1 of one stream; twelve append to streams of their own.
                let stream = if i % 2 == 0 {
                    "race-1".to_owned()
                } else {
                    format!("own-{i}")
                };
                barrier.wait().await;
                store
                    .append(
                        &StreamId::new(stream).unwrap(),
                        ExpectedVersion::NoStream,
                        vec![NewEvent::new("e", Json::null())],
                    )
                    .await
            })
        })
        .collect();
    let (mut won, mut lost, mut own) = (0, 0, 0);
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(appended) if i % 2 == 0 => {
                won += 1;
                assert_eq!(appended.version, Version::new(1));
            }
            Ok(_) => own += 1,
            Err(StoreError::Conflict { actual, .. }) => {
                lost += 1;
                assert_eq!(actual, Version::new(1));
            }
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!((won, lost, own), (1, 11, 12));
}

/// When another connection holds a version a batch wants, the batch fails as a whole and its
/// appends are retried one by one: the loser conflicts, the others still append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_loses_a_race_to_another_connection_falls_back_to_single_appends() {
    let Some(store) = super::store().await else {
        return;
    };
    let store = Arc::new(store);
    let contested = StreamId::new("held-1").unwrap();
    let mut other = store.pool().begin().await.unwrap();
    store
        .commit_in(
            &mut other,
            Commit::new(
                contested.clone(),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("theirs", Json::null())],
            ),
        )
        .await
        .unwrap();
    let appends: Vec<_> = [
        contested.clone(),
        StreamId::new("free-1").unwrap(),
        StreamId::new("free-2").unwrap(),
    ]
    .into_iter()
    .map(|stream| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![NewEvent::new("ours", Json::null())],
                )
                .await
        })
    })
    .collect();
    // The contested insert waits on the other transaction's uncommitted version 1.
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.commit().await.unwrap();
    let results: Vec<_> = futures::future::join_all(appends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        matches!(results[0], Err(StoreError::Conflict { .. })),
        "{:?}",
        results[0]
    );
    assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
    let stored = cqrs_core::EventReader::read_stream(&*store, &contested, Version::START)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "theirs");
}

/// Appends to one stream at any version, arriving together, are never put in one batch: each
/// lands at its own version, none is lost, and streams beside them are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_to_one_stream_each_get_their_own_version() {
    let Some(store) = super::store().await else {
        return;
    };
    let store = Arc::new(store);
    let shared = StreamId::new("busy-1").unwrap();
    let barrier = Arc::new(Barrier::new(40));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (store, barrier, shared) =
                (Arc::clone(&store), Arc::clone(&barrier), shared.clone());
            tokio::spawn(async move {
                let stream = if i % 2 == 0 {
                    shared
                } else {
                    StreamId::new(format!("quiet-{i}")).unwrap()
                };
                barrier.wait().await;
                store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        vec![
                            NewEvent::new("first", Json::from_stored(format!("{i}"))),
                            NewEvent::new("second", Json::from_stored(format!("{i}"))),
                        ],
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut versions = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let appended = task.await.unwrap();
        if i % 2 == 0 {
            versions.push(appended.version.get());
        } else {
            assert_eq!(appended.version, Version::new(2));
        }
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).map(|n| n * 2).collect::<Vec<_>>());
    let events = cqrs_core::EventReader::read_stream(&*store, &shared, Version::START)
        .await
        .unwrap();
    assert_eq!(events.len(), 40);
    // Each append's two events are adjacent, in order, at consecutive versions and positions.
    for pair in events.chunks(2) {
        assert_eq!(pair[0].payload.as_str(), pair[1].payload.as_str());
        assert_eq!(
            (pair[0].event_type.as_str(), pair[1].event_type.as_str()),
            ("first", "second")
        );
        assert_eq!(pair[0].version.get() + 1, pair[1].version.get());
        assert!(pair[0].position < pair[1].position);
    }
}

/// One command id arriving twice at once (on two streams) is recorded once: one append wins,
/// the other is refused as a duplicate and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_command_id_twice_in_a_burst_appends_once() {
    let Some(store) = super::store().await else {
        return;
    };
    let store = Arc::new(store);
    let command_id = uuid::Uuid::now_v7();
    let barrier = Arc::new(Barrier::new(10));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                let stream = StreamId::new(format!("twice-{i}")).unwrap();
                let mut commit = Commit::new(
                    stream.clone(),
                    ExpectedVersion::NoStream,
                    vec![NewEvent::new("done", Json::null())],
                );
                if i < 2 {
                    commit = commit.with_command(CommandRecord {
                        command_id,
                        command_type: "do".into(),
                        target: stream,
                        payload: Json::null(),
                        correlation_id: None,
                        causation_id: None,
                        recorded_at: chrono::Utc::now(),
                        headers: Headers::new(),
                        outcome: Outcome::Accepted {
                            version: Version::new(1),
                            events: 1,
                        },
                    });
                }
                barrier.wait().await;
                store.commit(commit).await
            })
        })
        .collect();
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let duplicates = results[..2]
        .iter()
        .filter(|r| matches!(r, Err(StoreError::DuplicateCommand { command_id: id }) if *id == command_id))
        .count();
    assert_eq!(duplicates, 1, "{results:?}");
    assert!(results[2..].iter().all(Result::is_ok), "{results:?}");
    let written: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cqrs.events WHERE stream IN ('twice-0', 'twice-1')",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(written, 1);
}
