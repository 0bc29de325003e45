//! Reading the store's rows back into the core's types, and writing them.

use std::collections::HashMap;
use std::ops::ControlFlow;

use cqrs_core::{
    Appended, CommandRecord, Commit, EventView, ExpectedVersion, Json, Metadata, NewEvent, Outcome,
    Position, RecordedEvent, ScheduledCommand, StoreError, StreamId, Version,
};
use rusqlite::{Connection, Row, params};

use crate::error::{backend, from_micros, is_unique_violation, micros, opt_uuid, uuid};
use crate::writer::WriteError;
use cqrs_core::store::{HeadersText, from_i64, headers_json, to_i64};

/// The event columns, in the order [`EventRows::read`] expects, for the events table as `e`.
pub(crate) const EVENT_COLUMNS: &str = "e.position, e.stream, e.version, e.event_type, e.schema_version, e.payload, \
     e.event_id, e.correlation_id, e.causation_id, e.command_id, e.recorded_at, e.headers, e.tags";

/// Turns event rows into [`RecordedEvent`]s, sharing one `StreamId` per stream and parsing
/// a run of identical headers (one user's commands, say) once.
#[derive(Default)]
pub(crate) struct EventRows {
    streams: HashMap<Box<str>, StreamId>,
    headers: HeadersText,
}

impl EventRows {
    /// Reads one row selected with [`EVENT_COLUMNS`].
    pub(crate) fn read(&mut self, row: &Row<'_>) -> Result<RecordedEvent, StoreError> {
        let position = Position::new(from_i64(row.get(0).map_err(backend)?, "position", None)?);
        let at = Some(position);
        let corrupt = |what: String| StoreError::Corrupt { position: at, what };
        let name = row
            .get_ref(1)
            .map_err(backend)?
            .as_str()
            .map_err(|e| corrupt(format!("stream: {e}")))?;
        let stream = match self.streams.get(name) {
            Some(s) => s.clone(),
            None => {
                let s = StreamId::new(name).map_err(|e| corrupt(e.to_string()))?;
                self.streams.insert(name.into(), s.clone());
                s
            }
        };
        let version = Version::new(from_i64(row.get(2).map_err(backend)?, "version", at)?);
        // Read the texts in place and copy the payload once, straight into the shared payload.
        let (event_type, schema_version, payload) = typed_payload(row, 3, at)?;
        let event_type = event_type.to_owned();
        let payload = Json::from_stored(payload);
        let event_id = row
            .get_ref(6)
            .map_err(backend)?
            .as_blob()
            .map_err(|e| corrupt(format!("event id: {e}")))?;
        let metadata = Metadata {
            event_id: uuid(event_id, at)?,
            correlation_id: blob_uuid(row, 7, at)?,
            causation_id: blob_uuid(row, 8, at)?,
            command_id: blob_uuid(row, 9, at)?,
            recorded_at: from_micros(row.get(10).map_err(backend)?, at)?,
            headers: self.headers.parse(text_or_null(row, 11, at)?, at)?,
        };
        let tags = match text_or_null(row, 12, at)? {
            None => Vec::new(),
            Some(text) => serde_json::from_str(text).map_err(|e| corrupt(format!("tags: {e}")))?,
        };
        Ok(RecordedEvent {
            stream,
            version,
            position,
            event_type,
            schema_version,
            payload,
            metadata,
            tags,
        })
    }
}

