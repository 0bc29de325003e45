//! Scheduled commands: one row per command in the state stream, claimed by compare-and-set.
//!
//! A row is the command's message on `{p}.state.s.{id}`: its payload the command's, its facts
//! (target, due time, when it is next available, attempts, parking) in one header. Every change
//! is a new message on the subject expecting the one it replaces, so two dispatchers never both
//! claim a command; a completed command leaves a tombstone that expires
//! ([`TOMBSTONE_TTL`]), so the stream does not keep one message per command ever scheduled.

use std::time::Duration;

use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cqrs_core::store::{lease_until, truncate_to_micros};
use cqrs_core::{
    CommandEnvelope, Headers, Json, ParkedCommand, ScheduleStore, ScheduledCommand, StoreError,
    StreamId,
};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{self, Raw};
use crate::conn::Refused;
use crate::store::NatsEventStore;

/// The header of a scheduled command's row.
const SCHEDULED: &str = "Cqrs-Scheduled";
/// The header of a completed (or cancelled) command's tombstone.
const DONE: &str = "Cqrs-Done";
/// How long a tombstone stays: long enough that no reader that saw the row misses that it is
/// gone; the subject is empty after.
pub(crate) const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    t: String,
    target: StreamId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    corr: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    caus: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    h: Headers,
    due: DateTime<Utc>,
    /// When it can be claimed: its due time, or the end of its claim's lease.
    avail: DateTime<Utc>,
    n: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parked: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A scheduled command as its row holds it.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    sequence: u64,
    id: Uuid,
    row: Row,
    payload: Json,
}

impl Live {
    fn scheduled(&self) -> ScheduledCommand {
        ScheduledCommand {
            command: CommandEnvelope {
                id: self.id,
                target: self.row.target.clone(),
                command_type: self.row.t.clone(),
                payload: self.payload.clone(),
                correlation_id: self.row.corr,
                causation_id: self.row.caus,
                headers: self.row.h.clone(),
            },
            due_at: self.row.due,
            attempts: self.row.n,
        }
    }

    fn parked(&self) -> Option<ParkedCommand> {
        Some(ParkedCommand {
            scheduled: self.scheduled(),
            parked_at: self.row.parked?,
            reason: self.row.reason.clone().unwrap_or_default(),
        })
    }
}

/// What a command's subject holds.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    /// Nothing: never scheduled, or its tombstone expired.
    Empty,
    /// A tombstone at this sequence: completed or cancelled.
    Done(u64),
    /// A scheduled command.
    Live(Live),
}

impl Slot {
    /// The sequence a write replacing this must expect.
    pub(crate) fn sequence(&self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::Done(sequence) => *sequence,
            Self::Live(live) => live.sequence,
        }
    }
}

fn decode(raw: Raw) -> Result<Slot, StoreError> {
    if raw.headers.get(DONE).is_some() {
        return Ok(Slot::Done(raw.sequence));
    }
    let id = codec::command_id_of(&raw)?;
    let row: Row = serde_json::from_str(codec::header(&raw, SCHEDULED)?)
        .map_err(|e| codec::corrupt(&raw, &e))?;
    let payload = Json::from_stored(codec::payload_text(&raw)?);
    Ok(Slot::Live(Live {
        sequence: raw.sequence,
        id,
        row,
        payload,
    }))
}

/// The message of a new row for `command`.
pub(crate) fn new_row(command: &ScheduledCommand) -> Result<(HeaderMap, Bytes), StoreError> {
    let due = truncate_to_micros(command.due_at);
    let c = &command.command;
    let row = Row {
        t: c.command_type.clone(),
        target: c.target.clone(),
        corr: c.correlation_id,
        caus: c.causation_id,
        h: c.headers.clone(),
        due,
        avail: due,
        n: 0,
        parked: None,
        reason: None,
    };
    row_message(&row, &c.payload)
}

