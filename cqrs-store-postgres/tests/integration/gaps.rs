use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{
    Commit, EventFilter, EventReader, EventStore, ExpectedVersion, Json, NewEvent, Position,
    StreamId, Version,
};
use futures::StreamExt;
use rand::Rng;
use tokio::sync::Barrier;

const WRITERS: usize = 16;
const ROUNDS: usize = 12;

/// Sixteen writers append in transactions that stay open for a random while after the insert,
/// so that they commit out of position order; a live subscriber (and a filtered one) must
/// still see every event exactly once, in increasing position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_commits_never_make_a_subscriber_skip_an_event() {
    let Some(store) = super::store().await else {
        return;
    };
    let store = Arc::new(store);
    let total = WRITERS * ROUNDS * 2;
    let mut all = store.subscribe(Position::START, EventFilter::all());
    let mut odd = store.subscribe(Position::START, EventFilter::all().with_types(["gap.odd"]));
    let readers = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(total);
        while seen.len() < total {
            let event = tokio::time::timeout(Duration::from_secs(30), all.next())
                .await
                .expect("events keep coming");
            seen.push(event.expect("open").expect("no error"));
        }
        let mut odd_seen = Vec::with_capacity(total / 2);
        while odd_seen.len() < total / 2 {
            let event = tokio::time::timeout(Duration::from_secs(30), odd.next())
                .await
                .expect("events keep coming");
            odd_seen.push(event.expect("open").expect("no error"));
        }
        (seen, odd_seen)
    });

    let barrier = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let stream = StreamId::new(format!("gap-{w}")).unwrap();
                for r in 0..ROUNDS {
                    let delay = Duration::from_millis(rand::rng().random_range(0..40));
                    let mut tx = store.pool().begin().await.unwrap();
                    let events = vec![
                        NewEvent::new(
                            "gap.even",
                            Json::encode(&serde_json::json!({ "w": w, "r": r })).unwrap(),
                        ),
                        NewEvent::new(
                            "gap.odd",
                            Json::encode(&serde_json::json!({ "w": w, "r": r })).unwrap(),
                        ),
                    ];
                    store
                        .commit_in(
                            &mut tx,
                            Commit::new(stream.clone(), ExpectedVersion::Any, events),
                        )
                        .await
                        .unwrap();
                    // Hold the transaction open: its positions are taken, its rows not yet visible.
                    tokio::time::sleep(delay).await;
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let (seen, odd_seen) = readers.await.unwrap();
    for (name, events, expected) in [("all", &seen, total), ("odd", &odd_seen, total / 2)] {
        assert_eq!(events.len(), expected, "{name}");
        let ids: HashSet<_> = events.iter().map(|e| e.metadata.event_id).collect();
        assert_eq!(
            ids.len(),
            expected,
            "the {name} subscriber saw an event twice"
        );
        assert!(
            events.windows(2).all(|w| w[0].position < w[1].position),
            "the {name} subscriber went back"
        );
    }
    assert!(odd_seen.iter().all(|e| e.event_type == "gap.odd"));
    let stored = store.read_all(Position::START, total + 1).await.unwrap();
    assert_eq!(
        stored, seen,
        "the subscriber saw exactly the log, in its order"
    );
}

/// While a transaction that appended is still open, readers of the global log do not pass it,
/// and see it (and what came after) once it commits.
#[tokio::test]
async fn an_open_transaction_holds_readers_back_until_it_commits() {
    let Some(store) = super::store().await else {
        return;
    };
    let mut slow = store.pool().begin().await.unwrap();
    let held = store
        .commit_in(
            &mut slow,
            Commit::new(
                StreamId::new("slow-1").unwrap(),
                ExpectedVersion::Any,
                vec![NewEvent::new("e", Json::null())],
            ),
        )
        .await
        .unwrap();
    let fast = store
        .append(
            &StreamId::new("fast-1").unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::new("e", Json::null())],
        )
        .await
        .unwrap();
    assert!(
        fast.position > held.position,
        "the later transaction got the higher position"
    );
    assert!(
        store
            .read_all(Position::START, 10)
            .await
            .unwrap()
            .is_empty(),
        "nothing passes the open transaction"
    );
    assert_eq!(store.head().await.unwrap(), Position::ZERO);
    slow.commit().await.unwrap();
    // Other tests' transactions on this server may hold the log back a little longer.
    while store.head().await.unwrap() < fast.position.unwrap() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = store.read_all(Position::START, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].position, held.position.unwrap());
}

/// A transaction that wrote before (so its id, and its positions, are older) may not append
/// to a stream whose head a younger transaction wrote: the stream's later version would take
/// an earlier position, and a reader in log order would see its versions out of order. It is
/// refused as a conflict; a new transaction appends.
#[tokio::test]
async fn an_older_transaction_never_appends_after_a_younger_head() {
    let Some(store) = super::store().await else {
        return;
    };
    let (own, shared) = (
        StreamId::new("own-1").unwrap(),
        StreamId::new("shared-1").unwrap(),
    );
    let one = || vec![NewEvent::new("e", Json::null())];
    let mut old = store.pool().begin().await.unwrap();
    store
        .commit_in(
            &mut old,
            Commit::new(own.clone(), ExpectedVersion::Any, one()),
        )
        .await
        .unwrap();
    let younger = store
        .append(&shared, ExpectedVersion::NoStream, one())
        .await
        .unwrap();
    let refused = store
        .commit_in(
            &mut old,
            Commit::new(
                shared.clone(),
                ExpectedVersion::Exact(younger.version),
                one(),
            ),
        )
        .await;
    assert!(
        matches!(refused, Err(cqrs_core::StoreError::Conflict { actual, .. }) if actual == younger.version),
        "{refused:?}"
    );
    old.rollback().await.unwrap();

    let mut new = store.pool().begin().await.unwrap();
    store
        .commit_in(
            &mut new,
            Commit::new(own.clone(), ExpectedVersion::Any, one()),
        )
        .await
        .unwrap();
    let appended = store
        .commit_in(
            &mut new,
            Commit::new(
                shared.clone(),
                ExpectedVersion::Exact(younger.version),
                one(),
            ),
        )
        .await
        .expect("a transaction younger than the head appends");
    new.commit().await.unwrap();
    assert!(appended.position > younger.position);
    // Read by stream: the log's horizon may wait for other tests' transactions on the server.
    let stream = store.read_stream(&shared, Version::START).await.unwrap();
    let versions: Vec<u64> = stream.iter().map(|e| e.version.get()).collect();
    assert_eq!(versions, [1, 2]);
    assert!(
        stream[0].position < stream[1].position,
        "the stream's versions follow the log's order"
    );
}
