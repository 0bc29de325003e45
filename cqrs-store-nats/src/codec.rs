//! How events and command records are written as NATS messages, and read back.
//!
//! A message's payload is the event's (or command's) JSON as given, untouched; everything else
//! goes in one header as compact JSON, which never holds a line break (JSON escapes control
//! characters), so any header value and type name survives.

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cqrs_core::{
    CommandRecord, Headers, Json, Metadata, NewEvent, Outcome, Position, RecordedEvent, StoreError,
    StreamId, Tag, Version,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The header of an event's facts.
pub(crate) const EVENT: &str = "Cqrs-Event";
/// The header of a command record's facts.
pub(crate) const COMMAND: &str = "Cqrs-Command";

/// A message read from a stream.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

#[derive(Serialize)]
struct EventOut<'a> {
    v: u64,
    t: &'a str,
    s: u16,
    id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    corr: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caus: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Uuid>,
    at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Headers::is_empty")]
    h: &'a Headers,
    #[serde(skip_serializing_if = "<[Tag]>::is_empty")]
    tags: &'a [Tag],
}

#[derive(Deserialize)]
struct EventIn {
    v: u64,
    t: String,
    s: u16,
    id: Uuid,
    #[serde(default)]
    corr: Option<Uuid>,
    #[serde(default)]
    caus: Option<Uuid>,
    #[serde(default)]
    cmd: Option<Uuid>,
    at: DateTime<Utc>,
    #[serde(default)]
    h: Headers,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// The headers and payload of `event` at `version`.
pub(crate) fn event_message(
    event: &NewEvent,
    version: Version,
) -> Result<(HeaderMap, Bytes), StoreError> {
    let meta = &event.metadata;
    let out = EventOut {
        v: version.get(),
        t: &event.event_type,
        s: event.schema_version,
        id: meta.event_id,
        corr: meta.correlation_id,
        caus: meta.causation_id,
        cmd: meta.command_id,
        at: meta.recorded_at,
        h: &meta.headers,
        tags: &event.tags,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        EVENT,
        serde_json::to_string(&out).map_err(StoreError::backend)?,
    );
    Ok((
        headers,
        Bytes::copy_from_slice(event.payload.as_str().as_bytes()),
    ))
}

/// The version an event's message carries, without decoding the rest.
pub(crate) fn event_version(raw: &Raw) -> Result<Version, StoreError> {
    #[derive(Deserialize)]
    struct V {
        v: u64,
    }
    let header = header(raw, EVENT)?;
    let v: V = serde_json::from_str(header).map_err(|e| corrupt(raw, &e))?;
    Ok(Version::new(v.v))
}

/// The event `raw` holds, of `stream`.
pub(crate) fn decode_event(raw: Raw, stream: StreamId) -> Result<RecordedEvent, StoreError> {
    let meta: EventIn =
        serde_json::from_str(header(&raw, EVENT)?).map_err(|e| corrupt(&raw, &e))?;
    let payload = payload_text(&raw)?;
    Ok(RecordedEvent {
        stream,
        version: Version::new(meta.v),
        position: Position::new(raw.sequence),
        event_type: meta.t,
        schema_version: meta.s,
        payload: Json::from_stored(payload),
        metadata: Metadata {
            event_id: meta.id,
            correlation_id: meta.corr,
            causation_id: meta.caus,
            command_id: meta.cmd,
            recorded_at: meta.at,
            headers: meta.h,
        },
        tags: meta.tags,
    })
}

#[derive(Serialize)]
struct CommandOut<'a> {
    t: &'a str,
    target: &'a StreamId,
    #[serde(skip_serializing_if = "Option::is_none")]
    corr: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    caus: Option<Uuid>,
    at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Headers::is_empty")]
    h: &'a Headers,
    outcome: &'a Outcome,
}

#[derive(Deserialize)]
struct CommandIn {
    t: String,
    target: StreamId,
    #[serde(default)]
    corr: Option<Uuid>,
    #[serde(default)]
    caus: Option<Uuid>,
    at: DateTime<Utc>,
    #[serde(default)]
    h: Headers,
    outcome: Outcome,
}

/// The headers and payload of a command record.
pub(crate) fn command_message(record: &CommandRecord) -> Result<(HeaderMap, Bytes), StoreError> {
    let out = CommandOut {
        t: &record.command_type,
        target: &record.target,
        corr: record.correlation_id,
        caus: record.causation_id,
        at: record.recorded_at,
        h: &record.headers,
        outcome: &record.outcome,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        COMMAND,
        serde_json::to_string(&out).map_err(StoreError::backend)?,
    );
    Ok((
        headers,
        Bytes::copy_from_slice(record.payload.as_str().as_bytes()),
    ))
}

/// The command record `raw` holds, of command `id`.
pub(crate) fn decode_command(raw: &Raw, id: Uuid) -> Result<CommandRecord, StoreError> {
    let meta: CommandIn =
        serde_json::from_str(header(raw, COMMAND)?).map_err(|e| corrupt(raw, &e))?;
    Ok(CommandRecord {
        command_id: id,
        command_type: meta.t,
        target: meta.target,
        payload: Json::from_stored(payload_text(raw)?),
        correlation_id: meta.corr,
        causation_id: meta.caus,
        recorded_at: meta.at,
        headers: meta.h,
        outcome: meta.outcome,
    })
}

/// The command id at the end of a command record's subject.
pub(crate) fn command_id_of(raw: &Raw) -> Result<Uuid, StoreError> {
    raw.subject
        .rsplit('.')
        .next()
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or_else(|| corrupt(raw, &"the subject names no command id"))
}

pub(crate) fn header<'a>(raw: &'a Raw, name: &str) -> Result<&'a str, StoreError> {
    raw.headers
        .get(name)
        .map(|v| v.as_str())
        .ok_or_else(|| corrupt(raw, &format!("no {name} header")))
}

pub(crate) fn payload_text(raw: &Raw) -> Result<String, StoreError> {
    String::from_utf8(raw.payload.to_vec()).map_err(|e| corrupt(raw, &e))
}

pub(crate) fn corrupt(raw: &Raw, why: &dyn std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        position: Some(Position::new(raw.sequence)),
        what: format!("message {} on {}: {why}", raw.sequence, raw.subject),
    }
}
