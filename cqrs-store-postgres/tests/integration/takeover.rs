//! Two runners of one projection in two processes: one leads; when it is killed (SIGKILL), the
//! other takes over within seconds, and every event takes effect once.
//!
//! The test binary is its own second process: run with `CQRS_PG_LEADER_URL` set, the
//! `leader_child` test runs the projection until it is killed.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_core::{
    EventStore, ExpectedVersion, Json, Namespace, NewEvent, ProjectionError, ProjectionRunner,
    ReadModelSpec, RecordedEvent, StreamId,
};
use cqrs_store_postgres::{PostgresEventStore, PostgresProjection, sqlx::PgConnection};

const URL: &str = "CQRS_PG_LEADER_URL";

/// Records which process applied each event; an event applied twice fails (primary key).
struct Attendance {
    runner: String,
}

impl ReadModelSpec for Attendance {
    fn name(&self) -> &str {
        "attendance"
    }
}

#[async_trait]
impl PostgresProjection for Attendance {
    async fn setup(
        &self,
        conn: &mut PgConnection,
        _: &Namespace,
    ) -> Result<(), cqrs_core::BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS attendance (event_id uuid PRIMARY KEY, runner text NOT NULL)")
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
        sqlx::query("INSERT INTO attendance VALUES ($1, $2)")
            .bind(event.metadata.event_id)
            .bind(&self.runner)
            .execute(conn)
            .await
            .map_err(ProjectionError::from_error)?;
        Ok(())
    }
}

async fn run(store: &PostgresEventStore, runner: &str) -> cqrs_core::ProjectionHandle {
    let projection = Arc::new(store.projection(Attendance {
        runner: runner.to_owned(),
    }));
    ProjectionRunner::new(Arc::new(store.clone()), projection)
        .with_retry_delay(Duration::from_millis(50))
        .spawn()
}

/// The first process: leads until it is killed.
#[test]
fn leader_child() {
    let Ok(url) = std::env::var(URL) else { return };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let store = PostgresEventStore::connect(&url).await.unwrap();
            let _runner = run(&store, "child").await;
            std::future::pending::<()>().await;
        });
}

async fn counts(store: &PostgresEventStore) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT runner, count(*) FROM attendance__v1.attendance GROUP BY runner ORDER BY runner",
    )
    .fetch_all(store.pool())
    .await
    .unwrap_or_default()
}

async fn append(store: &PostgresEventStore, n: usize) {
    for _ in 0..n {
        store
            .append(
                &StreamId::new("talk-1").unwrap(),
                ExpectedVersion::Any,
                vec![NewEvent::new("talk.attended", Json::null())],
            )
            .await
            .unwrap();
    }
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_seconds_and_nothing_is_applied_twice() {
    if std::env::var(URL).is_ok() {
        return;
    }
    let Some(server) =
        cqrs_store_postgres::testing::server(cqrs_store_postgres::testing::Durability::Fast)
    else {
        return;
    };
    let url = server.fresh_database().await;
    let store = PostgresEventStore::connect(&url).await.unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "takeover::leader_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(URL, &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    append(&store, 10).await;
    wait_until("the child leading", Duration::from_secs(20), async || {
        counts(&store).await == [("child".to_owned(), 10)]
    })
    .await;

    // A second runner, here: it must wait, and apply nothing while the child leads.
    let standby = run(&store, "parent").await;
    append(&store, 5).await;
    wait_until(
        "the child applying more",
        Duration::from_secs(20),
        async || counts(&store).await == [("child".to_owned(), 15)],
    )
    .await;

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = Instant::now();
    append(&store, 7).await;
    wait_until("the takeover", Duration::from_secs(10), async || {
        counts(&store).await == [("child".to_owned(), 15), ("parent".to_owned(), 7)]
    })
    .await;
    eprintln!("takeover after {:?}", killed_at.elapsed());
    standby.stop().await;
}
