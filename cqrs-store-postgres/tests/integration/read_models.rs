//! Durable read models that change version: each in its own schema, built beside the live one,
//! taking over once caught up, under load, with no failed read.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, Json, Namespace, NewEvent, Position, ProjectionError,
    ProjectionRunner, ReadModelSpec, RecordedEvent, StreamId,
};
use cqrs_store_postgres::{PostgresEventStore, PostgresProjection, sqlx::PgConnection};
use serde_json::json;

/// Seats left per conference. Version 1 keeps one count; version 2 keeps what was added and
/// what was reserved apart, and inserts new rows plainly (a version replaying into another's
/// table would fail on them).
struct Seats {
    version: u32,
}

impl ReadModelSpec for Seats {
    fn name(&self) -> &str {
        "seats_left"
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().with_categories(["seats"])
    }
}

#[async_trait]
impl PostgresProjection for Seats {
    async fn setup(
        &self,
        conn: &mut PgConnection,
        _: &Namespace,
    ) -> Result<(), cqrs_core::BoxError> {
        let sql = if self.version == 1 {
            "CREATE TABLE IF NOT EXISTS remaining (conference text PRIMARY KEY, remaining bigint NOT NULL)"
        } else {
            "CREATE TABLE IF NOT EXISTS seats (conference text PRIMARY KEY, added bigint NOT NULL, reserved bigint NOT NULL)"
        };
        sqlx::query(sql)
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
        let quantity = event
            .payload
            .to_value()
            .map_err(ProjectionError::from_error)?["quantity"]
            .as_i64()
            .unwrap_or(0);
        let added = event.event_type == "seats.added";
        let conference = event.stream.local_id().unwrap_or_default();
        if self.version == 1 {
            sqlx::query("INSERT INTO remaining VALUES ($1, $2) ON CONFLICT (conference) DO UPDATE SET remaining = remaining.remaining + $2")
                .bind(conference)
                .bind(if added { quantity } else { -quantity })
                .execute(conn)
                .await
                .map_err(ProjectionError::from_error)?;
        } else {
            let (a, r) = if added { (quantity, 0) } else { (0, quantity) };
            let updated = sqlx::query(
                "UPDATE seats SET added = added + $2, reserved = reserved + $3 WHERE conference = $1",
            )
            .bind(conference)
            .bind(a)
            .bind(r)
            .execute(&mut *conn)
            .await
            .map_err(ProjectionError::from_error)?;
            if updated.rows_affected() == 0 {
                sqlx::query("INSERT INTO seats VALUES ($1, $2, $3)")
                    .bind(conference)
                    .bind(a)
                    .bind(r)
                    .execute(conn)
                    .await
                    .map_err(ProjectionError::from_error)?;
            }
        }
        Ok(())
    }
}