/// Hands `stream`'s events from version `from` on to `visit` as they are read, borrowed
/// from the rows (type, schema version and payload; no metadata), until it breaks. Returns the
/// version of the last event handed over.
pub(crate) fn visit_stream(
    conn: &Connection,
    stream: &StreamId,
    from: Version,
    visit: &mut dyn FnMut(EventView<'_>) -> ControlFlow<()>,
) -> Result<Option<Version>, StoreError> {
    let mut select = conn
        .prepare_cached(
            "SELECT position, version, event_type, schema_version, payload FROM cqrs_events \
             WHERE stream = ?1 AND version >= ?2 ORDER BY version",
        )
        .map_err(backend)?;
    let mut rows = select
        .query(params![stream.as_str(), to_i64(from.get())?])
        .map_err(backend)?;
    let mut last = None;
    while let Some(row) = rows.next().map_err(backend)? {
        let position = Position::new(from_i64(row.get(0).map_err(backend)?, "position", None)?);
        let at = Some(position);
        let version = Version::new(from_i64(row.get(1).map_err(backend)?, "version", at)?);
        let (event_type, schema_version, payload) = typed_payload(row, 2, at)?;
        last = Some(version);
        let event = EventView::new(
            stream,
            version,
            position,
            event_type,
            schema_version,
            payload,
        );
        if visit(event).is_break() {
            break;
        }
    }
    Ok(last)
}

/// The type name, schema version and payload in the three columns from `first`, borrowed.
fn typed_payload<'r>(
    row: &'r Row<'_>,
    first: usize,
    at: Option<Position>,
) -> Result<(&'r str, u16, &'r str), StoreError> {
    let corrupt = |what: String| StoreError::Corrupt { position: at, what };
    let event_type = row
        .get_ref(first)
        .map_err(backend)?
        .as_str()
        .map_err(|e| corrupt(format!("event type: {e}")))?;
    let schema_version: i64 = row.get(first + 1).map_err(backend)?;
    let schema_version = u16::try_from(schema_version)
        .map_err(|_| corrupt(format!("schema version {schema_version}")))?;
    let payload = row
        .get_ref(first + 2)
        .map_err(backend)?
        .as_str()
        .map_err(|e| corrupt(format!("payload is not text: {e}")))?;
    Ok((event_type, schema_version, payload))
}

/// An optional text column, borrowed from the row.
fn text_or_null<'r>(
    row: &'r Row<'_>,
    column: usize,
    at: Option<Position>,
) -> Result<Option<&'r str>, StoreError> {
    row.get_ref(column)
        .map_err(backend)?
        .as_str_or_null()
        .map_err(|e| StoreError::Corrupt {
            position: at,
            what: format!("column {column}: {e}"),
        })
}

/// An optional UUID column, read without allocating.
fn blob_uuid(
    row: &Row<'_>,
    column: usize,
    at: Option<Position>,
) -> Result<Option<uuid::Uuid>, StoreError> {
    match row.get_ref(column).map_err(backend)?.as_blob_or_null() {
        Ok(Some(bytes)) => uuid(bytes, at).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(StoreError::Corrupt {
            position: at,
            what: format!("column {column}: {e}"),
        }),
    }
}

/// The command-record columns, in the order [`command_record`] expects.
pub(crate) const COMMAND_COLUMNS: &str = "sequence, command_id, command_type, target, payload, correlation_id, causation_id, recorded_at, headers, outcome";

/// The columns of a record kept in its first event's row (the events table as `e`), in the
/// order [`command_record`] expects.
///
/// Its log sequence is 2^62 plus the event's position: the records of `cqrs_commands` are
/// numbered from 1 by its rowid, so the two never meet, and a log cursor stays unique.
pub(crate) const ROW_COMMAND_COLUMNS: &str = "4611686018427387904 + e.position, e.command_id, e.command_type, e.stream, \
     e.command_payload, e.command_correlation, e.command_causation, e.command_recorded_at, \
     coalesce(e.command_headers, e.headers), e.command_outcome";

/// What [`ROW_COMMAND_COLUMNS`] adds to a row's position to number its record.
pub(crate) const ROW_SEQUENCE_BASE: i64 = 1 << 62;
const _: () = assert!(ROW_SEQUENCE_BASE == 4_611_686_018_427_387_904);

