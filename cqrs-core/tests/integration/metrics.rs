//! The metrics the framework records, read back from a recorder that keeps them.

use std::sync::{Arc, Mutex};

use cqrs_core::metric;
use cqrs_core::{
    CommandError, EventStore, ExpectedVersion, InMemoryEventStore, Json, MemoryProjection,
    NewEvent, ProjectionRunner, Repository, StreamId,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;

use crate::domain::{Order, OrderCommand};

type Snapshot = Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// What the recorder holds now. Taking it drains counters and histograms.
fn snapshot(snapshotter: &Snapshotter) -> Snapshot {
    snapshotter.snapshot().into_vec()
}

/// The value of the metric `name` whose labels include every one of `labels`.
fn value(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snapshot
        .iter()
        .find(|(key, ..)| {
            let key = key.key();
            key.name() == name
                && labels.iter().all(|(k, v)| {
                    key.labels()
                        .any(|label| label.key() == *k && label.value() == *v)
                })
        })
        .map(|(.., value)| match value {
            #[expect(clippy::cast_precision_loss, reason = "small test counts")]
            DebugValue::Counter(n) => *n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(samples) => samples.len() as f64,
        })
}

/// Runs `test` on a current-thread runtime with `recorder` as this thread's recorder: every
/// task runs on the thread, so every metric reaches it.
fn with_recorder<F: Future<Output = ()>>(recorder: &DebuggingRecorder, test: impl FnOnce() -> F) {
    metrics::with_local_recorder(recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test());
    });
}

#[test]
fn commands_are_counted_by_outcome_with_their_durations() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    with_recorder(&recorder, || async {
        let orders = Repository::<Order>::new(Arc::new(InMemoryEventStore::new()));
        let id = "o1".to_owned();
        orders
            .handle(&id, OrderCommand::Place { seats: 2 })
            .await
            .unwrap();
        let again = orders.handle(&id, OrderCommand::Place { seats: 2 }).await;
        assert!(matches!(again, Err(CommandError::Rejected(_))));
    });
    let snapshot = snapshot(&snapshotter);
    let labels = |outcome| {
        [
            ("handler", "order"),
            ("command", "order.place"),
            ("outcome", outcome),
        ]
    };
    assert_eq!(
        value(&snapshot, metric::COMMANDS, &labels("accepted")),
        Some(1.0)
    );
    assert_eq!(
        value(&snapshot, metric::COMMANDS, &labels("rejected")),
        Some(1.0)
    );
    assert_eq!(
        value(&snapshot, metric::COMMAND_DURATION, &[("handler", "order")]),
        Some(2.0),
        "two durations"
    );
    assert_eq!(
        value(
            &snapshot,
            metric::STORE_DURATION,
            &[("operation", "commit")]
        ),
        Some(2.0)
    );
}

/// The lag a projection reports falls batch by batch while it catches up (as in a rebuild),
/// and is zero once it has.
#[test]
fn projection_lag_falls_while_it_catches_up() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let seen = Arc::new(Mutex::new(Vec::new()));
    with_recorder(&recorder, || {
        let (snapshotter, seen) = (snapshotter.clone(), Arc::clone(&seen));
        async move {
            let store = InMemoryEventStore::new();
            for n in 0..100 {
                store
                    .append(
                        &StreamId::new(format!("s-{}", n % 3)).unwrap(),
                        ExpectedVersion::Any,
                        vec![NewEvent::new("x", Json::from(json!({ "n": n })))],
                    )
                    .await
                    .unwrap();
            }
            // Each batch looks at the lag the batch before it left.
            let lags = Arc::clone(&seen);
            let projection = MemoryProjection::new("counted", 0u64, move |count, _| {
                *count += 1;
                if *count % 10 == 1 {
                    lags.lock().unwrap().push(value(
                        &snapshot(&snapshotter),
                        metric::PROJECTION_LAG_EVENTS,
                        &[("projection", "counted@v1")],
                    ));
                }
                Ok(())
            });
            let runner =
                ProjectionRunner::new(Arc::new(store), Arc::new(projection)).with_batch_size(10);
            runner.catch_up().await.unwrap();
        }
    });
    let seen = seen.lock().unwrap().clone();
    let expected: Vec<Option<f64>> = std::iter::once(None)
        .chain((1..10).map(|batch| Some(f64::from(100 - 10 * batch))))
        .collect();
    assert_eq!(seen, expected, "the lag before each batch");
    // The last batch's events: the snapshots taken in the batches drained the counter.
    let snapshot = snapshot(&snapshotter);
    let labels = [("projection", "counted@v1")];
    assert_eq!(
        value(&snapshot, metric::PROJECTION_LAG_EVENTS, &labels),
        Some(0.0)
    );
    assert_eq!(
        value(&snapshot, metric::PROJECTION_LAG_SECONDS, &labels),
        Some(0.0)
    );
    assert_eq!(
        value(&snapshot, metric::PROJECTION_POSITION, &labels),
        Some(100.0)
    );
    assert_eq!(
        value(&snapshot, metric::PROJECTION_EVENTS, &labels),
        Some(10.0)
    );
}

#[test]
fn a_running_dispatcher_counts_dead_letters() {
    use cqrs_core::{CommandDispatcher, CommandEnvelope, ScheduleStore, ScheduledCommand};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let parked = Arc::new(Mutex::new(None));
    with_recorder(&recorder, || async {
        let store = Arc::new(InMemoryEventStore::new());
        let lost = CommandEnvelope {
            id: uuid::Uuid::new_v4(),
            target: StreamId::new("nowhere-1").unwrap(),
            command_type: "order.confirm".into(),
            payload: Json::null(),
            correlation_id: None,
            causation_id: None,
            headers: Default::default(),
        };
        store
            .schedule(vec![ScheduledCommand::new(
                lost.clone(),
                chrono::Utc::now(),
            )])
            .await
            .unwrap();
        let dispatcher = CommandDispatcher::new(
            Arc::clone(&store) as Arc<dyn cqrs_core::Storage>,
            Arc::new(cqrs_core::CommandRouter::new()),
        )
        .with_max_attempts(1)
        .spawn();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.find_parked(lost.id).await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "never parked");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        dispatcher.stop().await;
        *parked.lock().unwrap() = Some(lost.id);
    });
    assert!(parked.lock().unwrap().is_some());
    let snapshot = snapshot(&snapshotter);
    assert_eq!(
        value(
            &snapshot,
            metric::DISPATCH_DELIVERIES,
            &[("command", "order.confirm"), ("outcome", "dead_letter")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&snapshot, metric::DISPATCH_PARKED, &[]),
        Some(1.0),
        "counted after the run that parked it"
    );
}
