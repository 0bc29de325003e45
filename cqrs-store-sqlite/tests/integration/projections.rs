use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cqrs_core::testing::stores::{SeatChange, UpgradeUnderLoad, append_seats};
use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, Json, Namespace, NewEvent, Projection,
    ProjectionError, ProjectionRunner, ReadModelSpec, RecordedEvent, StoreError, StreamId,
};
use cqrs_store_sqlite::{SqliteEventStore, SqliteProjection, rusqlite::Connection};

/// Seats left per conference, from `seats.added` and `seats.reserved` events. Version 1 keeps
/// one count per conference; version 2 keeps what was added and what was reserved apart.
struct RemainingSeats {
    version: u32,
    fail_on: Option<u64>,
    failed: AtomicBool,
}

impl RemainingSeats {
    fn new() -> Self {
        Self::version(1)
    }

    fn version(version: u32) -> Self {
        Self {
            version,
            fail_on: None,
            failed: AtomicBool::new(false),
        }
    }
}

impl ReadModelSpec for RemainingSeats {
    fn name(&self) -> &str {
        "remaining_seats"
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().with_categories(["seats"])
    }
}

impl SqliteProjection for RemainingSeats {
    fn setup(&self, conn: &Connection, tables: &Namespace) -> Result<(), cqrs_core::BoxError> {
        let sql = if self.version == 1 {
            format!(
                "CREATE TABLE IF NOT EXISTS {} (conference TEXT PRIMARY KEY, remaining INTEGER NOT NULL)",
                tables.table("remaining")
            )
        } else {
            format!(
                "CREATE TABLE IF NOT EXISTS {} (conference TEXT PRIMARY KEY, added INTEGER NOT NULL, reserved INTEGER NOT NULL)",
                tables.table("seats")
            )
        };
        conn.execute_batch(&sql)?;
        Ok(())
    }

    fn apply(
        &self,
        conn: &Connection,
        tables: &Namespace,
        event: &RecordedEvent,
    ) -> Result<(), cqrs_core::BoxError> {
        let change = SeatChange::of(event)?;
        let (conference, a, r) = (change.conference, change.added, change.reserved);
        if self.version == 1 {
            let delta = change.delta();
            conn.execute(
                &format!(
                    "INSERT INTO {} VALUES (?1, ?2) ON CONFLICT (conference) DO UPDATE SET remaining = remaining + ?2",
                    tables.table("remaining")
                ),
                (conference, delta),
            )
            .map_err(ProjectionError::from_error)?;
        } else {
            // A plain INSERT for a new conference: replaying into a table that already had the
            // row would fail, which is what a version sharing another's tables used to do.
            let updated = conn
                .execute(
                    &format!(
                        "UPDATE {} SET added = added + ?2, reserved = reserved + ?3 WHERE conference = ?1",
                        tables.table("seats")
                    ),
                    (conference, a, r),
                )
                .map_err(ProjectionError::from_error)?;
            if updated == 0 {
                conn.execute(
                    &format!("INSERT INTO {} VALUES (?1, ?2, ?3)", tables.table("seats")),
                    (conference, a, r),
                )
                .map_err(ProjectionError::from_error)?;
            }
        }
        if self.fail_on == Some(event.position.get()) && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(ProjectionError::new("the disk hiccuped").into());
        }
        Ok(())
    }
}

async fn seats(
    store: &SqliteEventStore,
    conference: &str,
    ty: &str,
    quantity: i64,
) -> cqrs_core::Position {
    append_seats(store, conference, ty, quantity).await
}

