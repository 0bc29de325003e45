use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{
    Commit, EventFilter, EventReader, EventStore, ExpectedVersion, Json, Namespace, NewEvent,
    Position, ProjectionError, ProjectionRunner, ReadModelSpec, RecordedEvent, StreamId, Version,
};
use cqrs_store_postgres::{PostgresEventStore, PostgresProjection, sqlx::PgConnection};

/// Terminates the first other backend of this database whose query starts with `prefix`,
/// waiting for one to show up.
async fn terminate(store: &PostgresEventStore, pattern: &str) -> bool {
    for _ in 0..2000 {
        let killed: Option<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE $1
             LIMIT 1",
        )
        .bind(pattern)
        .fetch_optional(store.pool())
        .await
        .unwrap();
        if killed == Some(true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_append_leaves_nothing_of_the_batch() {
    let Some(store) = super::store().await else {
        return;
    };

    // Killed inside the transaction, after the insert, before the commit.
    let stream = StreamId::new("killed-1").unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    store
        .commit_in(
            &mut tx,
            Commit::new(
                stream.clone(),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("e", Json::null()); 3],
            ),
        )
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(
        tx.commit().await.is_err(),
        "the commit cannot succeed on a killed connection"
    );
    assert!(
        store
            .read_stream(&stream, Version::START)
            .await
            .unwrap()
            .is_empty()
    );

    // Killed while the one append statement runs: all of a big batch or none of it.
    let stream = StreamId::new("killed-2").unwrap();
    let payload = Json::encode(&serde_json::json!({ "padding": "x".repeat(400) })).unwrap();
    let batch = vec![NewEvent::new("big", payload); 40_000];
    let append = {
        let (store, stream) = (store.clone(), stream.clone());
        tokio::spawn(async move {
            store
                .append(&stream, ExpectedVersion::NoStream, batch)
                .await
        })
    };
    let killed = terminate(&store, "WITH cur AS MATERIALIZED%").await;
    let result = append.await.unwrap();
    let stored = store
        .read_stream(&stream, Version::START)
        .await
        .unwrap()
        .len();
    match result {
        Err(_) => assert_eq!(stored, 0, "a killed append left part of its batch"),
        Ok(_) => {
            assert!(
                !killed,
                "the append succeeded although its connection was killed"
            );
            assert_eq!(stored, 40_000);
        }
    }
    // The pool replaces the dead connection; the store goes on.
    store
        .append(
            &StreamId::new("after-1").unwrap(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("e", Json::null())],
        )
        .await
        .expect("the store still appends");
}

/// Counts events in a table, once each (a second insert of an event fails); stalls in its
/// first batch so that the test can kill its connection.
struct Ledger {
    stall_once: AtomicBool,
}

impl ReadModelSpec for Ledger {
    fn name(&self) -> &str {
        "ledger"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().with_categories(["ledger"])
    }
}

#[async_trait]
impl PostgresProjection for Ledger {
    async fn setup(
        &self,
        conn: &mut PgConnection,
        _: &Namespace,
    ) -> Result<(), cqrs_core::BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS ledger (event_id uuid PRIMARY KEY, position bigint NOT NULL)")
            .execute(conn)
            .await
            .map_err(ProjectionError::from_error)?;
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        _: &Namespace,
        event: &RecordedEvent,
    ) -> Result<(), cqrs_core::BoxError> {
        sqlx::query("INSERT INTO ledger VALUES ($1, $2)")
            .bind(event.metadata.event_id)
            .bind(i64::try_from(event.position.get()).unwrap())
            .execute(&mut *conn)
            .await
            .map_err(ProjectionError::from_error)?;
        if self.stall_once.swap(false, Ordering::SeqCst) {
            sqlx::query("SELECT pg_sleep(30) /* ledger stall */")
                .execute(&mut *conn)
                .await
                .map_err(ProjectionError::from_error)?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_projection_is_replaced_and_nothing_is_lost_or_doubled() {
    let Some(store) = super::store().await else {
        return;
    };
    let mut last = Position::ZERO;
    for i in 0..20 {
        let stream = StreamId::new(format!("ledger-{}", i % 3)).unwrap();
        last = store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("ledger.entry", Json::null())],
            )
            .await
            .unwrap()
            .position
            .unwrap();
    }
    let ledger = Arc::new(store.projection(Ledger {
        stall_once: AtomicBool::new(true),
    }));
    let runner = ProjectionRunner::new(Arc::new(store.clone()), ledger)
        .with_retry_delay(Duration::from_millis(10))
        .spawn();
    assert!(
        terminate(&store, "SELECT pg_sleep(30) /* ledger stall */%").await,
        "the stalled batch was found"
    );
    tokio::time::timeout(Duration::from_secs(20), runner.wait_for(last))
        .await
        .expect("the runner resumed")
        .unwrap();
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM ledger__v1.ledger")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(
        (rows, distinct),
        (20, 20),
        "every event once: the killed batch was rolled back whole"
    );
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT position FROM cqrs.checkpoints WHERE name = 'ledger@v1'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(u64::try_from(checkpoint).unwrap(), last.get());
    runner.stop().await;
}
