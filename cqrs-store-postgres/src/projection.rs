use std::fmt;

use async_trait::async_trait;
use cqrs_core::store::DurableProjection;
use cqrs_core::store::ReadModelRole as Role;
use cqrs_core::{BoxError, Namespace, Position, ProjectionError, ReadModelSpec, RecordedEvent};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::{Mutex, MutexGuard};

use crate::state::load_checkpoint;
use crate::store::PostgresEventStore;
use cqrs_core::store::to_i64;

/// A read model whose tables live in the store's database.
///
/// Bound to its store with [`PostgresEventStore::projection`], its changes and its checkpoint
/// commit in one transaction, so each event takes effect exactly once, even when a connection
/// dies mid-batch. Any number of processes may run it: one leads (it holds a session advisory
/// lock), the others wait, and one of them takes over as soon as PostgreSQL sees the leader's
/// connection close.
///
/// **Versions.** Each version keeps its tables in a schema of its own (its [`Namespace`]'s
/// [`schema`](Namespace::schema), `{name}__v{version}`), set as the leader's `search_path`: the
/// SQL of `setup` and `apply` names its tables plainly. A new
/// [`version`](ReadModelSpec::version) is built beside the live one while readers keep reading
/// the live one; once it has read as far as the live one it takes over in one transaction,
/// which drops the old version's schema. Readers go through
/// [`PostgresEventStore::read_model`], which holds the live version for the length of their
/// query, so a switch never drops a table from under it.
///
/// # Examples
///
/// ```no_run
/// use async_trait::async_trait;
/// use cqrs_core::{BoxError, Namespace, ReadModelSpec, RecordedEvent};
/// use cqrs_store_postgres::{PostgresProjection, sqlx::PgConnection};
///
/// struct EventCounts;
///
/// impl ReadModelSpec for EventCounts {
///     fn name(&self) -> &str { "event_counts" }
/// }
///
/// #[async_trait]
/// impl PostgresProjection for EventCounts {
///     async fn setup(&self, conn: &mut PgConnection, _: &Namespace) -> Result<(), BoxError> {
///         sqlx::query("CREATE TABLE IF NOT EXISTS counts (event_type text PRIMARY KEY, n bigint NOT NULL)")
///             .execute(conn).await?;
///         Ok(())
///     }
///
///     async fn apply(&self, conn: &mut PgConnection, _: &Namespace, event: &RecordedEvent) -> Result<(), BoxError> {
///         sqlx::query("INSERT INTO counts VALUES ($1, 1) ON CONFLICT (event_type) DO UPDATE SET n = counts.n + 1")
///             .bind(&event.event_type)
///             .execute(conn).await?;
///         Ok(())
///     }
/// }
/// # use sqlx;
/// ```
#[async_trait]
pub trait PostgresProjection: ReadModelSpec {
    /// Creates this version's tables if they are missing, in its schema (the connection's
    /// `search_path`). Runs when this process becomes the leader, and after a rebuild.
    ///
    /// # Errors
    ///
    /// Any error if the tables cannot be created.
    async fn setup(&self, conn: &mut PgConnection, tables: &Namespace) -> Result<(), BoxError> {
        let _ = (conn, tables);
        Ok(())
    }

    /// Applies one event, inside the batch's transaction.
    ///
    /// # Errors
    ///
    /// Any error (`?` works on sqlx's, on decoding, on [`ProjectionError`]) rolls the whole
    /// batch back; the runner retries it.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        tables: &Namespace,
        event: &RecordedEvent,
    ) -> Result<(), BoxError>;
}

/// The role of `namespace`'s version, holding the read model's row (`FOR SHARE`) for the
/// transaction: a switch (which updates the row) then waits for the readers and the old
/// version's batch under way, and they for it.
async fn role(
    store: &PostgresEventStore,
    conn: &mut PgConnection,
    namespace: &Namespace,
) -> Result<Role, ProjectionError> {
    let live: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT live_version FROM {}.read_models WHERE name = $1 FOR SHARE",
        store.schema()
    )))
    .bind(namespace.name())
    .fetch_optional(&mut *conn)
    .await
    .map_err(ProjectionError::from_error)?;
    Ok(Role::of(live.map(i32::unsigned_abs), namespace.version()))
}