fn row_message(row: &Row, payload: &Json) -> Result<(HeaderMap, Bytes), StoreError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        SCHEDULED,
        serde_json::to_string(row).map_err(StoreError::backend)?,
    );
    Ok((headers, Bytes::copy_from_slice(payload.as_str().as_bytes())))
}

/// The message of a tombstone.
pub(crate) fn tombstone() -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(DONE, "1");
    headers.insert(
        async_nats::header::NATS_MESSAGE_TTL,
        format!("{}s", TOMBSTONE_TTL.as_secs()),
    );
    (headers, Bytes::new())
}

pub(crate) fn expecting(mut headers: HeaderMap, sequence: u64) -> HeaderMap {
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        sequence.to_string(),
    );
    headers
}

impl NatsEventStore {
    /// What command `id`'s subject holds now, from the leader.
    pub(crate) async fn slot(&self, id: Uuid) -> Result<Slot, StoreError> {
        let names = self.names();
        match self.conn().last(&names.state, &names.scheduled(id)).await? {
            Some(raw) => decode(raw),
            None => Ok(Slot::Empty),
        }
    }

    /// Every scheduled command (tombstones left out), in no particular order.
    async fn live_rows(&self) -> Result<Vec<Live>, StoreError> {
        let names = self.names();
        let raws = self
            .conn()
            .read_table(&names.state, &names.schedule())
            .await?;
        let mut rows = Vec::with_capacity(raws.len());
        for raw in raws {
            if let Slot::Live(live) = decode(raw)? {
                rows.push(live);
            }
        }
        Ok(rows)
    }

    /// Replaces `live`'s row with `row`, if nobody else did first: whether it did.
    async fn replace(&self, live: &Live, row: &Row) -> Result<bool, StoreError> {
        let (headers, payload) = row_message(row, &live.payload)?;
        match self
            .conn()
            .publish(
                self.names().scheduled(live.id),
                expecting(headers, live.sequence),
                payload,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(Refused::WrongLast | Refused::Busy) => Ok(false),
            Err(Refused::Failed(err)) => Err(err),
        }
    }

    /// Changes command `id`'s row with `change` (which says no by returning `None`), again
    /// from a fresh read while another writer comes first: whether it changed it.
    async fn change(
        &self,
        id: Uuid,
        change: impl Fn(&Live) -> Option<Row> + Send + Sync,
    ) -> Result<bool, StoreError> {
        let started = std::time::Instant::now();
        loop {
            let Slot::Live(live) = self.slot(id).await? else {
                return Ok(false);
            };
            let Some(row) = change(&live) else {
                return Ok(false);
            };
            if self.replace(&live, &row).await? {
                return Ok(true);
            }
            if started.elapsed() > self.conn().timeout {
                return Err(busy(id));
            }
        }
    }

    /// Schedules one command unless its id is scheduled.
    async fn schedule_one(&self, command: &ScheduledCommand) -> Result<(), StoreError> {
        let id = command.command.id;
        let started = std::time::Instant::now();
        loop {
            let expected = match self.slot(id).await? {
                Slot::Live(_) => return Ok(()),
                slot => slot.sequence(),
            };
            let (headers, payload) = new_row(command)?;
            match self
                .conn()
                .publish(
                    self.names().scheduled(id),
                    expecting(headers, expected),
                    payload,
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(Refused::WrongLast | Refused::Busy)
                    if started.elapsed() < self.conn().timeout => {}
                Err(Refused::WrongLast | Refused::Busy) => return Err(busy(id)),
                Err(Refused::Failed(err)) => return Err(err),
            }
        }
    }
}

fn busy(id: Uuid) -> StoreError {
    StoreError::backend(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("scheduled command {id} kept changing"),
    ))
}

#[async_trait]
impl ScheduleStore for NatsEventStore {
    async fn schedule(&self, commands: Vec<ScheduledCommand>) -> Result<(), StoreError> {
        for command in &commands {
            command.validate()?;
        }
        try_join_all(commands.iter().map(|c| self.schedule_one(c))).await?;
        Ok(())
    }

