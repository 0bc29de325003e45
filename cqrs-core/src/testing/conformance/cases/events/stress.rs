use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Barrier;

use crate::event::EventFilter;
use crate::store::{EventStore, StoreError};
use crate::testing::conformance::fixtures::{event, n_of, settle, stream, take};
use crate::version::{ExpectedVersion, Position, Version};

const WRITERS: usize = 16;

/// Sixteen writers race on one stream: at one expected version exactly one wins; appending
/// in turns by retrying on conflicts, every event lands once, versions stay dense and each
/// writer's events keep their order.
pub async fn concurrent_writers_on_one_stream(store: Arc<dyn EventStore>) {
    let s = stream("contended");
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, s, barrier) = (Arc::clone(&store), s.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .append(
                    &s,
                    ExpectedVersion::NoStream,
                    vec![event("race.start", w as u64)],
                )
                .await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.expect("writer task") {
            Ok(appended) => {
                winners += 1;
                assert_eq!(appended.version, Version::new(1));
            }
            Err(StoreError::Conflict { actual, .. }) => {
                assert_eq!(actual, Version::new(1), "losers see the winner's version")
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(winners, 1, "exactly one writer wins a version");

    const ROUNDS: u64 = 20;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS as u64 {
        let (store, s, barrier) = (Arc::clone(&store), s.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut expected = Version::new(1);
            for k in 0..ROUNDS {
                loop {
                    match store
                        .append(
                            &s,
                            ExpectedVersion::Exact(expected),
                            vec![event("race.step", w * 1000 + k)],
                        )
                        .await
                    {
                        Ok(appended) => {
                            expected = appended.version;
                            break;
                        }
                        Err(StoreError::Conflict { actual, .. }) => expected = actual,
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let all = store.read_stream(&s, Version::START).await.expect("read");
    assert_eq!(
        all.len() as u64,
        1 + WRITERS as u64 * ROUNDS,
        "no event lost, none duplicated"
    );
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.version.get() == i as u64 + 1),
        "versions are dense"
    );
    let steps: Vec<u64> = all[1..].iter().map(n_of).collect();
    let unique: HashSet<u64> = steps.iter().copied().collect();
    assert_eq!(unique.len(), steps.len(), "an event landed twice");
    for w in 0..WRITERS as u64 {
        let mine: Vec<u64> = steps.iter().copied().filter(|n| n / 1000 == w).collect();
        assert_eq!(
            mine,
            (0..ROUNDS).map(|k| w * 1000 + k).collect::<Vec<_>>(),
            "writer {w}'s events are all there, in order"
        );
    }
}

/// Writers on many streams (and some on a shared stream) append while a live subscriber
/// follows the log: it must see every event exactly once, in increasing position order,
/// consistent with each stream's versions, and exactly what `read_all` returns afterwards.
pub async fn live_subscriber_sees_every_event_once_in_order(store: Arc<dyn EventStore>) {
    const BATCHES: u64 = 25;
    let shared = stream("shared");
    let total: usize = (0..WRITERS as u64)
        .map(|w| {
            (0..BATCHES)
                .map(|b| 1 + ((w + b) % 3) as usize)
                .sum::<usize>()
        })
        .sum::<usize>()
        + WRITERS * usize::try_from(BATCHES).expect("small") / 5;

    let mut subscription = store.subscribe(Position::START, EventFilter::all());
    let subscriber = tokio::spawn(async move { take(&mut subscription, total).await });

    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut writers = Vec::new();
    for w in 0..WRITERS as u64 {
        let (store, shared, barrier) = (Arc::clone(&store), shared.clone(), Arc::clone(&barrier));
        writers.push(tokio::spawn(async move {
            let own = stream("writer");
            barrier.wait().await;
            for b in 0..BATCHES {
                let size = 1 + (w + b) % 3;
                let batch = (0..size)
                    .map(|i| event("stress.event", w * 1_000_000 + b * 10 + i))
                    .collect();
                store
                    .append(&own, ExpectedVersion::Any, batch)
                    .await
                    .expect("append");
                if b % 5 == 0 {
                    store
                        .append(
                            &shared,
                            ExpectedVersion::Any,
                            vec![event("stress.shared", w * 1_000_000 + b)],
                        )
                        .await
                        .expect("append");
                }
                if b % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let seen = subscriber.await.expect("subscriber");

    assert_eq!(seen.len(), total);
    let ids: HashSet<_> = seen.iter().map(|e| e.metadata.event_id).collect();
    assert_eq!(ids.len(), total, "the subscriber saw an event twice");
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "the subscriber saw positions out of order"
    );
    let mut versions: HashMap<_, u64> = HashMap::new();
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
    settle(&*store, seen.last().map(|e| e.position)).await;
    let stored = store
        .read_all(Position::START, total + 10)
        .await
        .expect("read_all");
    assert_eq!(stored, seen, "the subscriber saw exactly the log");
}
