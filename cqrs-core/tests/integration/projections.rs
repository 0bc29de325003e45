use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cqrs_core::{
    CheckpointStore, Checkpointed, EventFilter, EventReader, EventStore, ExpectedVersion,
    InMemoryEventStore, Json, MemoryProjection, NewEvent, Position, Projection, ProjectionError,
    ProjectionRunner, RecordedEvent, StreamId,
};
use serde_json::json;

async fn append(store: &InMemoryEventStore, stream: &str, ty: &str, n: u64) -> Position {
    store
        .append(
            &StreamId::new(stream).unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::new(ty, Json::from(json!({ "n": n })))],
        )
        .await
        .unwrap()
        .position
        .unwrap()
}

fn n(event: &RecordedEvent) -> u64 {
    event.payload.to_value().unwrap()["n"].as_u64().unwrap()
}

fn sum_by_stream() -> MemoryProjection<HashMap<String, u64>> {
    MemoryProjection::new("sums", HashMap::new(), |sums, event| {
        *sums.entry(event.stream.to_string()).or_default() += n(event);
        Ok(())
    })
}

#[tokio::test]
async fn catches_up_then_follows_live() {
    let store = InMemoryEventStore::new();
    append(&store, "a-1", "x", 1).await;
    append(&store, "b-1", "x", 10).await;
    let sums = Arc::new(sum_by_stream());
    let handle = ProjectionRunner::new(Arc::new(store.clone()), sums.clone()).spawn();
    let last = append(&store, "a-1", "x", 2).await;
    handle.wait_for(last).await.unwrap();
    assert_eq!(sums.read(|s| (s["a-1"], s["b-1"])), (3, 10));
    let status = handle.status();
    assert_eq!(status.key, "sums@v1");
    assert!(status.position >= last);
    handle.stop().await;
    assert_eq!(sums.checkpoint().await.unwrap(), Some(last));
}

#[tokio::test]
async fn rebuild_starts_from_zero_and_reaches_the_same_state() {
    let store = InMemoryEventStore::new();
    for i in 0..50 {
        append(&store, &format!("s-{}", i % 7), "x", i).await;
    }
    let sums = Arc::new(sum_by_stream());
    let runner = ProjectionRunner::new(Arc::new(store.clone()), sums.clone()).with_batch_size(8);
    let head = runner.catch_up().await.unwrap();
    assert_eq!(head, store.head().await.unwrap());
    let before = sums.read(Clone::clone);
    assert_eq!(
        runner.catch_up().await.unwrap(),
        head,
        "a second catch-up applies nothing new"
    );
    assert_eq!(sums.read(Clone::clone), before, "and changes nothing");
    runner.rebuild().await.unwrap();
    assert_eq!(sums.read(Clone::clone), before);
}

#[tokio::test]
async fn a_failing_batch_is_retried_without_double_effects() {
    let store = InMemoryEventStore::new();
    let failures = Arc::new(AtomicU32::new(0));
    let left = Arc::clone(&failures);
    let sums = Arc::new(MemoryProjection::new("flaky", 0u64, move |total, event| {
        if n(event) == 3 && left.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(ProjectionError::new(
                "the read model is briefly unavailable",
            ));
        }
        *total += n(event);
        Ok(())
    }));
    let runner = ProjectionRunner::new(Arc::new(store.clone()), sums.clone())
        .with_retry_delay(Duration::from_millis(1));
    let handle = runner.spawn();
    let mut last = Position::ZERO;
    for i in 1..=5 {
        last = append(&store, "s-1", "x", i).await;
    }
    handle.wait_for(last).await.unwrap();
    assert_eq!(
        sums.read(|t| *t),
        15,
        "every event counted once despite two failures"
    );
    assert_eq!(failures.load(Ordering::SeqCst), 3);
    assert_eq!(
        handle.status().last_error,
        None,
        "the error clears once the batch passes"
    );
    handle.stop().await;
}

#[tokio::test]
async fn filtered_projections_still_report_progress_past_other_events() {
    let store = InMemoryEventStore::new();
    let orders = Arc::new(
        MemoryProjection::new("orders", 0u64, |count, _| {
            *count += 1;
            Ok(())
        })
        .with_filter(EventFilter::all().with_categories(["order"])),
    );
    let handle = ProjectionRunner::new(Arc::new(store.clone()), orders.clone()).spawn();
    append(&store, "order-1", "order.placed", 1).await;
    let unrelated = append(&store, "seats-1", "seats.added", 1).await;
    handle.wait_for(unrelated).await.unwrap();
    assert_eq!(orders.read(|c| *c), 1);
    assert!(handle.status().live);
    handle.stop().await;
}