/// Reads a command record selected with [`COMMAND_COLUMNS`], with its log sequence.
pub(crate) fn command_record(row: &Row<'_>) -> Result<(u64, CommandRecord), StoreError> {
    let sequence = from_i64(row.get(0).map_err(backend)?, "sequence", None)?;
    // A record kept in an event's row is named by that event's position.
    let in_row = sequence.checked_sub(ROW_SEQUENCE_BASE.unsigned_abs());
    let at = in_row.map(Position::new);
    let corrupt = |what: String| StoreError::Corrupt {
        position: at,
        what: match in_row {
            Some(_) => format!("the command record in this event's row: {what}"),
            None => format!("command record {sequence}: {what}"),
        },
    };
    let id: Vec<u8> = row.get(1).map_err(backend)?;
    let target: String = row.get(3).map_err(backend)?;
    let payload: String = row.get(4).map_err(backend)?;
    let outcome: String = row.get(9).map_err(backend)?;
    Ok((
        sequence,
        CommandRecord {
            command_id: uuid(&id, at)?,
            command_type: row.get(2).map_err(backend)?,
            target: StreamId::new(&target).map_err(|e| corrupt(e.to_string()))?,
            payload: Json::from_stored(payload),
            correlation_id: opt_uuid(row.get(5).map_err(backend)?, at)?,
            causation_id: opt_uuid(row.get(6).map_err(backend)?, at)?,
            recorded_at: from_micros(row.get(7).map_err(backend)?, at)?,
            headers: HeadersText::default().parse(text_or_null(row, 8, at)?, at)?,
            outcome: serde_json::from_str::<Outcome>(&outcome)
                .map_err(|e| corrupt(e.to_string()))?,
        },
    ))
}

/// Inserts a command record; a known command id is [`StoreError::DuplicateCommand`].
pub(crate) fn insert_command(conn: &Connection, record: &CommandRecord) -> Result<(), StoreError> {
    let outcome = serde_json::to_string(&record.outcome).map_err(backend)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO cqrs_commands (command_id, command_type, target, payload, correlation_id, causation_id, \
             recorded_at, headers, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(backend)?;
    insert
        .execute(params![
            record.command_id.as_bytes().as_slice(),
            record.command_type,
            record.target.as_str(),
            record.payload.as_str(),
            record
                .correlation_id
                .as_ref()
                .map(|u| u.as_bytes().to_vec()),
            record.causation_id.as_ref().map(|u| u.as_bytes().to_vec()),
            micros(record.recorded_at),
            headers_json(&record.headers),
            outcome,
        ])
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::DuplicateCommand {
                    command_id: record.command_id,
                }
            } else {
                backend(e)
            }
        })?;
    Ok(())
}

/// Writes a commit inside the writer's transaction, checking before writing: the command id
/// is unknown (a duplicate is reported before a conflict), the expected version holds. `known`
/// is the stream's version when the caller has just read it in the same transaction.
///
/// Runs without a savepoint: a failed check writes nothing ([`WriteError::Refused`]); a write
/// that fails after the checks is [`WriteError::Broken`].
pub(crate) fn write_commit(
    conn: &Connection,
    commit: Commit,
    known: Option<Version>,
) -> Result<Appended, WriteError> {
    check_command(conn, commit.command.as_ref())?;
    let actual = check_stream(
        conn,
        &commit.stream,
        commit.expected,
        commit.events.len(),
        known,
    )?;
    // From here on a failure leaves writes behind: the transaction must go.
    write_events(
        conn,
        &commit.stream,
        &commit.events,
        actual,
        commit.command.as_ref(),
    )
    .map_err(WriteError::Broken)
}

/// Refuses a command id recorded before.
pub(crate) fn check_command(
    conn: &Connection,
    command: Option<&CommandRecord>,
) -> Result<(), StoreError> {
    match command {
        Some(command) if command_exists(conn, &command.command_id)? => {
            Err(StoreError::DuplicateCommand {
                command_id: command.command_id,
            })
        }
        _ => Ok(()),
    }
}

