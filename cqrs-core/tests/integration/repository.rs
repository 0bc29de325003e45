use std::sync::{Arc, Mutex};

use cqrs_core::{
    CommandContext, DecodeErrorKind, EventReader, EventStore, ExpectedVersion, InMemoryEventStore,
    Json, LoadError, NewEvent, Repository, StreamId, Upcasters, Version,
};
use serde_json::json;
use tokio::sync::Barrier;
use tracing_subscriber::layer::SubscriberExt;

use crate::domain::{Order, OrderCommand, OrderEvent, OrderStatus, Seats, SeatsCommand};

/// 16 tasks lined up by a barrier reserve `rounds` seats each, one at a time, on one
/// conference of 100 seats through `seats`; every reservation must land.
async fn reserve_concurrently(seats: Repository<Seats>, rounds: u32) {
    let conference = "busy".to_owned();
    seats
        .handle(&conference, SeatsCommand::Add { quantity: 100 })
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (seats, barrier, conference) =
                (seats.clone(), Arc::clone(&barrier), conference.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for round in 0..rounds {
                    let order = format!("o{i}-{round}");
                    seats
                        .handle(&conference, SeatsCommand::Reserve { order, seats: 1 })
                        .await?;
                }
                Ok::<_, cqrs_core::CommandError<crate::domain::SeatsError>>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every reservation lands");
    }
    let loaded = seats.load(&conference).await.unwrap();
    assert_eq!(loaded.version, Version::new(1 + 16 * u64::from(rounds)));
    assert_eq!(loaded.state.unwrap().available, 100 - 16 * rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_aggregate_all_land_through_retries() {
    let store = Arc::new(InMemoryEventStore::new());
    reserve_concurrently(Repository::new(store).with_max_attempts(64), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_a_cached_aggregate_all_land() {
    let store = Arc::new(InMemoryEventStore::new());
    let seats = Repository::new(store).with_max_attempts(64).with_cache(16);
    reserve_concurrently(seats, 4).await;
}

/// An order placed in an older shape (`legacy.order_placed`) on `stream`, and the upcaster that
/// reads it as `order.placed`, counting the events it decodes: how many stored events a
/// repository read.
async fn legacy_order(
    store: &InMemoryEventStore,
    streams: &[&str],
) -> (Upcasters, Arc<std::sync::atomic::AtomicUsize>) {
    for stream in streams {
        store
            .append(
                &StreamId::new(*stream).unwrap(),
                ExpectedVersion::NoStream,
                vec![NewEvent::new(
                    "legacy.order_placed",
                    Json::from(json!({ "order": stream, "seats": 2 })),
                )],
            )
            .await
            .unwrap();
    }
    let decoded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&decoded);
    let upcasters = Upcasters::new().register(
        "legacy.order_placed",
        1,
        ["order.placed"],
        move |payload: serde_json::Value| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(vec![cqrs_core::Upcasted::new("order.placed", 1, payload)])
        },
    );
    (upcasters, decoded)
}

#[tokio::test]
async fn a_cached_aggregate_is_not_read_again() {
    let store = Arc::new(InMemoryEventStore::new());
    let (upcasters, decoded) = legacy_order(&store, &["order-plain", "order-cached"]).await;
    let plain = Repository::<Order>::new(store.clone()).with_upcasters(upcasters.clone());
    let cached = Repository::<Order>::new(store.clone())
        .with_upcasters(upcasters)
        .with_cache(8);
    let read = || decoded.load(std::sync::atomic::Ordering::Relaxed);

    let id = "plain".to_owned();
    plain.handle(&id, OrderCommand::Confirm).await.unwrap();
    assert!(
        plain
            .handle(&id, OrderCommand::Confirm)
            .await
            .unwrap_err()
            .is_rejected()
    );
    assert_eq!(
        read(),
        2,
        "without the cache, each command reads the stream"
    );

    let id = "cached".to_owned();
    cached.handle(&id, OrderCommand::Confirm).await.unwrap();
    assert_eq!(read(), 3, "the first command loads");
    // A rejection leaves the state as it was, cached too.
    assert!(
        cached
            .handle(&id, OrderCommand::Confirm)
            .await
            .unwrap_err()
            .is_rejected()
    );
    assert!(
        cached
            .handle(&id, OrderCommand::Reject)
            .await
            .unwrap_err()
            .is_rejected()
    );
    assert_eq!(
        read(),
        3,
        "later ones start from the state the last one left"
    );
    let loaded = cached.load(&id).await.unwrap();
    assert_eq!(loaded.state.unwrap().status, OrderStatus::Confirmed);
    assert_eq!(loaded.version, Version::new(2));
}

#[tokio::test]
async fn a_repository_without_a_message_log_records_no_commands() {
    let store = Arc::new(InMemoryEventStore::new());
    let seats = Repository::<Seats>::new(store.clone()).without_message_log();
    let conference = "unlogged".to_owned();
    let id = uuid::Uuid::now_v7();
    let add = || SeatsCommand::Add { quantity: 5 };
    let first = seats
        .handle_with(
            &conference,
            add(),
            CommandContext::new().with_command_id(id),
        )
        .await
        .unwrap();
    // Without its record the id is not recognised: the command runs again (what is given up).
    let again = seats
        .handle_with(
            &conference,
            add(),
            CommandContext::new().with_command_id(id),
        )
        .await
        .unwrap();
    assert!(!again.replayed);
    assert_eq!(
        (first.version, again.version),
        (Version::new(1), Version::new(2))
    );
    assert_eq!(
        cqrs_core::MessageLog::find_command(&*store, id)
            .await
            .unwrap(),
        None
    );
    let order = "too-many".to_owned();
    let refused = seats
        .handle(&conference, SeatsCommand::Reserve { order, seats: 11 })
        .await
        .unwrap_err();
    assert!(refused.is_rejected());
    let logged = cqrs_core::MessageLog::query_log(&*store, &cqrs_core::LogQuery::default())
        .await
        .unwrap();
    assert_eq!(logged.len(), 2, "the two events, no command: {logged:?}");
    let events = store
        .read_stream(&StreamId::new("seats-unlogged").unwrap(), Version::START)
        .await
        .unwrap();
    assert!(events.iter().all(|e| e.metadata.command_id == Some(id)));
}

#[tokio::test]
async fn an_aggregate_is_snapshotted_on_request() {
    let store = Arc::new(InMemoryEventStore::new());
    let seats = Repository::<Seats>::new(store.clone())
        .with_snapshots(cqrs_core::SnapshotPolicy::every(1_000));
    let conference = "snapped".to_owned();
    seats
        .handle(&conference, SeatsCommand::Add { quantity: 10 })
        .await
        .unwrap();
    let order = "o1".to_owned();
    seats
        .handle(&conference, SeatsCommand::Reserve { order, seats: 3 })
        .await
        .unwrap();
    let stream = StreamId::new("seats-snapped").unwrap();
    let snapshots = || {
        cqrs_core::SnapshotStore::load_snapshot(
            &*store,
            &stream,
            <Seats as cqrs_core::Aggregate>::SNAPSHOT_VERSION,
        )
    };
    assert!(snapshots().await.unwrap().is_none(), "the policy took none");
    assert_eq!(
        seats.snapshot_now(&conference).await.unwrap(),
        Some(Version::new(2))
    );
    let snapshot = snapshots().await.unwrap().expect("taken");
    assert_eq!(snapshot.version, Version::new(2));
    let state: Seats = snapshot.state.decode().unwrap();
    assert_eq!(state.available, 7);
    assert_eq!(
        seats.load(&conference).await.unwrap().version,
        Version::new(2)
    );
    assert_eq!(
        seats.snapshot_now(&"nothing".to_owned()).await.unwrap(),
        None,
        "an aggregate that does not exist has nothing to snapshot"
    );
}

#[tokio::test]
async fn a_cached_state_still_sees_what_others_wrote() {
    let store = Arc::new(InMemoryEventStore::new());
    let cached = Repository::<Seats>::new(store.clone()).with_cache(8);
    let other = Repository::<Seats>::new(store.clone());
    let conference = "shared".to_owned();
    cached
        .handle(&conference, SeatsCommand::Add { quantity: 10 })
        .await
        .unwrap();
    // Another process takes 8 of the 10 seats behind the cache's back.
    other
        .handle(
            &conference,
            SeatsCommand::Reserve {
                order: "theirs".into(),
                seats: 8,
            },
        )
        .await
        .unwrap();
    let refused = cached
        .handle(
            &conference,
            SeatsCommand::Reserve {
                order: "ours".into(),
                seats: 5,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.rejection(),
        Some(&crate::domain::SeatsError::NotEnough { available: 2 })
    );
    let handled = cached
        .handle(
            &conference,
            SeatsCommand::Reserve {
                order: "ours".into(),
                seats: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(handled.version, Version::new(3));
    assert_eq!(
        cached
            .load(&conference)
            .await
            .unwrap()
            .state
            .unwrap()
            .available,
        0
    );
}

#[tokio::test]
async fn old_event_shapes_are_upcast_on_load() {
    let store = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new("order-legacy").unwrap();
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new(
                    "OrderPlaced",
                    Json::from(json!({ "OrderId": "legacy", "Seats": 2 })),
                ),
                NewEvent::new(
                    "OrderPaymentConfirmed",
                    Json::from(json!({ "OrderId": "legacy" })),
                ),
            ],
        )
        .await
        .unwrap();
    let upcasters = Upcasters::new()
        .register(
            "OrderPlaced",
            1,
            ["order.placed"],
            |old: serde_json::Value| {
                Ok(vec![cqrs_core::Upcasted::new(
                    "order.placed",
                    1,
                    json!({ "order": old["OrderId"], "seats": old["Seats"] }),
                )])
            },
        )
        .register(
            "OrderPaymentConfirmed",
            1,
            ["order.confirmed"],
            |old: serde_json::Value| {
                Ok(vec![cqrs_core::Upcasted::new(
                    "order.confirmed",
                    1,
                    json!({ "order": old["OrderId"] }),
                )])
            },
        );
    let orders = Repository::<Order>::new(store.clone()).with_upcasters(upcasters);
    let order = orders.load(&"legacy".to_owned()).await.unwrap();
    assert_eq!(order.state.unwrap().status, OrderStatus::Confirmed);
    let stored = store.read_stream(&stream, Version::START).await.unwrap();
    assert_eq!(
        stored[0].event_type, "OrderPlaced",
        "upcasting never rewrites stored rows"
    );

    let err = orders
        .handle(&"legacy".to_owned(), OrderCommand::Confirm)
        .await
        .unwrap_err();
    assert_eq!(
        err.rejection(),
        Some(&crate::domain::OrderError::NotPending)
    );
}

#[tokio::test]
async fn an_unknown_event_type_fails_the_load_naming_its_position() {
    let store = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new("order-broken").unwrap();
    store
        .append(
            &StreamId::new("order-other").unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::new(
                "order.placed",
                Json::from(json!({"order": "other", "seats": 1})),
            )],
        )
        .await
        .unwrap();
    let placed = NewEvent::new(
        "order.placed",
        Json::from(json!({ "order": "broken", "seats": 1 })),
    );
    let alien = NewEvent::new("order.teleported", Json::from(json!({})));
    let appended = store
        .append(&stream, ExpectedVersion::NoStream, vec![placed, alien])
        .await
        .unwrap();
    let orders = Repository::<Order>::new(store.clone());
    match orders.load(&"broken".to_owned()).await.unwrap_err() {
        LoadError::Decode(err) => {
            assert_eq!(err.position, appended.position.unwrap());
            assert_eq!(err.version, Version::new(2));
            assert!(matches!(err.kind, DecodeErrorKind::UnknownType));
            assert!(
                err.to_string()
                    .contains(&format!("position {}", appended.position.unwrap()))
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(
        orders.load(&"other".to_owned()).await.is_ok(),
        "other streams still load"
    );
}

#[tokio::test]
async fn events_carry_the_commands_lineage() {
    let store = Arc::new(InMemoryEventStore::new());
    let orders = Repository::<Order>::new(store.clone());
    let flow = uuid::Uuid::new_v4();
    let cause = uuid::Uuid::new_v4();
    let cx = CommandContext::new()
        .with_correlation_id(flow)
        .with_causation_id(cause)
        .with_header("user", "ana");
    let handled = orders
        .handle_with(
            &"o1".to_owned(),
            OrderCommand::Place { seats: 1 },
            cx.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        handled.events,
        [OrderEvent::Placed {
            order: "o1".into(),
            seats: 1
        }]
    );
    let stored = store
        .read_stream(&handled.stream, Version::START)
        .await
        .unwrap();
    let meta = &stored[0].metadata;
    assert_eq!(
        meta.correlation_id,
        Some(flow),
        "events inherit the correlation id"
    );
    assert_eq!(
        meta.causation_id,
        Some(cx.command_id),
        "the command caused the event"
    );
    assert_eq!(meta.command_id, Some(cx.command_id));
    assert_eq!(meta.headers["user"], "ana");
    let record = cqrs_core::MessageLog::find_command(&*store, cx.command_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.correlation_id, record.causation_id),
        (Some(flow), Some(cause))
    );
}

#[derive(Clone, Default)]
struct SpanNames(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanNames {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(attrs.metadata().name().to_owned());
    }
}

#[test]
fn command_handling_and_loading_run_in_spans() {
    let names = SpanNames::default();
    let subscriber = tracing_subscriber::registry().with(names.clone());
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let orders = Repository::<Order>::new(Arc::new(InMemoryEventStore::new()));
                orders
                    .handle(&"o1".to_owned(), OrderCommand::Place { seats: 1 })
                    .await
                    .unwrap();
                orders.load(&"o1".to_owned()).await.unwrap();
            });
    });
    let names = names.0.lock().unwrap().clone();
    for span in [
        "cqrs.command",
        "cqrs.store.read_then_commit",
        "cqrs.load",
        "cqrs.store.read_stream",
    ] {
        assert!(
            names.iter().any(|n| n == span),
            "{span} is missing from {names:?}"
        );
    }
}

