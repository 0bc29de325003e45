use std::fmt;

use async_trait::async_trait;
use cqrs_core::{EventFilter, Position, Projection, ProjectionError, RecordedEvent};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::{Mutex, MutexGuard};

use crate::store::{PostgresEventStore, load_checkpoint};
use cqrs_core::store::to_i64;

/// A read model whose tables live in the store's database.
///
/// Bound to its store with [`PostgresEventStore::projection`], its changes and its checkpoint
/// commit in one transaction, so each event takes effect exactly once, even when a connection
/// dies mid-batch. Any number of processes may run it: one leads (it holds a session advisory
/// lock), the others wait, and one of them takes over as soon as PostgreSQL sees the leader's
/// connection close.
///
/// # Examples
///
/// ```no_run
/// use async_trait::async_trait;
/// use cqrs_core::{ProjectionError, RecordedEvent};
/// use cqrs_store_postgres::{PostgresProjection, sqlx::PgConnection};
///
/// struct EventCounts;
///
/// #[async_trait]
/// impl PostgresProjection for EventCounts {
///     fn name(&self) -> &str { "event_counts" }
///
///     async fn setup(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
///         sqlx::query("CREATE TABLE IF NOT EXISTS event_counts (event_type text PRIMARY KEY, n bigint NOT NULL)")
///             .execute(conn).await.map_err(ProjectionError::from_error)?;
///         Ok(())
///     }
///
///     async fn apply(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), ProjectionError> {
///         sqlx::query("INSERT INTO event_counts VALUES ($1, 1) ON CONFLICT (event_type) DO UPDATE SET n = event_counts.n + 1")
///             .bind(&event.event_type)
///             .execute(conn).await.map_err(ProjectionError::from_error)?;
///         Ok(())
///     }
///
///     async fn reset(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
///         sqlx::query("DELETE FROM event_counts").execute(conn).await.map_err(ProjectionError::from_error)?;
///         Ok(())
///     }
/// }
/// # use sqlx;
/// ```
#[async_trait]
pub trait PostgresProjection: Send + Sync + 'static {
    /// The read model's name.
    fn name(&self) -> &str;

    /// The read model's version; a new version rebuilds beside the old one.
    fn version(&self) -> u32 {
        1
    }

    /// The events it reads; all by default.
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// Creates the read model's tables if they are missing. Runs when this process becomes the
    /// leader.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the tables cannot be created.
    async fn setup(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let _ = conn;
        Ok(())
    }

    /// Applies one event, inside the batch's transaction.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] to roll the whole batch back; the runner retries it.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;

    /// Empties the read model's tables, to rebuild from the start.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if they cannot be emptied.
    async fn reset(&self, conn: &mut PgConnection) -> Result<(), ProjectionError>;
}

/// A [`PostgresProjection`] bound to its store: a [`Projection`] whose changes and checkpoint
/// commit together, run by one process at a time. Made by [`PostgresEventStore::projection`].
pub struct Transactional<P> {
    store: PostgresEventStore,
    projection: P,
    /// The leader's own connection: it holds the advisory lock for as long as it is open.
    leader: Mutex<Option<PgConnection>>,
}

impl<P> fmt::Debug for Transactional<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transactional")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl PostgresEventStore {
    /// Binds `projection` to this store.
    pub fn projection<P: PostgresProjection>(&self, projection: P) -> Transactional<P> {
        Transactional {
            store: self.clone(),
            projection,
            leader: Mutex::new(None),
        }
    }
}

impl<P: PostgresProjection> Transactional<P> {
    fn key(&self) -> String {
        format!("{}@v{}", self.projection.name(), self.projection.version())
    }

    /// The leader's connection, waiting to become the leader if another process is.
    async fn lead(&self) -> Result<MutexGuard<'_, Option<PgConnection>>, ProjectionError> {
        let mut leader = self.leader.lock().await;
        if leader.is_none() {
            let options = self.store.pool().connect_options();
            let mut conn = PgConnection::connect_with(&options)
                .await
                .map_err(ProjectionError::from_error)?;
            // Waits while another process holds it; PostgreSQL frees it when that process's
            // connection closes, so a dead leader is replaced within moments.
            sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
                .bind(format!(
                    "cqrs-projection:{}:{}",
                    self.store.schema(),
                    self.key()
                ))
                .execute(&mut conn)
                .await
                .map_err(ProjectionError::from_error)?;
            tracing::info!(projection = %self.key(), "leading the projection");
            self.projection.setup(&mut conn).await?;
            *leader = Some(conn);
        }
        Ok(leader)
    }

    /// Runs `work` on the leader's connection; a failure closes the connection, giving up the
    /// lead (the next attempt takes it again, or waits for whoever took it).
    async fn on_leader<T>(
        &self,
        work: impl AsyncFnOnce(&P, &mut PgConnection) -> Result<T, ProjectionError>,
    ) -> Result<T, ProjectionError> {
        let mut leader = self.lead().await?;
        let conn = leader
            .as_mut()
            .ok_or_else(|| ProjectionError::new("no leader connection"))?;
        let result = work(&self.projection, conn).await;
        if result.is_err() {
            *leader = None;
        }
        result
    }
}

#[async_trait]
impl<P: PostgresProjection> Projection for Transactional<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn version(&self) -> u32 {
        self.projection.version()
    }

    fn filter(&self) -> EventFilter {
        self.projection.filter()
    }

    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        let key = self.key();
        let sql = self.store.sql().clone();
        self.on_leader(async move |_, conn| {
            load_checkpoint(&sql, &mut *conn, &key)
                .await
                .map_err(ProjectionError::from_error)
        })
        .await
    }

    async fn apply(
        &self,
        events: &[RecordedEvent],
        checkpoint: Position,
    ) -> Result<(), ProjectionError> {
        let key = self.key();
        let sql = self.store.sql().clone();
        self.on_leader(async move |projection, conn| {
            let mut tx = conn.begin().await.map_err(ProjectionError::from_error)?;
            for event in events {
                projection.apply(&mut tx, event).await?;
            }
            sqlx::query(AssertSqlSafe(sql.save_checkpoint.clone()))
                .bind(&key)
                .bind(to_i64(checkpoint.get()).map_err(ProjectionError::from_error)?)
                .execute(&mut *tx)
                .await
                .map_err(ProjectionError::from_error)?;
            tx.commit().await.map_err(ProjectionError::from_error)
        })
        .await
    }

    async fn reset(&self) -> Result<(), ProjectionError> {
        let key = self.key();
        let sql = self.store.sql().clone();
        self.on_leader(async move |projection, conn| {
            let mut tx = conn.begin().await.map_err(ProjectionError::from_error)?;
            projection.reset(&mut tx).await?;
            sqlx::query(AssertSqlSafe(sql.delete_checkpoint.clone()))
                .bind(&key)
                .execute(&mut *tx)
                .await
                .map_err(ProjectionError::from_error)?;
            tx.commit().await.map_err(ProjectionError::from_error)
        })
        .await
    }
}