/// The version of `stream` (`known` if the caller read it in this transaction), if it is at
/// `expected` and has room for `count` more events.
pub(crate) fn check_stream(
    conn: &Connection,
    stream: &StreamId,
    expected: ExpectedVersion,
    count: usize,
    known: Option<Version>,
) -> Result<Version, StoreError> {
    let actual = match known {
        Some(version) => version,
        None => {
            let mut current = conn
                .prepare_cached("SELECT max(version) FROM cqrs_events WHERE stream = ?1")
                .map_err(backend)?;
            let found: Option<i64> = current
                .query_row([stream.as_str()], |r| r.get(0))
                .map_err(backend)?;
            Version::new(found.map_or(Ok(0), |v| from_i64(v, "stream version", None))?)
        }
    };
    if !expected.matches(actual) {
        return Err(StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        });
    }
    let last = actual
        .get()
        .checked_add(count as u64)
        .ok_or_else(|| StoreError::Invalid("the stream is full".into()))?;
    to_i64(last)?;
    Ok(actual)
}

/// Writes `events` after version `actual` of `stream`, with their tags in the tag index, and
/// the command record if there is one.
pub(crate) fn write_events(
    conn: &Connection,
    stream: &StreamId,
    events: &[NewEvent],
    actual: Version,
    command: Option<&CommandRecord>,
) -> Result<Appended, StoreError> {
    // The record rides in the first event's row when that row can carry it: the event's
    // command id is the record's (the record is found by it) and its stream is the target.
    let mut in_row = command.filter(|c| {
        c.target == *stream
            && events
                .first()
                .is_some_and(|e| e.metadata.command_id == Some(c.command_id))
    });
    if let Some(command) = command
        && in_row.is_none()
    {
        insert_command(conn, command)?;
    }
    let mut version = actual;
    let mut position = None;
    if !events.is_empty() {
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO cqrs_events (stream, category, version, event_type, schema_version, payload, event_id, \
                 correlation_id, causation_id, command_id, recorded_at, headers, tags, \
                 command_type, command_payload, command_correlation, command_causation, \
                 command_recorded_at, command_headers, command_outcome) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            )
            .map_err(backend)?;
        for event in events {
            version = version.next();
            let meta = &event.metadata;
            let tags = if event.tags.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&event.tags).map_err(backend)?)
            };
            let record = in_row.take().map(RowRecord::of).transpose()?;
            let record = record.as_ref();
            insert
                .execute(params![
                    stream.as_str(),
                    stream.category(),
                    to_i64(version.get())?,
                    event.event_type,
                    event.schema_version,
                    event.payload.as_str(),
                    meta.event_id.as_bytes().as_slice(),
                    meta.correlation_id
                        .as_ref()
                        .map(|u| u.as_bytes().as_slice()),
                    meta.causation_id.as_ref().map(|u| u.as_bytes().as_slice()),
                    meta.command_id.as_ref().map(|u| u.as_bytes().as_slice()),
                    micros(meta.recorded_at),
                    headers_json(&meta.headers),
                    tags,
                    record.map(|r| r.command.command_type.as_str()),
                    record.map(|r| r.command.payload.as_str()),
                    record.and_then(|r| r
                        .command
                        .correlation_id
                        .as_ref()
                        .map(|u| u.as_bytes().as_slice())),
                    record.and_then(|r| r
                        .command
                        .causation_id
                        .as_ref()
                        .map(|u| u.as_bytes().as_slice())),
                    record.map(|r| micros(r.command.recorded_at)),
                    record.and_then(|r| r.headers(&meta.headers)),
                    record.map(|r| r.outcome.as_str()),
                ])
                .map_err(backend)?;
            if !event.tags.is_empty() {
                let at = conn.last_insert_rowid();
                let mut index = conn
                    .prepare_cached("INSERT INTO cqrs_event_tags (tag, position) VALUES (?1, ?2)")
                    .map_err(backend)?;
                for tag in &event.tags {
                    index.execute(params![tag.as_str(), at]).map_err(backend)?;
                }
            }
        }
        position = Some(Position::new(from_i64(
            conn.last_insert_rowid(),
            "position",
            None,
        )?));
    }
    Ok(Appended { version, position })
}

/// A command record as the columns of the event row that carries it.
struct RowRecord<'a> {
    command: &'a CommandRecord,
    outcome: String,
}

