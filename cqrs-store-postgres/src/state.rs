//! Snapshots and checkpoints.

use async_trait::async_trait;
use cqrs_core::{
    CheckpointStore, Json, Position, Snapshot, SnapshotStore, StoreError, StreamId, Version,
};
use sqlx::{AssertSqlSafe, Row};

use crate::error::backend;
use crate::sql::Sql;
use cqrs_core::store::{from_i64, to_i64};

use crate::store::PostgresEventStore;

#[async_trait]
impl SnapshotStore for PostgresEventStore {
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u16,
    ) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.load_snapshot.clone()))
            .bind(stream.as_str())
            .bind(i32::from(schema_version))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend)?;
        row.map(|row| {
            let version: i64 = row.try_get(0).map_err(backend)?;
            let state: &str = row.try_get(1).map_err(backend)?;
            Ok(Snapshot {
                stream: stream.clone(),
                version: Version::new(from_i64(version, "snapshot version", None)?),
                schema_version,
                state: Json::from_stored(state),
                taken_at: row.try_get(2).map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.save_snapshot.clone()))
            .bind(snapshot.stream.as_str())
            .bind(i32::from(snapshot.schema_version))
            .bind(to_i64(snapshot.version.get())?)
            .bind(snapshot.state.as_str())
            .bind(snapshot.taken_at)
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl CheckpointStore for PostgresEventStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        load_checkpoint(&self.inner.sql, &self.inner.pool, name).await
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.save_checkpoint.clone()))
            .bind(name)
            .bind(to_i64(position.get())?)
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.delete_checkpoint.clone()))
            .bind(name)
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// Reads checkpoint `name` through `executor`.
pub(crate) async fn load_checkpoint<'e, E>(
    sql: &Sql,
    executor: E,
    name: &str,
) -> Result<Option<Position>, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql.load_checkpoint.clone()))
        .bind(name)
        .fetch_optional(executor)
        .await
        .map_err(backend)?;
    found
        .map(|p| from_i64(p, "checkpoint", None).map(Position::new))
        .transpose()
}

impl PostgresEventStore {
    /// The store's statements (for the transactional projections).
    pub(crate) fn sql(&self) -> &Sql {
        &self.inner.sql
    }
}
