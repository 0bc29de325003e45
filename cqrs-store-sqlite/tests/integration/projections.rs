use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, Json, NewEvent, Projection, ProjectionError,
    ProjectionRunner, RecordedEvent, StreamId,
};
use cqrs_store_sqlite::{SqliteEventStore, SqliteProjection, rusqlite::Connection};
use serde_json::json;

/// Seats left per conference, from `seats.added` and `seats.reserved` events.
struct RemainingSeats {
    fail_on: Option<u64>,
    failed: AtomicBool,
}

impl RemainingSeats {
    fn new() -> Self {
        Self {
            fail_on: None,
            failed: AtomicBool::new(false),
        }
    }
}

impl SqliteProjection for RemainingSeats {
    fn name(&self) -> &str {
        "remaining_seats"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().with_categories(["seats"])
    }

    fn setup(&self, conn: &Connection) -> Result<(), ProjectionError> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS remaining_seats (conference TEXT PRIMARY KEY, remaining INTEGER NOT NULL)")
            .map_err(ProjectionError::from_error)
    }

    fn apply(&self, conn: &Connection, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let quantity = event
            .payload
            .to_value()
            .map_err(ProjectionError::from_error)?["quantity"]
            .as_i64()
            .unwrap_or(0);
        let delta = if event.event_type == "seats.added" {
            quantity
        } else {
            -quantity
        };
        conn.execute(
            "INSERT INTO remaining_seats VALUES (?1, ?2) ON CONFLICT (conference) DO UPDATE SET remaining = remaining + ?2",
            (event.stream.local_id().unwrap_or_default(), delta),
        )
        .map_err(ProjectionError::from_error)?;
        if self.fail_on == Some(event.position.get()) && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(ProjectionError::new("the disk hiccuped"));
        }
        Ok(())
    }

    fn reset(&self, conn: &Connection) -> Result<(), ProjectionError> {
        conn.execute_batch("DELETE FROM remaining_seats")
            .map_err(ProjectionError::from_error)
    }
}

async fn seats(
    store: &SqliteEventStore,
    conference: &str,
    ty: &str,
    quantity: i64,
) -> cqrs_core::Position {
    store
        .append(
            &StreamId::new(format!("seats-{conference}")).unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::new(
                ty,
                Json::from(json!({ "quantity": quantity })),
            )],
        )
        .await
        .unwrap()
        .position
        .unwrap()
}

async fn remaining(store: &SqliteEventStore, conference: &str) -> Option<i64> {
    let conference = conference.to_owned();
    store
        .query(move |conn| {
            use cqrs_store_sqlite::rusqlite::OptionalExtension;
            let exists: bool = conn.query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'remaining_seats'",
                [],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(None);
            }
            conn.query_row(
                "SELECT remaining FROM remaining_seats WHERE conference = ?1",
                [conference],
                |r| r.get(0),
            )
            .optional()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn rows_and_checkpoint_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("app.db"))
        .await
        .unwrap();
    seats(&store, "devconf", "seats.added", 10).await;
    seats(&store, "devconf", "seats.reserved", 3).await;
    store
        .append(
            &StreamId::new("order-1").unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::new("order.placed", Json::null())],
        )
        .await
        .unwrap();
    let projection = Arc::new(store.projection(RemainingSeats::new()));
    let reached = ProjectionRunner::new(Arc::new(store.clone()), projection.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(remaining(&store, "devconf").await, Some(7));
    assert_eq!(projection.checkpoint().await.unwrap(), Some(reached));
    assert_eq!(
        reached.get(),
        3,
        "the checkpoint covers the filtered-out order event too"
    );

    // Applying the same batch again would double-count; the checkpoint makes the runner skip it.
    ProjectionRunner::new(Arc::new(store.clone()), projection.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(remaining(&store, "devconf").await, Some(7));

    ProjectionRunner::new(Arc::new(store.clone()), projection.clone())
        .rebuild()
        .await
        .unwrap();
    assert_eq!(
        remaining(&store, "devconf").await,
        Some(7),
        "a rebuild reaches the same rows"
    );
}

#[tokio::test]
async fn a_failed_batch_leaves_neither_rows_nor_checkpoint_and_the_retry_counts_once() {
    let store = SqliteEventStore::open_in_memory().await.unwrap();
    seats(&store, "devconf", "seats.added", 10).await;
    let failing = seats(&store, "devconf", "seats.reserved", 4).await;
    let projection = Arc::new(store.projection(RemainingSeats {
        fail_on: Some(failing.get()),
        failed: AtomicBool::new(false),
    }));
    let runner = ProjectionRunner::new(Arc::new(store.clone()), projection.clone());
    assert!(runner.catch_up().await.is_err(), "the batch failed");
    assert_eq!(
        remaining(&store, "devconf").await,
        None,
        "its rows were rolled back"
    );
    assert_eq!(
        projection.checkpoint().await.unwrap(),
        None,
        "and so was its checkpoint"
    );
    runner.catch_up().await.unwrap();
    assert_eq!(
        remaining(&store, "devconf").await,
        Some(6),
        "the retry applied each event once"
    );
}

#[tokio::test]
async fn a_live_runner_keeps_the_read_model_current() {
    let store = SqliteEventStore::open_in_memory().await.unwrap();
    let projection = Arc::new(store.projection(RemainingSeats::new()));
    let live = ProjectionRunner::new(Arc::new(store.clone()), projection).spawn();
    seats(&store, "a", "seats.added", 5).await;
    let last = seats(&store, "a", "seats.reserved", 2).await;
    live.wait_for(last).await.unwrap();
    assert_eq!(remaining(&store, "a").await, Some(3));
    live.stop().await;
}