/// Appends and waits until readers of the log can see the event: older transactions anywhere
/// on the server (other tests' too) hold the gap-safety horizon back for a moment.
async fn seats(store: &PostgresEventStore, conference: &str, ty: &str, quantity: i64) -> Position {
    let position = append(store, conference, ty, quantity).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cqrs_core::EventReader::head(store).await.unwrap() < position {
        assert!(
            tokio::time::Instant::now() < deadline,
            "position {position} never became visible"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    position
}

async fn append(store: &PostgresEventStore, conference: &str, ty: &str, quantity: i64) -> Position {
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

/// (version read, seats left in all conferences), from the live version.
async fn total(store: &PostgresEventStore) -> (u32, i64) {
    store
        .read_model("seats_left", async |conn, tables| {
            let sql = if tables.version() == 1 {
                "SELECT coalesce(sum(remaining), 0)::bigint FROM remaining"
            } else {
                "SELECT coalesce(sum(added - reserved), 0)::bigint FROM seats"
            };
            let n: i64 = sqlx::query_scalar(sql).fetch_one(conn).await?;
            Ok((tables.version(), n))
        })
        .await
        .expect("a read never fails, across a switch too")
}

async fn schemas(store: &PostgresEventStore) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'seats\\_left\\_\\_v%' ORDER BY nspname",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_new_version_rebuilds_in_its_own_schema_and_takes_over() {
    let Some(store) = super::store().await else {
        return;
    };
    seats(&store, "devconf", "seats.added", 10).await;
    seats(&store, "devconf", "seats.reserved", 3).await;
    let v1 = Arc::new(store.projection(Seats { version: 1 }));
    ProjectionRunner::new(Arc::new(store.clone()), v1.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(store.live_version("seats_left").await.unwrap(), Some(1));
    assert_eq!(total(&store).await, (1, 7));

    let v2 = Arc::new(store.projection(Seats { version: 2 }));
    ProjectionRunner::new(Arc::new(store.clone()), v2.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(store.live_version("seats_left").await.unwrap(), Some(2));
    assert_eq!(
        total(&store).await,
        (2, 7),
        "the new shape, the same answer"
    );
    assert_eq!(
        schemas(&store).await,
        ["seats_left__v2"],
        "version 1's schema is dropped"
    );

    // An old build still running version 1 does nothing now.
    seats(&store, "devconf", "seats.reserved", 1).await;
    ProjectionRunner::new(Arc::new(store.clone()), v1)
        .catch_up()
        .await
        .unwrap();
    assert_eq!(store.live_version("seats_left").await.unwrap(), Some(2));
    ProjectionRunner::new(Arc::new(store.clone()), v2.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(total(&store).await, (2, 6));

    // A rebuild starts the version over in a fresh schema and reaches the same rows.
    ProjectionRunner::new(Arc::new(store.clone()), v2)
        .rebuild()
        .await
        .unwrap();
    assert_eq!(total(&store).await, (2, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_takes_over_under_load_with_no_failed_read() {
    const CONFERENCES: i64 = 4;
    const EVENTS: i64 = 600;
    let Some(store) = super::store().await else {
        return;
    };
    let mut opened = Position::ZERO;
    for c in 0..CONFERENCES {
        opened = seats(&store, &format!("c{c}"), "seats.added", 1_000).await;
    }
    let v1 = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.projection(Seats { version: 1 })),
    )
    .spawn();
    v1.wait_for(opened).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop, reads) = (store.clone(), Arc::clone(&stop), Arc::clone(&reads));
            tokio::spawn(async move {
                let mut versions = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let (version, left) = total(&store).await;
                    assert!(
                        (0..=1_000 * CONFERENCES).contains(&left),
                        "version {version} answered {left}"
                    );
                    versions.insert(version);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                versions
            })
        })
        .collect();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = Position::ZERO;
            for n in 0..EVENTS {
                last = seats(
                    &store,
                    &format!("c{}", n % CONFERENCES),
                    "seats.reserved",
                    1,
                )
                .await;
            }
            last
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v2 = ProjectionRunner::new(
        Arc::new(store.clone()),
        Arc::new(store.projection(Seats { version: 2 })),
    )
    .spawn();
    let last = writer.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.live_version("seats_left").await.unwrap() != Some(2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "version 2 never took over"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    v2.wait_for(last).await.unwrap();
    let seen = reads.load(Ordering::Relaxed);
    while reads.load(Ordering::Relaxed) < seen + 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the readers stopped reading"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut versions = BTreeSet::new();
    for reader in readers {
        versions.extend(reader.await.unwrap());
    }
    assert!(
        versions.contains(&1) && versions.contains(&2),
        "the readers read version 1, then version 2: {versions:?}"
    );
    assert_eq!(
        total(&store).await,
        (2, 1_000 * CONFERENCES - EVENTS),
        "version 2 counted every reservation once"
    );
    assert_eq!(schemas(&store).await, ["seats_left__v2"]);
    v1.stop().await;
    v2.stop().await;
}