#[tokio::test]
async fn two_versions_build_side_by_side_with_their_own_checkpoints() {
    let store = InMemoryEventStore::new();
    for i in 1..=4 {
        append(&store, "s-1", "x", i).await;
    }
    let seen_v1 = Arc::new(AtomicU32::new(0));
    let seen_v2 = Arc::new(AtomicU32::new(0));
    let projection = |version: u32, seen: &Arc<AtomicU32>| {
        let seen = Arc::clone(seen);
        Arc::new(
            Checkpointed::new(
                "totals",
                Arc::new(store.clone()) as Arc<dyn CheckpointStore>,
                move |_: &RecordedEvent| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), ProjectionError>(())
                },
            )
            .with_version(version),
        )
    };
    let v1 = projection(1, &seen_v1);
    ProjectionRunner::new(Arc::new(store.clone()), v1.clone())
        .catch_up()
        .await
        .unwrap();
    append(&store, "s-1", "x", 5).await;
    let v2 = projection(2, &seen_v2);
    ProjectionRunner::new(Arc::new(store.clone()), v2.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(
        seen_v2.load(Ordering::SeqCst),
        5,
        "the new version reads from position zero"
    );
    ProjectionRunner::new(Arc::new(store.clone()), v1.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(
        seen_v1.load(Ordering::SeqCst),
        5,
        "the old version went on from its own checkpoint"
    );
    assert_eq!(
        store.load_checkpoint("totals@v1").await.unwrap(),
        store.load_checkpoint("totals@v2").await.unwrap()
    );
    assert_eq!(v2.key(), "totals@v2");
}

#[tokio::test]
async fn a_stopped_projection_resumes_from_its_checkpoint() {
    let store = InMemoryEventStore::new();
    let sums = Arc::new(sum_by_stream());
    let first = ProjectionRunner::new(Arc::new(store.clone()), sums.clone()).spawn();
    let p = append(&store, "a-1", "x", 1).await;
    first.wait_for(p).await.unwrap();
    first.stop().await;
    append(&store, "a-1", "x", 2).await;
    let p = append(&store, "a-1", "x", 3).await;
    let second = ProjectionRunner::new(Arc::new(store.clone()), sums.clone()).spawn();
    second.wait_for(p).await.unwrap();
    assert_eq!(sums.read(|s| s["a-1"]), 6);
    second.stop().await;
}

#[tokio::test]
async fn read_filtered_sees_upcast_names_when_the_filter_is_expanded() {
    let store = InMemoryEventStore::new();
    append(&store, "order-1", "OrderPaymentConfirmed", 1).await;
    append(&store, "order-2", "order.confirmed", 2).await;
    let upcasters =
        cqrs_core::Upcasters::new().rename("OrderPaymentConfirmed", 1, "order.confirmed", 1);
    let filter = upcasters.expand_filter(EventFilter::all().with_types(["order.confirmed"]));
    let batch = store
        .read_filtered(Position::START, 10, &filter)
        .await
        .unwrap();
    assert_eq!(batch.events.iter().map(n).collect::<Vec<_>>(), [1, 2]);
}

#[tokio::test]
async fn a_checkpoint_ahead_of_the_log_is_refused() {
    let store = InMemoryEventStore::new();
    append(&store, "s-1", "x", 1).await;
    let sums = Arc::new(sum_by_stream());
    sums.apply(&[], Position::new(99)).await.unwrap();
    let err = ProjectionRunner::new(Arc::new(store), sums)
        .catch_up()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ahead of the log"), "{err}");
}

#[tokio::test]
async fn a_panicking_projection_is_retried_and_waiting_on_a_stopped_runner_fails() {
    let store = InMemoryEventStore::new();
    let panicked = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&panicked);
    let total = Arc::new(MemoryProjection::new("touchy", 0u64, move |t, event| {
        assert!(
            n(event) != 2 || seen.fetch_add(1, Ordering::SeqCst) > 0,
            "a bug on the first try"
        );
        *t += n(event);
        Ok(())
    }));
    let handle = ProjectionRunner::new(Arc::new(store.clone()), total.clone())
        .with_retry_delay(Duration::from_millis(1))
        .spawn();
    append(&store, "s-1", "x", 1).await;
    let last = append(&store, "s-1", "x", 2).await;
    handle.wait_for(last).await.unwrap();
    assert_eq!(total.read(|t| *t), 3);
    assert_eq!(
        panicked.load(Ordering::SeqCst),
        2,
        "panicked once, then passed"
    );
    handle.stop().await;
    let beyond = append(&store, "s-1", "x", 3).await;
    assert!(
        handle.wait_for(beyond).await.is_err(),
        "a stopped runner reaches nothing"
    );
}