/// The seats left at `conference`, read from whichever version is live (`None`: no row, or
/// no live version yet).
async fn remaining(store: &SqliteEventStore, conference: &str) -> Option<i64> {
    let conference = conference.to_owned();
    match store
        .read_model("remaining_seats", move |conn, tables| {
            use cqrs_store_sqlite::rusqlite::OptionalExtension;
            let sql = if tables.version() == 1 {
                format!(
                    "SELECT remaining FROM {} WHERE conference = ?1",
                    tables.table("remaining")
                )
            } else {
                format!(
                    "SELECT added - reserved FROM {} WHERE conference = ?1",
                    tables.table("seats")
                )
            };
            conn.query_row(&sql, [conference], |r| r.get(0)).optional()
        })
        .await
    {
        Ok(found) => found,
        Err(StoreError::Invalid(_)) => None,
        Err(err) => panic!("reading the read model failed: {err}"),
    }
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
        ..RemainingSeats::new()
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

/// The tables of `version`, as the file lists them.
async fn tables_of(store: &SqliteEventStore, version: u32) -> Vec<String> {
    store
        .query(move |conn| {
            let mut select = conn.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?1 ESCAPE '\\' ORDER BY name",
            )?;
            select
                .query_map([format!("remaining\\_seats\\_\\_v{version}\\_\\_%")], |r| r.get(0))?
                .collect()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_version_rebuilds_in_its_own_tables_and_takes_over() {
    let store = SqliteEventStore::open_in_memory().await.unwrap();
    seats(&store, "devconf", "seats.added", 10).await;
    seats(&store, "devconf", "seats.reserved", 3).await;
    let v1 = Arc::new(store.projection(RemainingSeats::version(1)));
    ProjectionRunner::new(Arc::new(store.clone()), v1.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(
        store.live_version("remaining_seats").await.unwrap(),
        Some(1)
    );
    assert_eq!(remaining(&store, "devconf").await, Some(7));

    // The new build has only version 2: it replays from the start into its own tables (the
    // old way, into version 1's, broke on rows that were already there).
    let v2 = Arc::new(store.projection(RemainingSeats::version(2)));
    ProjectionRunner::new(Arc::new(store.clone()), v2.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(
        store.live_version("remaining_seats").await.unwrap(),
        Some(2)
    );
    assert_eq!(
        remaining(&store, "devconf").await,
        Some(7),
        "the new shape, the same answer"
    );
    assert!(
        tables_of(&store, 1).await.is_empty(),
        "version 1's tables are dropped"
    );
    assert_eq!(tables_of(&store, 2).await, ["remaining_seats__v2__seats"]);
    assert_eq!(
        cqrs_core::CheckpointStore::load_checkpoint(&store, "remaining_seats@v1")
            .await
            .unwrap(),
        None,
        "and its checkpoint"
    );

    // An old build still running version 1 now does nothing: it cannot write into dropped
    // tables, nor take the read model back.
    seats(&store, "devconf", "seats.reserved", 1).await;
    ProjectionRunner::new(Arc::new(store.clone()), v1)
        .catch_up()
        .await
        .unwrap();
    assert_eq!(
        store.live_version("remaining_seats").await.unwrap(),
        Some(2)
    );
    assert!(tables_of(&store, 1).await.is_empty());
    ProjectionRunner::new(Arc::new(store.clone()), v2)
        .catch_up()
        .await
        .unwrap();
    assert_eq!(remaining(&store, "devconf").await, Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_takes_over_under_load_with_no_failed_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("app.db"))
        .await
        .unwrap();
    let versions: [Arc<dyn Projection>; 2] = [
        Arc::new(store.projection(RemainingSeats::version(1))),
        Arc::new(store.projection(RemainingSeats::version(2))),
    ];
    let (reader, live) = (store.clone(), store.clone());
    let load = UpgradeUnderLoad {
        streams: 8,
        reservations: 2_000,
        ..UpgradeUnderLoad::default()
    };
    load.run(
        Arc::new(store.clone()),
        versions,
        move || {
            let store = reader.clone();
            async move {
                let answer = store
                    .read_model("remaining_seats", |conn, tables| {
                        let sql = if tables.version() == 1 {
                            format!(
                                "SELECT coalesce(sum(remaining), 0) FROM {}",
                                tables.table("remaining")
                            )
                        } else {
                            let seats = tables.table("seats");
                            format!("SELECT coalesce(sum(added - reserved), 0) FROM {seats}")
                        };
                        Ok((
                            tables.version(),
                            conn.query_row(&sql, [], |r| r.get::<_, i64>(0))?,
                        ))
                    })
                    .await?;
                Ok(answer)
            }
        },
        || {
            let store = live.clone();
            async move { store.live_version("remaining_seats").await.unwrap() }
        },
    )
    .await;
    assert!(
        tables_of(&store, 1).await.is_empty(),
        "version 1's tables are dropped"
    );
}
