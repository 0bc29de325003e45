use std::time::Duration;

use cqrs_core::{
    EventFilter, EventReader, EventStore, ExpectedVersion, Json, NewEvent, Position, StreamId,
};
use cqrs_store_postgres::testing::{Durability, server};
use cqrs_store_postgres::{PostgresEventStore, PostgresOptions};
use futures::StreamExt;

async fn next_event(subscription: &mut cqrs_core::EventStream) -> cqrs_core::RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("woken in time")
        .expect("open")
        .expect("no error")
}

/// A subscriber in another process (another store, another pool) is woken by `NOTIFY`, long
/// before its poll would come round; after its `LISTEN` connection is killed it still
/// receives events (it reconnects, and polls meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_processes_are_woken_by_notify_and_survive_a_dropped_listener() {
    let Some(server) = server(Durability::Fast) else {
        return;
    };
    let url = server.fresh_database().await;
    let writer = PostgresEventStore::connect(&url).await.unwrap();
    let reader = PostgresEventStore::connect_with(
        &url,
        PostgresOptions::default().with_poll_interval(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let mut live = reader.subscribe(Position::START, EventFilter::all());
    // Let the reader catch up with the empty log and start listening.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stream = StreamId::new("wake-1").unwrap();
    writer
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new("first", Json::null())],
        )
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut live).await.event_type,
        "first",
        "woken by NOTIFY, not by a 60 s poll"
    );

    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(writer.pool())
    .await
    .unwrap();
    assert!(killed >= 1, "the listeners were found and killed");
    writer
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new("second", Json::null())],
        )
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut live).await.event_type,
        "second",
        "delivered after the listener dropped"
    );
}
