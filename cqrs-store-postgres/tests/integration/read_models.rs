//! Durable read models that change version: each in its own schema, built beside the live one,
//! taking over once caught up, under load, with no failed read.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::testing::stores::{SeatChange, UpgradeUnderLoad, append_seats};
use cqrs_core::{
    EventFilter, Namespace, Position, Projection, ProjectionError, ProjectionRunner, ReadModelSpec,
    RecordedEvent,
};
use cqrs_store_postgres::{PostgresEventStore, PostgresProjection, sqlx::PgConnection};

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
        let change = SeatChange::of(event)?;
        let (conference, a, r) = (change.conference, change.added, change.reserved);
        if self.version == 1 {
            sqlx::query("INSERT INTO remaining VALUES ($1, $2) ON CONFLICT (conference) DO UPDATE SET remaining = remaining.remaining + $2")
                .bind(conference)
                .bind(change.delta())
                .execute(conn)
                .await
                .map_err(ProjectionError::from_error)?;
        } else {
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
    let position = append_seats(store, conference, ty, quantity).await;
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

/// (version read, seats left in all conferences), from the live version.
async fn total(store: &PostgresEventStore) -> (u32, i64) {
    try_total(store)
        .await
        .expect("a read never fails, across a switch too")
}

/// The live version and its seats left over every conference.
async fn try_total(store: &PostgresEventStore) -> Result<(u32, i64), cqrs_core::BoxError> {
    let answer = store
        .read_model("seats_left", async |conn, tables| {
            let sql = if tables.version() == 1 {
                "SELECT coalesce(sum(remaining), 0)::bigint FROM remaining"
            } else {
                "SELECT coalesce(sum(added - reserved), 0)::bigint FROM seats"
            };
            let n: i64 = sqlx::query_scalar(sql).fetch_one(conn).await?;
            Ok((tables.version(), n))
        })
        .await?;
    Ok(answer)
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
    let Some(store) = super::store().await else {
        return;
    };
    let versions: [Arc<dyn Projection>; 2] = [
        Arc::new(store.projection(Seats { version: 1 })),
        Arc::new(store.projection(Seats { version: 2 })),
    ];
    let (reader, live) = (store.clone(), store.clone());
    UpgradeUnderLoad::default()
        .run(
            Arc::new(store.clone()),
            versions,
            move || {
                let store = reader.clone();
                async move { try_total(&store).await }
            },
            || {
                let store = live.clone();
                async move { store.live_version("seats_left").await.unwrap() }
            },
        )
        .await;
    assert_eq!(schemas(&store).await, ["seats_left__v2"]);
}
