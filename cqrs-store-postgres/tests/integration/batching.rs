use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{
    Commit, EventStore, ExpectedVersion, Json, NewEvent, StoreError, StreamId, Version,
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