mod blue_green {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use cqrs_core::{
        BlueGreen, EventStore, ExpectedVersion, InMemoryEventStore, Json, MemoryProjection,
        NewEvent, StreamId,
    };

    /// (version, events seen, last position seen).
    type Seen = (u32, u64, u64);

    fn model(version: u32) -> MemoryProjection<Seen> {
        MemoryProjection::new("seen", (version, 0, 0), |s: &mut Seen, e| {
            s.1 += 1;
            s.2 = e.position.get();
            Ok(())
        })
        .with_version(version)
    }

    async fn append(store: &InMemoryEventStore, n: u64) {
        for _ in 0..n {
            store
                .append(
                    &StreamId::new("s-1").unwrap(),
                    ExpectedVersion::Any,
                    vec![NewEvent::new("e", Json::null())],
                )
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_version_is_built_beside_the_live_one_and_switched_to_while_writes_go_on() {
        let store = Arc::new(InMemoryEventStore::new());
        append(&store, 2_000).await;
        let seen = BlueGreen::new(store.clone(), model(1));
        seen.start();
        // Readers never see the log go backwards, whichever version serves them.
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (seen, done) = (seen.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut last = 0;
                let mut versions = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let (version, _, at) = seen.read(|s| *s);
                    assert!(at >= last, "read position {at} after {last}");
                    last = at;
                    if versions.last() != Some(&version) {
                        versions.push(version);
                    }
                    tokio::task::yield_now().await;
                }
                versions
            })
        };
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { append(&store, 2_000).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        seen.upgrade(model(2)).unwrap();
        assert!(seen.upgrade(model(3)).is_err(), "one at a time");
        writer.await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.live_key() != "seen@v2" || seen.read(|s| s.1) < 4_000 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                seen.status()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done.store(true, Ordering::Relaxed);
        let versions = reader.await.unwrap();
        assert_eq!(versions, [1, 2], "switched once, never back");
        let status = seen.status_with_head().await.unwrap();
        assert_eq!(status.retired, ["seen@v1"]);
        assert!(status.building.is_none());
        assert_eq!(status.live.key, "seen@v2");
        assert_eq!(
            seen.read(|s| *s),
            (2, 4_000, status.head.get()),
            "the whole log, once"
        );
        seen.stop().await;
    }

    #[tokio::test]
    async fn the_live_version_cannot_be_upgraded_to_itself() {
        let store = Arc::new(InMemoryEventStore::new());
        let seen = BlueGreen::new(store, model(1));
        let err = seen.upgrade(model(1)).unwrap_err();
        assert!(err.to_string().contains("another number"), "{err}");
        let err = seen.rebuild(model(2)).unwrap_err();
        assert!(err.to_string().contains("upgrade to it instead"), "{err}");
    }

    /// A rebuild builds the live version again beside it while it serves, and switches: the
    /// same key, a fresh state, the whole log once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_live_version_is_rebuilt_beside_itself_while_it_serves() {
        let store = Arc::new(InMemoryEventStore::new());
        append(&store, 1_000).await;
        let seen = BlueGreen::new(store.clone(), model(1));
        seen.start();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { append(&store, 1_000).await })
        };
        seen.rebuild(model(1)).unwrap();
        assert!(seen.rebuild(model(1)).is_err(), "one at a time");
        writer.await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.status().retired.is_empty() || seen.read(|s| s.1) < 2_000 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                seen.status()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = seen.status_with_head().await.unwrap();
        assert_eq!(status.retired, ["seen@v1"]);
        assert_eq!(status.live.key, "seen@v1");
        assert_eq!(seen.read(|s| *s), (1, 2_000, status.head.get()));
        seen.stop().await;
    }
}
