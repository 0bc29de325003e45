//! Reading the store's rows back into the core's types.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cqrs_core::{
    CommandEnvelope, CommandRecord, Json, Metadata, Outcome, Position, RecordedEvent,
    ScheduledCommand, StoreError, StreamId, Tag, Version,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::backend;
use cqrs_core::store::{HeadersText, from_i64};

/// Turns event rows (selected with the event columns starting at column `first`) into
/// [`RecordedEvent`]s, sharing one `StreamId` per stream and one parse of a run of identical
/// headers (one user's commands, say).
pub(crate) struct EventRows {
    first: usize,
    streams: HashMap<String, StreamId>,
    headers: HeadersText,
}

impl EventRows {
    pub(crate) fn new(first: usize) -> Self {
        Self {
            first,
            streams: HashMap::new(),
            headers: HeadersText::default(),
        }
    }

    pub(crate) fn read(&mut self, row: &PgRow) -> Result<RecordedEvent, StoreError> {
        let c = self.first;
        let (position, version, event_type, schema_version, payload) = fold_columns(row, c)?;
        let at = Some(position);
        let name: &str = row.try_get(c + 5).map_err(backend)?;
        let stream = match self.streams.get(name) {
            Some(s) => s.clone(),
            None => {
                let s = StreamId::new(name).map_err(|e| StoreError::Corrupt {
                    position: at,
                    what: e.to_string(),
                })?;
                self.streams.insert(name.to_owned(), s.clone());
                s
            }
        };
        let headers: Option<&str> = row.try_get(c + 11).map_err(backend)?;
        let tags: Option<Vec<String>> = row.try_get(c + 12).map_err(backend)?;
        let tags = tags
            .unwrap_or_default()
            .iter()
            .map(|t| Tag::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt {
                position: at,
                what: format!("tags: {e}"),
            })?;
        Ok(RecordedEvent {
            stream,
            version,
            position,
            event_type: event_type.to_owned(),
            schema_version,
            payload: Json::from_stored(payload),
            metadata: Metadata {
                event_id: row.try_get(c + 6).map_err(backend)?,
                correlation_id: row.try_get(c + 7).map_err(backend)?,
                causation_id: row.try_get(c + 8).map_err(backend)?,
                command_id: row.try_get(c + 9).map_err(backend)?,
                recorded_at: row.try_get(c + 10).map_err(backend)?,
                headers: self.headers.parse(headers, at)?,
            },
            tags,
        })
    }
}

/// The event columns up to the payload, from column `c`: position, version, type, schema
/// version and payload, borrowed from the row.
///
/// Read without sqlx's check of each column's declared type against the Rust type: the
/// store's own SQL fixes these types (`bigint`, `bigint`, `text`, `integer`, `payload::text`),
/// and the check cost about 135 ns per row of a fold read (300 against 165 ns for the five
/// columns, measured: 13 µs of a 100-event load), most of it matching `text` against the
/// types a `&str` accepts. Decoding still refuses what does not fit (NULL, an integer wider
/// than 8 bytes, text that is not UTF-8) with an error, never a panic.
pub(crate) fn fold_columns(
    row: &PgRow,
    c: usize,
) -> Result<(Position, Version, &str, u16, &str), StoreError> {
    let position: i64 = row.try_get_unchecked(c).map_err(backend)?;
    let position = Position::new(from_i64(position, "position", None)?);
    let at = Some(position);
    let version: i64 = row.try_get_unchecked(c + 1).map_err(backend)?;
    let schema_version: i32 = row.try_get_unchecked(c + 3).map_err(backend)?;
    let schema_version = u16::try_from(schema_version).map_err(|_| StoreError::Corrupt {
        position: at,
        what: format!("schema version {schema_version}"),
    })?;
    Ok((
        position,
        Version::new(from_i64(version, "version", at)?),
        row.try_get_unchecked(c + 2).map_err(backend)?,
        schema_version,
        row.try_get_unchecked(c + 4).map_err(backend)?,
    ))
}

