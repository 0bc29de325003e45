//! Process-manager state, saved with its outbox and handled command in one transaction.

use async_trait::async_trait;
use cqrs_core::{
    ExpectedVersion, Json, Position, ProcessSave, ProcessState, ProcessStore, StoreError, StreamId,
    Version,
};
use sqlx::{AssertSqlSafe, Row};

use crate::error::{backend, unique_violation};
use cqrs_core::store::headers_json;
use cqrs_core::store::{from_i64, limit_to_i64, to_i64};

use crate::schedule::schedule;
use crate::store::PostgresEventStore;

#[async_trait]
impl ProcessStore for PostgresEventStore {
    async fn load_process(&self, id: &StreamId) -> Result<Option<ProcessState>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.load_process.clone()))
            .bind(id.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend)?;
        row.map(|row| {
            let version: i64 = row.try_get(0).map_err(backend)?;
            let state: &str = row.try_get(1).map_err(backend)?;
            let last: i64 = row.try_get(3).map_err(backend)?;
            Ok(ProcessState {
                id: id.clone(),
                version: Version::new(from_i64(version, "process version", None)?),
                state: Json::from_stored(state),
                completed: row.try_get(2).map_err(backend)?,
                last_position: Position::new(from_i64(last, "process position", None)?),
                updated_at: row.try_get(4).map_err(backend)?,
            })
        })
        .transpose()
    }

    async fn list_processes(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<ProcessState>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.list_processes.clone()))
            .bind(after.map_or("", StreamId::as_str))
            .bind(limit_to_i64(limit))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let id: &str = row.try_get(0).map_err(backend)?;
                let version: i64 = row.try_get(1).map_err(backend)?;
                let state: &str = row.try_get(2).map_err(backend)?;
                let last: i64 = row.try_get(4).map_err(backend)?;
                Ok(ProcessState {
                    id: StreamId::new(id).map_err(|e| StoreError::Invalid(e.to_string()))?,
                    version: Version::new(from_i64(version, "process version", None)?),
                    state: Json::from_stored(state),
                    completed: row.try_get(3).map_err(backend)?,
                    last_position: Position::new(from_i64(last, "process position", None)?),
                    updated_at: row.try_get(5).map_err(backend)?,
                })
            })
            .collect()
    }

    async fn save_process(&self, save: ProcessSave) -> Result<(), StoreError> {
        let sql = &self.inner.sql;
        let mut tx = self.inner.pool.begin().await.map_err(backend)?;
        // The handled command first: a duplicate is reported before a conflict.
        if let Some(handled) = &save.handled {
            let outcome = serde_json::to_string(&handled.outcome).map_err(backend)?;
            let inserted = sqlx::query(AssertSqlSafe(sql.insert_command.clone()))
                .bind(handled.command_id)
                .bind(&handled.command_type)
                .bind(handled.target.as_str())
                .bind(handled.payload.as_str())
                .bind(handled.correlation_id)
                .bind(handled.causation_id)
                .bind(handled.recorded_at)
                .bind(headers_json(&handled.headers))
                .bind(outcome)
                .execute(&mut *tx)
                .await;
            if let Err(err) = inserted {
                return Err(match unique_violation(&err).as_deref() {
                    Some("commands_command_id") => StoreError::DuplicateCommand {
                        command_id: handled.command_id,
                    },
                    _ => backend(err),
                });
            }
        }
        let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql.lock_process.clone()))
            .bind(save.id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        save.check_stored_version(found)?;
        let statement = if found.is_some() {
            &sql.update_process
        } else {
            &sql.insert_process
        };
        let written = sqlx::query(AssertSqlSafe(statement.clone()))
            .bind(save.id.as_str())
            .bind(save.state.as_str())
            .bind(save.completed)
            .bind(to_i64(save.last_position.get())?)
            .bind(save.saved_at)
            .execute(&mut *tx)
            .await;
        if let Err(err) = written {
            // Two first saves of one instance raced: the other one won.
            return Err(match unique_violation(&err) {
                Some(_) => StoreError::Conflict {
                    stream: save.id,
                    expected: ExpectedVersion::Exact(save.expected),
                    actual: Version::new(1),
                },
                None => backend(err),
            });
        }
        if !save.cancel.is_empty() {
            sqlx::query(AssertSqlSafe(sql.complete_scheduled.clone()))
                .bind(&save.cancel)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        schedule(sql, &mut *tx, &save.outbox).await?;
        tx.commit().await.map_err(backend)
    }
}