impl<'a> RowRecord<'a> {
    fn of(command: &'a CommandRecord) -> Result<Self, StoreError> {
        Ok(Self {
            command,
            outcome: serde_json::to_string(&command.outcome).map_err(backend)?,
        })
    }

    /// `command_headers`: NULL when they are the event's (the repository's commands), so the
    /// row does not carry them twice; `{}` for none beside an event that has some.
    fn headers(&self, event: &cqrs_core::Headers) -> Option<String> {
        if self.command.headers == *event {
            None
        } else {
            Some(headers_json(&self.command.headers).unwrap_or_else(|| "{}".to_owned()))
        }
    }
}

/// Whether command `id` is recorded.
pub(crate) fn command_exists(conn: &Connection, id: &uuid::Uuid) -> Result<bool, StoreError> {
    let mut find = conn
        .prepare_cached(
            "SELECT 1 FROM cqrs_events WHERE command_id = ?1 AND command_type IS NOT NULL \
             UNION ALL SELECT 1 FROM cqrs_commands WHERE command_id = ?1",
        )
        .map_err(backend)?;
    find.exists([id.as_bytes().as_slice()]).map_err(backend)
}

/// The scheduled-command columns, in the order [`scheduled`] expects.
pub(crate) const SCHEDULED_COLUMNS: &str =
    "id, target, command_type, payload, correlation_id, causation_id, headers, due_at, attempts";

/// Reads a scheduled command selected with [`SCHEDULED_COLUMNS`].
pub(crate) fn scheduled(row: &Row<'_>) -> Result<ScheduledCommand, StoreError> {
    let id: Vec<u8> = row.get(0).map_err(backend)?;
    let target: String = row.get(1).map_err(backend)?;
    let payload: String = row.get(3).map_err(backend)?;
    Ok(ScheduledCommand {
        command: cqrs_core::CommandEnvelope {
            id: uuid(&id, None)?,
            target: StreamId::new(&target).map_err(|e| StoreError::Corrupt {
                position: None,
                what: format!("scheduled command target: {e}"),
            })?,
            command_type: row.get(2).map_err(backend)?,
            payload: Json::from_stored(payload),
            correlation_id: opt_uuid(row.get(4).map_err(backend)?, None)?,
            causation_id: opt_uuid(row.get(5).map_err(backend)?, None)?,
            headers: HeadersText::default().parse(text_or_null(row, 6, None)?, None)?,
        },
        due_at: from_micros(row.get(7).map_err(backend)?, None)?,
        attempts: u32::try_from(row.get::<_, i64>(8).map_err(backend)?).unwrap_or(u32::MAX),
    })
}

/// Forgets scheduled commands (completed or cancelled); unknown ids are ignored.
pub(crate) fn delete_scheduled(conn: &Connection, ids: &[uuid::Uuid]) -> Result<(), StoreError> {
    let mut delete = conn
        .prepare_cached("DELETE FROM cqrs_scheduled WHERE id = ?1")
        .map_err(backend)?;
    for id in ids {
        delete
            .execute([id.as_bytes().as_slice()])
            .map_err(backend)?;
    }
    Ok(())
}

/// Schedules commands; ids already scheduled are left as they are.
pub(crate) fn insert_scheduled(
    conn: &Connection,
    commands: &[ScheduledCommand],
) -> Result<(), StoreError> {
    let mut insert = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO cqrs_scheduled (id, target, command_type, payload, correlation_id, causation_id, \
             headers, due_at, available_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        )
        .map_err(backend)?;
    for s in commands {
        s.validate()?;
        let c = &s.command;
        insert
            .execute(params![
                c.id.as_bytes().as_slice(),
                c.target.as_str(),
                c.command_type,
                c.payload.as_str(),
                c.correlation_id.as_ref().map(|u| u.as_bytes().to_vec()),
                c.causation_id.as_ref().map(|u| u.as_bytes().to_vec()),
                headers_json(&c.headers),
                micros(s.due_at),
            ])
            .map_err(backend)?;
    }
    Ok(())
}