/// A [`PostgresProjection`] bound to its store: a [`Projection`](cqrs_core::Projection) whose changes and checkpoint
/// commit together, run by one process at a time. Made by [`PostgresEventStore::projection`].
pub struct Transactional<P> {
    store: PostgresEventStore,
    projection: P,
    /// This version's schema, or why the read model's name cannot make one.
    namespace: Result<Namespace, String>,
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
            namespace: Namespace::of(&projection).map_err(|e| e.to_string()),
            projection,
            leader: Mutex::new(None),
        }
    }
}

impl PostgresEventStore {
    /// Runs `read` over the live version of the read model `name`, in one transaction whose
    /// `search_path` is that version's schema (plain table names resolve to its tables): the
    /// version stays live until `read` returns, as a switch waits for it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`](cqrs_core::StoreError::Invalid) if the read model has no live
    /// version yet (its runner has not started), or the backend error of `read` or of the read.
    pub async fn read_model<T>(
        &self,
        name: &str,
        read: impl AsyncFnOnce(&mut PgConnection, &Namespace) -> Result<T, sqlx::Error>,
    ) -> Result<T, cqrs_core::StoreError> {
        use cqrs_core::StoreError;
        let mut tx = self.pool().begin().await.map_err(StoreError::backend)?;
        let live: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT live_version FROM {}.read_models WHERE name = $1 FOR SHARE",
            self.schema()
        )))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let version = live.ok_or_else(|| {
            StoreError::Invalid(format!(
                "the read model {name} has no live version yet: start its runner first"
            ))
        })?;
        let namespace =
            Namespace::new(name, version.unsigned_abs()).map_err(StoreError::backend)?;
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL search_path TO {}, public",
            namespace.schema()
        )))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let result = read(&mut tx, &namespace)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(result)
    }

    /// The version of the read model `name` that readers see, if it has one.
    ///
    /// # Errors
    ///
    /// The backend error.
    pub async fn live_version(&self, name: &str) -> Result<Option<u32>, cqrs_core::StoreError> {
        let live: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT live_version FROM {}.read_models WHERE name = $1",
            self.schema()
        )))
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .map_err(cqrs_core::StoreError::backend)?;
        Ok(live.map(i32::unsigned_abs))
    }
}

impl<P: PostgresProjection> Transactional<P> {
    fn namespace(&self) -> Result<&Namespace, ProjectionError> {
        self.namespace
            .as_ref()
            .map_err(|why| ProjectionError::new(why.clone()))
    }

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
            let namespace = self.namespace()?;
            let store_schema = self.store.schema();
            // The first version of a read model is live at once; this version's tables live
            // in its own schema, which the leader's plain table names resolve to.
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {store_schema}.read_models (name, live_version) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING"
            )))
            .bind(namespace.name())
            .bind(i32::try_from(namespace.version()).map_err(ProjectionError::from_error)?)
            .execute(&mut conn)
            .await
            .map_err(ProjectionError::from_error)?;
            for statement in [
                format!("CREATE SCHEMA IF NOT EXISTS {}", namespace.schema()),
                format!("SET search_path TO {}, public", namespace.schema()),
            ] {
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&mut conn)
                    .await
                    .map_err(ProjectionError::from_error)?;
            }
            if !matches!(
                role(&self.store, &mut conn, namespace).await?,
                Role::Retired
            ) {
                self.projection
                    .setup(&mut conn, namespace)
                    .await
                    .map_err(ProjectionError::from_boxed)?;
            }
            *leader = Some(conn);
        }
        Ok(leader)
    }

    /// Runs `work` on the leader's connection; a failure closes the connection, giving up the
    /// lead (the next attempt takes it again, or waits for whoever took it).
    async fn on_leader<T>(
        &self,
        work: impl AsyncFnOnce(&P, &mut PgConnection, &Namespace) -> Result<T, ProjectionError>,
    ) -> Result<T, ProjectionError> {
        let mut leader = self.lead().await?;
        let namespace = self.namespace()?;
        let conn = leader
            .as_mut()
            .ok_or_else(|| ProjectionError::new("no leader connection"))?;
        let result = work(&self.projection, conn, namespace).await;
        if result.is_err() {
            *leader = None;
        }
        result
    }
}