    /// Reads every row (the state stream has no index by due time, ADR 0012), then claims the
    /// earliest due one by one by compare-and-set: a row another dispatcher claimed first is
    /// passed over, and the rows are read again while claims were lost and more are wanted.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: chrono::Duration,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let until = truncate_to_micros(lease_until(now, lease));
        let mut claimed: Vec<ScheduledCommand> = Vec::new();
        for _round in 0..10 {
            let mut due: Vec<Live> = self
                .live_rows()
                .await?
                .into_iter()
                .filter(|l| {
                    l.row.parked.is_none()
                        && l.row.avail <= now
                        && !claimed.iter().any(|c| c.command.id == l.id)
                })
                .collect();
            due.sort_by_key(|l| (l.row.due, l.id));
            let mut lost = false;
            for live in due {
                if claimed.len() >= limit {
                    break;
                }
                let row = Row {
                    avail: until,
                    n: live.row.n.saturating_add(1),
                    ..live.row.clone()
                };
                if self.replace(&live, &row).await? {
                    let mut command = live.scheduled();
                    command.attempts = row.n;
                    claimed.push(command);
                } else {
                    lost = true;
                }
            }
            if !lost || claimed.len() >= limit {
                break;
            }
        }
        claimed.sort_by_key(|c| (c.due_at, c.command.id));
        Ok(claimed)
    }

    async fn list_scheduled(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let mut rows: Vec<Live> = self
            .live_rows()
            .await?
            .into_iter()
            .filter(|l| l.row.parked.is_none() && after.is_none_or(|a| l.id > a))
            .collect();
        rows.sort_by_key(|l| l.id);
        Ok(rows.iter().take(limit).map(Live::scheduled).collect())
    }

    async fn complete_scheduled(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let names = self.names();
        // Sent one after another without waiting, then their acknowledgements awaited.
        let mut acks = Vec::with_capacity(ids.len());
        for id in ids {
            let (headers, payload) = tombstone();
            acks.push(
                self.conn()
                    .js
                    .publish_with_headers(names.scheduled(*id), headers, payload)
                    .await
                    .map_err(StoreError::backend)?,
            );
        }
        for ack in acks {
            ack.await.map_err(StoreError::backend)?;
        }
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .live_rows()
            .await?
            .iter()
            .filter(|l| l.row.parked.is_none())
            .map(|l| l.row.avail)
            .min())
    }

    fn keeps_dead_letters(&self) -> bool {
        true
    }

    async fn park(
        &self,
        id: Uuid,
        attempts: u32,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let at = truncate_to_micros(at);
        self.change(id, |live| {
            (live.row.parked.is_none() && live.row.n == attempts).then(|| Row {
                parked: Some(at),
                reason: Some(reason.to_owned()),
                ..live.row.clone()
            })
        })
        .await
    }

    async fn list_parked(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ParkedCommand>, StoreError> {
        let mut rows: Vec<Live> = self
            .live_rows()
            .await?
            .into_iter()
            .filter(|l| l.row.parked.is_some() && after.is_none_or(|a| l.id > a))
            .collect();
        rows.sort_by_key(|l| l.id);
        Ok(rows.iter().take(limit).filter_map(Live::parked).collect())
    }

    async fn count_parked(&self, up_to: usize) -> Result<usize, StoreError> {
        // Every live row is read either way; this spares decoding the parked ones.
        Ok(self
            .live_rows()
            .await?
            .iter()
            .filter(|l| l.row.parked.is_some())
            .take(up_to)
            .count())
    }

    async fn find_parked(&self, id: Uuid) -> Result<Option<ParkedCommand>, StoreError> {
        Ok(match self.slot(id).await? {
            Slot::Live(live) => live.parked(),
            _ => None,
        })
    }

    async fn retry_parked(&self, id: Uuid, due_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let due = truncate_to_micros(due_at);
        self.change(id, |live| {
            live.row.parked.is_some().then(|| Row {
                due,
                avail: due,
                n: 0,
                parked: None,
                reason: None,
                ..live.row.clone()
            })
        })
        .await
    }
}
