//! Snapshots and checkpoints: one message per subject, in streams that keep only the last.

use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cqrs_core::store::truncate_to_micros;
use cqrs_core::{
    CheckpointStore, Json, Position, Snapshot, SnapshotStore, StoreError, StreamId, Version,
};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::conn::Refused;
use crate::store::NatsEventStore;

/// The header of a snapshot's facts; its payload is the state.
const SNAPSHOT: &str = "Cqrs-Snapshot";

#[derive(Serialize, Deserialize)]
struct SnapshotMeta {
    v: u64,
    at: DateTime<Utc>,
}

#[async_trait]
impl SnapshotStore for NatsEventStore {
    async fn load_snapshot(
        &self,
        stream: &StreamId,
        schema_version: u16,
    ) -> Result<Option<Snapshot>, StoreError> {
        let names = self.names();
        let subject = names.snapshot(stream, schema_version);
        let Some(raw) = self.conn().last(&names.snapshots, &subject).await? else {
            return Ok(None);
        };
        let meta: SnapshotMeta = serde_json::from_str(codec::header(&raw, SNAPSHOT)?)
            .map_err(|e| codec::corrupt(&raw, &e))?;
        Ok(Some(Snapshot {
            stream: stream.clone(),
            version: Version::new(meta.v),
            schema_version,
            state: Json::from_stored(codec::payload_text(&raw)?),
            taken_at: meta.at,
        }))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let names = self.names();
        let subject = names.snapshot(&snapshot.stream, snapshot.schema_version);
        let meta = SnapshotMeta {
            v: snapshot.version.get(),
            at: truncate_to_micros(snapshot.taken_at),
        };
        let meta = serde_json::to_string(&meta).map_err(StoreError::backend)?;
        let payload = Bytes::copy_from_slice(snapshot.state.as_str().as_bytes());
        let started = std::time::Instant::now();
        loop {
            let stored = self.conn().last(&names.snapshots, &subject).await?;
            let expected = match &stored {
                Some(raw) => {
                    let stored: SnapshotMeta = serde_json::from_str(codec::header(raw, SNAPSHOT)?)
                        .map_err(|e| codec::corrupt(raw, &e))?;
                    if stored.v > snapshot.version.get() {
                        return Ok(());
                    }
                    raw.sequence
                }
                None => 0,
            };
            let mut headers = HeaderMap::new();
            headers.insert(SNAPSHOT, meta.as_str());
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string(),
            );
            match self
                .conn()
                .publish(subject.clone(), headers, payload.clone())
                .await
            {
                Ok(_) => return Ok(()),
                // Another save came in between: compare with it.
                Err(Refused::WrongLast | Refused::Busy)
                    if started.elapsed() < self.conn().timeout => {}
                Err(Refused::WrongLast | Refused::Busy) => {
                    return Err(StoreError::backend(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the snapshot of {} kept changing", snapshot.stream),
                    )));
                }
                Err(Refused::Failed(err)) => return Err(err),
            }
        }
    }
}

#[async_trait]
impl CheckpointStore for NatsEventStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let names = self.names();
        let Some(raw) = self
            .conn()
            .last(&names.state, &names.checkpoint(name))
            .await?
        else {
            return Ok(None);
        };
        if raw.payload.is_empty() {
            // Deleted.
            return Ok(None);
        }
        let text = codec::payload_text(&raw)?;
        text.parse::<u64>()
            .map(|p| Some(Position::new(p)))
            .map_err(|e| codec::corrupt(&raw, &e))
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        self.put_checkpoint(name, Bytes::from(position.get().to_string()))
            .await
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        // An empty message replaces the last one: the stream keeps one per subject.
        self.put_checkpoint(name, Bytes::new()).await
    }
}

impl NatsEventStore {
    async fn put_checkpoint(&self, name: &str, payload: Bytes) -> Result<(), StoreError> {
        let names = self.names();
        match self
            .conn()
            .publish(names.checkpoint(name), HeaderMap::new(), payload)
            .await
        {
            Ok(_) => Ok(()),
            Err(Refused::Failed(err)) => Err(err),
            Err(other) => Err(StoreError::backend(std::io::Error::other(format!(
                "checkpoint {name:?} was refused: {other:?}"
            )))),
        }
    }
}
