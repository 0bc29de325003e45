//! Process-manager state, saved with its outbox in one write.

use async_trait::async_trait;
use cqrs_core::store::{from_i64, limit_to_i64, to_i64};
use cqrs_core::{
    Json, Position, ProcessSave, ProcessState, ProcessStore, StoreError, StreamId, Version,
};
use rusqlite::{OptionalExtension, params};

use crate::error::{backend, from_micros, micros};
use crate::rows::{check_command, delete_scheduled, insert_command, insert_scheduled};
use crate::store::SqliteEventStore;

#[async_trait]
impl ProcessStore for SqliteEventStore {
    async fn load_process(&self, id: &StreamId) -> Result<Option<ProcessState>, StoreError> {
        let id = id.clone();
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT version, state, completed, last_position, updated_at FROM cqrs_processes WHERE id = ?1",
                )
                .map_err(backend)?;
            let row: Option<(i64, String, bool, i64, i64)> = select
                .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .optional()
                .map_err(backend)?;
            row.map(|(version, state, completed, last_position, updated_at)| {
                Ok(ProcessState {
                    id: id.clone(),
                    version: Version::new(from_i64(version, "process version", None)?),
                    state: Json::from_stored(state),
                    completed,
                    last_position: Position::new(from_i64(last_position, "process position", None)?),
                    updated_at: from_micros(updated_at, None)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn list_processes(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<ProcessState>, StoreError> {
        let after = after.map(|a| a.as_str().to_owned()).unwrap_or_default();
        let limit = limit_to_i64(limit);
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT id, version, state, completed, last_position, updated_at FROM cqrs_processes \
                     WHERE id > ?1 ORDER BY id LIMIT ?2 + 0",
                )
                .map_err(backend)?;
            let mut rows = select.query(params![after, limit]).map_err(backend)?;
            let mut all = Vec::new();
            while let Some(row) = rows.next().map_err(backend)? {
                let id: String = row.get(0).map_err(backend)?;
                let id = StreamId::new(&id).map_err(|e| StoreError::Invalid(e.to_string()))?;
                all.push(ProcessState {
                    id,
                    version: Version::new(from_i64(row.get(1).map_err(backend)?, "process version", None)?),
                    state: Json::from_stored(row.get::<_, String>(2).map_err(backend)?),
                    completed: row.get(3).map_err(backend)?,
                    last_position: Position::new(from_i64(row.get(4).map_err(backend)?, "process position", None)?),
                    updated_at: from_micros(row.get(5).map_err(backend)?, None)?,
                });
            }
            Ok(all)
        })
        .await
    }

    async fn save_process(&self, save: ProcessSave) -> Result<(), StoreError> {
        for command in &save.outbox {
            command.validate()?;
        }
        self.inner
            .writer
            .write(false, move |conn| {
                // Recording the handled command first reports a duplicate before a conflict;
                // any error rolls the whole save back.
                if let Some(handled) = &save.handled {
                    check_command(conn, Some(handled))?;
                    insert_command(conn, handled)?;
                }
                let mut select =
                    conn.prepare_cached("SELECT version FROM cqrs_processes WHERE id = ?1").map_err(backend)?;
                let found: Option<i64> = select.query_row([save.id.as_str()], |r| r.get(0)).optional().map_err(backend)?;
                save.check_stored_version(found)?;
                let mut upsert = conn
                    .prepare_cached(
                        "INSERT INTO cqrs_processes (id, version, state, completed, last_position, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (id) DO UPDATE SET version = excluded.version, state = excluded.state, \
                         completed = excluded.completed, last_position = excluded.last_position, \
                         updated_at = excluded.updated_at",
                    )
                    .map_err(backend)?;
                upsert
                    .execute(params![
                        save.id.as_str(),
                        to_i64(save.expected.next().get())?,
                        save.state.as_str(),
                        save.completed,
                        to_i64(save.last_position.get())?,
                        micros(save.saved_at),
                    ])
                    .map_err(backend)?;
                delete_scheduled(conn, &save.cancel)?;
                insert_scheduled(conn, &save.outbox)?;
                Ok(())
            })
            .await
    }
}