/// Reads a command record selected with the command columns, with its log sequence.
pub(crate) fn command_record(row: &PgRow) -> Result<(u64, CommandRecord), StoreError> {
    let sequence: i64 = row.try_get(0).map_err(backend)?;
    let sequence = from_i64(sequence, "sequence", None)?;
    let corrupt = |what: String| StoreError::Corrupt {
        position: None,
        what: format!("command record {sequence}: {what}"),
    };
    let target: &str = row.try_get(3).map_err(backend)?;
    let payload: &str = row.try_get(4).map_err(backend)?;
    let headers: Option<&str> = row.try_get(8).map_err(backend)?;
    let outcome: &str = row.try_get(9).map_err(backend)?;
    Ok((
        sequence,
        CommandRecord {
            command_id: row.try_get(1).map_err(backend)?,
            command_type: row.try_get(2).map_err(backend)?,
            target: StreamId::new(target).map_err(|e| corrupt(e.to_string()))?,
            payload: Json::from_stored(payload),
            correlation_id: row.try_get(5).map_err(backend)?,
            causation_id: row.try_get(6).map_err(backend)?,
            recorded_at: row.try_get(7).map_err(backend)?,
            headers: HeadersText::default().parse(headers, None)?,
            outcome: serde_json::from_str::<Outcome>(outcome)
                .map_err(|e| corrupt(e.to_string()))?,
        },
    ))
}

/// Reads a scheduled command selected with the scheduled columns.
pub(crate) fn scheduled(row: &PgRow) -> Result<ScheduledCommand, StoreError> {
    let target: &str = row.try_get(1).map_err(backend)?;
    let payload: &str = row.try_get(3).map_err(backend)?;
    let headers: Option<&str> = row.try_get(6).map_err(backend)?;
    let attempts: i32 = row.try_get(8).map_err(backend)?;
    let due_at: DateTime<Utc> = row.try_get(7).map_err(backend)?;
    let id: Uuid = row.try_get(0).map_err(backend)?;
    Ok(ScheduledCommand {
        command: CommandEnvelope {
            id,
            target: StreamId::new(target).map_err(|e| StoreError::Corrupt {
                position: None,
                what: format!("scheduled command target: {e}"),
            })?,
            command_type: row.try_get(2).map_err(backend)?,
            payload: Json::from_stored(payload),
            correlation_id: row.try_get(4).map_err(backend)?,
            causation_id: row.try_get(5).map_err(backend)?,
            headers: HeadersText::default().parse(headers, None)?,
        },
        due_at,
        attempts: u32::try_from(attempts).unwrap_or(0),
    })
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;

    /// `fold_columns` skips sqlx's type checks: what it still refuses, it refuses as an error.
    #[tokio::test]
    async fn a_fold_row_that_does_not_decode_is_an_error_not_a_panic() {
        let Some(store) = crate::testing::fresh_store().await else {
            return;
        };
        let row = |sql: &'static str| sqlx::query(sql).fetch_one(store.pool());
        let good =
            row("SELECT 7::bigint, 3::bigint, 'account.opened'::text, 2::integer, '{}'::text")
                .await
                .unwrap();
        let (position, version, event_type, schema_version, payload) =
            fold_columns(&good, 0).unwrap();
        assert_eq!(
            (position, version, event_type, schema_version, payload),
            (Position::new(7), Version::new(3), "account.opened", 2, "{}")
        );
        let bad = [
            // A NULL payload.
            "SELECT 7::bigint, 3::bigint, 'account.opened'::text, 2::integer, NULL::text",
            // A version of 16 bytes.
            "SELECT 7::bigint, gen_random_uuid(), 'account.opened'::text, 2::integer, '{}'::text",
            // A type name that is not UTF-8.
            "SELECT 7::bigint, 3::bigint, '\\xff'::bytea, 2::integer, '{}'::text",
        ];
        for sql in bad {
            let row = row(sql).await.unwrap();
            assert!(
                matches!(fold_columns(&row, 0), Err(StoreError::Backend(_))),
                "{sql}"
            );
        }
    }
}
