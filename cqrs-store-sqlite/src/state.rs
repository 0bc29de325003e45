//! Snapshots and checkpoints.

use async_trait::async_trait;
use cqrs_core::store::{from_i64, to_i64};
use cqrs_core::{
    CheckpointStore, Json, Position, Snapshot, SnapshotStore, StoreError, StreamId, Version,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{backend, from_micros, micros};
use crate::store::SqliteEventStore;

#[async_trait]
impl SnapshotStore for SqliteEventStore {
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u16,
    ) -> Result<Option<Snapshot>, StoreError> {
        let stream = stream.clone();
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(
                    "SELECT version, state, taken_at FROM cqrs_snapshots WHERE stream = ?1 AND schema_version = ?2",
                )
                .map_err(backend)?;
            let row: Option<(i64, String, i64)> = select
                .query_row(params![stream.as_str(), schema_version], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(backend)?;
            row.map(|(version, state, taken_at)| {
                Ok(Snapshot {
                    stream: stream.clone(),
                    version: Version::new(from_i64(version, "snapshot version", None)?),
                    schema_version,
                    state: Json::from_stored(state),
                    taken_at: from_micros(taken_at, None)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(false, move |conn| {
                let mut upsert = conn
                    .prepare_cached(
                        "INSERT INTO cqrs_snapshots (stream, version, schema_version, state, taken_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (stream, schema_version) DO UPDATE SET version = excluded.version, \
                         state = excluded.state, taken_at = excluded.taken_at \
                         WHERE excluded.version >= cqrs_snapshots.version",
                    )
                    .map_err(backend)?;
                upsert
                    .execute(params![
                        snapshot.stream.as_str(),
                        to_i64(snapshot.version.get())?,
                        snapshot.schema_version,
                        snapshot.state.as_str(),
                        micros(snapshot.taken_at),
                    ])
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl CheckpointStore for SqliteEventStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let name = name.to_owned();
        self.read(move |conn| load_checkpoint(conn, &name)).await
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.inner
            .writer
            .write(false, move |conn| save_checkpoint(conn, &name, position))
            .await
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.inner
            .writer
            .write(false, move |conn| {
                conn.execute("DELETE FROM cqrs_checkpoints WHERE name = ?1", [name])
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }
}

/// Reads checkpoint `name`.
pub(crate) fn load_checkpoint(
    conn: &Connection,
    name: &str,
) -> Result<Option<Position>, StoreError> {
    let mut select = conn
        .prepare_cached("SELECT position FROM cqrs_checkpoints WHERE name = ?1")
        .map_err(backend)?;
    let found: Option<i64> = select
        .query_row([name], |r| r.get(0))
        .optional()
        .map_err(backend)?;
    found
        .map(|p| from_i64(p, "checkpoint", None).map(Position::new))
        .transpose()
}

/// Writes checkpoint `name`.
pub(crate) fn save_checkpoint(
    conn: &Connection,
    name: &str,
    position: Position,
) -> Result<(), StoreError> {
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO cqrs_checkpoints (name, position) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .map_err(backend)?;
    upsert
        .execute(params![name, to_i64(position.get())?])
        .map_err(backend)?;
    Ok(())
}