/// With the `otel` feature and an OpenTelemetry layer, a command's record and events carry the
/// context of its `cqrs.command` span: a child of the span it runs in, or, outside any trace,
/// of the context its headers brought (a command taken from a queue).
#[cfg(feature = "otel")]
#[test]
fn commands_carry_the_trace_they_run_in() {
    use cqrs_core::trace::{TRACEPARENT, TraceParent};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing::Instrument;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let store = Arc::new(InMemoryEventStore::new());
    let orders = Repository::<Order>::new(store.clone());
    let queued = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (in_request, from_queue, malformed) = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let place = |id: &'static str, context: CommandContext| {
                    let orders = &orders;
                    async move {
                        let command_id = context.command_id;
                        orders
                            .handle_with(&id.to_owned(), OrderCommand::Place { seats: 1 }, context)
                            .await
                            .unwrap();
                        command_id
                    }
                };
                let request = tracing::info_span!("request");
                let in_request = place("o1", CommandContext::new())
                    .instrument(request.clone())
                    .await;
                let from_queue =
                    place("o2", CommandContext::new().with_header(TRACEPARENT, queued)).await;
                let malformed = place(
                    "o3",
                    CommandContext::new().with_header(TRACEPARENT, "00-not-a-context"),
                )
                .await;
                (in_request, from_queue, malformed)
            })
    });
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let trace_of = |id: uuid::Uuid| {
        let store = store.clone();
        async move {
            let record = cqrs_core::MessageLog::find_command(&*store, id)
                .await
                .unwrap()
                .unwrap();
            let events = store
                .read_stream(&record.target, Version::START)
                .await
                .unwrap();
            let parent = TraceParent::of(&record.headers).expect("the record has a context");
            assert_eq!(
                TraceParent::of(&events[0].metadata.headers),
                Some(parent),
                "the events carry the record's context"
            );
            parent
        }
    };
    let span_named = |name: &str, parent: TraceParent| {
        spans.iter().find(|s| {
            s.name == name
                && u128::from_be_bytes(s.span_context.trace_id().to_bytes()) == parent.trace_id
                && u64::from_be_bytes(s.span_context.span_id().to_bytes()) == parent.span_id
        })
    };
    tokio_test::block_on(async {
        let parent = trace_of(in_request).await;
        let command = span_named("cqrs.command", parent).expect("the command's span");
        let request = spans.iter().find(|s| s.name == "request").unwrap();
        assert_eq!(command.parent_span_id, request.span_context.span_id());
        assert_eq!(
            command.span_context.trace_id(),
            request.span_context.trace_id()
        );

        let parent = trace_of(from_queue).await;
        let queued = TraceParent::parse(queued).unwrap();
        assert_eq!(
            parent.trace_id, queued.trace_id,
            "the queue's trace goes on"
        );
        let command = span_named("cqrs.command", parent).expect("the command's span");
        assert_eq!(
            u64::from_be_bytes(command.parent_span_id.to_bytes()),
            queued.span_id
        );

        let parent = trace_of(malformed).await;
        assert!(span_named("cqrs.command", parent).is_some(), "a new trace");
    });
}