#[async_trait]
impl<P: PostgresProjection> DurableProjection for Transactional<P> {
    type Spec = P;

    fn spec(&self) -> &P {
        &self.projection
    }

    async fn checkpoint(&self) -> Result<Option<Position>, ProjectionError> {
        let key = self.key();
        let sql = self.store.sql().clone();
        self.on_leader(async move |_, conn, _| {
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
        let store = self.store.clone();
        self.on_leader(async move |projection, conn, namespace| {
            let mut tx = conn.begin().await.map_err(ProjectionError::from_error)?;
            let role = role(&store, &mut tx, namespace).await?;
            if matches!(role, Role::Retired) {
                // At once, not when the connection is next used: an open transaction would hold
                // the gap-safety horizon back for every reader of the log.
                return tx.rollback().await.map_err(ProjectionError::from_error);
            }
            for event in events {
                projection
                    .apply(&mut tx, namespace, event)
                    .await
                    .map_err(ProjectionError::from_boxed)?;
            }
            sqlx::query(AssertSqlSafe(sql.save_checkpoint.clone()))
                .bind(&key)
                .bind(to_i64(checkpoint.get()).map_err(ProjectionError::from_error)?)
                .execute(&mut *tx)
                .await
                .map_err(ProjectionError::from_error)?;
            if let Role::Building { live } = role {
                let old = Namespace::new(namespace.name(), live)?;
                // Caught up once it has read as far as the live version has (or as the log
                // goes, if the live version never recorded a checkpoint).
                let target = match load_checkpoint(&sql, &mut *tx, &old.key()).await? {
                    Some(position) => position,
                    None => {
                        let head: i64 = sqlx::query_scalar(AssertSqlSafe(sql.head.clone()))
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(ProjectionError::from_error)?;
                        Position::new(head.unsigned_abs())
                    }
                };
                if checkpoint >= target {
                    // Waits for the readers and the old version's batch that hold the row,
                    // then holds it until the old schema is gone.
                    sqlx::query(AssertSqlSafe(format!(
                        "UPDATE {}.read_models SET live_version = $2 WHERE name = $1",
                        store.schema()
                    )))
                    .bind(namespace.name())
                    .bind(i32::try_from(namespace.version()).map_err(ProjectionError::from_error)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(ProjectionError::from_error)?;
                    sqlx::query(AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {} CASCADE",
                        old.schema()
                    )))
                    .execute(&mut *tx)
                    .await
                    .map_err(ProjectionError::from_error)?;
                    sqlx::query(AssertSqlSafe(sql.delete_checkpoint.clone()))
                        .bind(old.key())
                        .execute(&mut *tx)
                        .await
                        .map_err(ProjectionError::from_error)?;
                    tracing::info!(
                        read_model = namespace.name(),
                        from = live,
                        to = namespace.version(),
                        position = checkpoint.get(),
                        "read model switched to its new version; the old one's schema is dropped"
                    );
                }
            }
            tx.commit().await.map_err(ProjectionError::from_error)
        })
        .await
    }

    async fn reset(&self) -> Result<(), ProjectionError> {
        let key = self.key();
        let sql = self.store.sql().clone();
        let store = self.store.clone();
        self.on_leader(async move |projection, conn, namespace| {
            let mut tx = conn.begin().await.map_err(ProjectionError::from_error)?;
            if matches!(role(&store, &mut tx, namespace).await?, Role::Retired) {
                return tx.rollback().await.map_err(ProjectionError::from_error);
            }
            for statement in [
                format!("DROP SCHEMA IF EXISTS {} CASCADE", namespace.schema()),
                format!("CREATE SCHEMA {}", namespace.schema()),
            ] {
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await
                    .map_err(ProjectionError::from_error)?;
            }
            projection
                .setup(&mut tx, namespace)
                .await
                .map_err(ProjectionError::from_boxed)?;
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
