//! Process-manager instances: one row each in the state stream, saved with their outbox, their
//! cancellations and the command they handled in one atomic batch.

use std::collections::HashSet;

use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cqrs_core::store::{check_headers, check_type_name, truncate_to_micros};
use cqrs_core::{
    ExpectedVersion, Json, Position, ProcessSave, ProcessState, ProcessStore, StoreError, StreamId,
    Version,
};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};

use crate::codec::{self, Raw};
use crate::conn::Refused;
use crate::schedule::{self, Slot};
use crate::store::NatsEventStore;

/// The header of a process instance's row; its payload is the state.
const PROCESS: &str = "Cqrs-Process";

#[derive(Serialize, Deserialize)]
struct Row {
    v: u64,
    done: bool,
    last: u64,
    at: DateTime<Utc>,
}

fn decode(raw: &Raw, id: StreamId) -> Result<ProcessState, StoreError> {
    let row: Row =
        serde_json::from_str(codec::header(raw, PROCESS)?).map_err(|e| codec::corrupt(raw, &e))?;
    Ok(ProcessState {
        id,
        version: Version::new(row.v),
        state: Json::from_stored(codec::payload_text(raw)?),
        completed: row.done,
        last_position: Position::new(row.last),
        updated_at: row.at,
    })
}

impl NatsEventStore {
    /// One try at `save` against the instance and the rows it touches as read now:
    /// `Ok(false)` when another writer changed one of them in between.
    async fn try_save(&self, save: &ProcessSave) -> Result<bool, StoreError> {
        let names = self.names();
        let subject = names.process(&save.id);
        // A redelivered command is told apart from a stale save first (the contract).
        if let Some(handled) = &save.handled
            && self.command_recorded_anywhere(handled.command_id).await?
        {
            return Err(StoreError::DuplicateCommand {
                command_id: handled.command_id,
            });
        }
        let stored = self.conn().last(&names.state, &subject).await?;
        let (sequence, version) = match &stored {
            Some(raw) => (raw.sequence, decode(raw, save.id.clone())?.version),
            None => (0, Version::ZERO),
        };
        if version != save.expected {
            return Err(StoreError::Conflict {
                stream: save.id.clone(),
                expected: ExpectedVersion::Exact(save.expected),
                actual: version,
            });
        }
        // The rows the save replaces, each expected as read: the outbox's commands that are
        // not scheduled yet, and the cancelled ones that are.
        let outbox = try_join_all(save.outbox.iter().map(|c| self.slot(c.command.id))).await?;
        let cancel = try_join_all(save.cancel.iter().map(|id| self.slot(*id))).await?;

        let mut messages: Vec<(String, HeaderMap, Bytes)> = Vec::new();
        let mut subjects: HashSet<String> = HashSet::new();
        let row = Row {
            v: version.get() + 1,
            done: save.completed,
            last: save.last_position.get(),
            at: truncate_to_micros(save.saved_at),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            PROCESS,
            serde_json::to_string(&row).map_err(StoreError::backend)?,
        );
        messages.push((
            subject.clone(),
            schedule::expecting(headers, sequence),
            Bytes::copy_from_slice(save.state.as_str().as_bytes()),
        ));
        subjects.insert(subject);
        for (command, slot) in save.outbox.iter().zip(&outbox) {
            let subject = names.scheduled(command.command.id);
            if matches!(slot, Slot::Live(_)) || !subjects.insert(subject.clone()) {
                // Scheduled already: left as it is.
                continue;
            }
            let (headers, payload) = schedule::new_row(command)?;
            messages.push((
                subject,
                schedule::expecting(headers, slot.sequence()),
                payload,
            ));
        }
        for (id, slot) in save.cancel.iter().zip(&cancel) {
            let subject = names.scheduled(*id);
            if !matches!(slot, Slot::Live(_)) || !subjects.insert(subject.clone()) {
                continue;
            }
            let (headers, payload) = schedule::tombstone();
            messages.push((
                subject,
                schedule::expecting(headers, slot.sequence()),
                payload,
            ));
        }
        if let Some(handled) = &save.handled {
            let (headers, payload) = codec::command_message(handled)?;
            // Recorded once, for ever.
            messages.push((
                names.handled(handled.command_id),
                schedule::expecting(headers, 0),
                payload,
            ));
        }
        if messages.len() > crate::conn::MAX_ATOMIC {
            return Err(StoreError::Invalid(format!(
                "a process save of {} messages (state, outbox, cancellations, record) is more \
                 than the {} of one atomic batch",
                messages.len(),
                crate::conn::MAX_ATOMIC
            )));
        }
        match self.conn().publish_batch(messages).await {
            Ok(_) => Ok(true),
            Err(Refused::WrongLast | Refused::Busy) => Ok(false),
            Err(Refused::Failed(err)) => Err(err),
        }
    }
}

#[async_trait]
impl ProcessStore for NatsEventStore {
    async fn load_process(&self, id: &StreamId) -> Result<Option<ProcessState>, StoreError> {
        let names = self.names();
        match self.conn().last(&names.state, &names.process(id)).await? {
            Some(raw) => decode(&raw, id.clone()).map(Some),
            None => Ok(None),
        }
    }

    async fn save_process(&self, save: ProcessSave) -> Result<(), StoreError> {
        for command in &save.outbox {
            command.validate()?;
        }
        if let Some(handled) = &save.handled {
            check_type_name(&handled.command_type)
                .and_then(|()| check_headers(&handled.headers))
                .map_err(|why| StoreError::Invalid(format!("handled command: {why}")))?;
        }
        let started = std::time::Instant::now();
        loop {
            if self.try_save(&save).await? {
                return Ok(());
            }
            // Another writer came in between: the next read tells a conflict or a duplicate,
            // or finds the rows it changed.
            if started.elapsed() > self.conn().timeout {
                return Err(StoreError::backend(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("process {} kept changing: the save was not stored", save.id),
                )));
            }
        }
    }

    /// Reads every instance's row (the state stream has no index by name) and keeps a page.
    async fn list_processes(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<ProcessState>, StoreError> {
        let names = self.names();
        let raws = self
            .conn()
            .read_table(&names.state, &names.processes())
            .await?;
        let mut processes = Vec::with_capacity(raws.len());
        for raw in raws {
            let id = names
                .process_of(&raw.subject)
                .ok_or_else(|| codec::corrupt(&raw, &"the subject names no instance"))?;
            if after.is_none_or(|a| id.as_str() > a.as_str()) {
                processes.push(decode(&raw, id)?);
            }
        }
        processes.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        processes.truncate(limit);
        Ok(processes)
    }
}
