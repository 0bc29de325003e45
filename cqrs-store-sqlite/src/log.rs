//! The message log: command records, and log queries over commands and events.

use async_trait::async_trait;
use cqrs_core::store::log_page;
use cqrs_core::store::to_i64;
use cqrs_core::{CommandRecord, LogEntry, LogQuery, MessageKind, MessageLog, StoreError};
use rusqlite::{Connection, params_from_iter};
use uuid::Uuid;

use crate::error::{backend, micros};
use crate::rows::{
    COMMAND_COLUMNS, EVENT_COLUMNS, EventRows, ROW_COMMAND_COLUMNS, ROW_SEQUENCE_BASE,
    command_record,
};

use crate::reads::placeholders;
use crate::store::SqliteEventStore;

#[async_trait]
impl MessageLog for SqliteEventStore {
    async fn find_command(&self, id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {ROW_COMMAND_COLUMNS} FROM cqrs_events e \
                     WHERE e.command_id = ?1 AND e.command_type IS NOT NULL \
                     UNION ALL SELECT {COMMAND_COLUMNS} FROM cqrs_commands WHERE command_id = ?1"
                ))
                .map_err(backend)?;
            let mut rows = select.query([id.as_bytes().as_slice()]).map_err(backend)?;
            match rows.next().map_err(backend)? {
                Some(row) => Ok(Some(command_record(row)?.1)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn query_log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
        let query = query.clone();
        self.read(move |conn| query_log(conn, &query)).await
    }
}

fn query_log(conn: &Connection, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut entries = Vec::new();
    // Commands and events are two SELECTs: one read transaction gives them one snapshot, so a
    // commit is seen whole or not at all (never a record without its events, or the reverse).
    // On the writer's connection (an in-memory store) the read is already inside its
    // transaction.
    let snapshot = if conn.is_autocommit() {
        Some(conn.unchecked_transaction().map_err(backend)?)
    } else {
        None
    };
    if query.kind != Some(MessageKind::Event) {
        let mut sql = format!("SELECT {COMMAND_COLUMNS} FROM cqrs_commands WHERE 1 = 1");
        let args = log_conditions(
            query,
            &mut sql,
            "command_type",
            "target",
            "correlation_id",
            "recorded_at",
            0,
            "sequence",
        )?;
        sql.push_str(&format!(" ORDER BY recorded_at, sequence LIMIT {limit}"));
        let mut select = conn.prepare(&sql).map_err(backend)?;
        let mut rows = select.query(params_from_iter(args)).map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            let (sequence, record) = command_record(row)?;
            entries.push(LogEntry::command(sequence, record));
        }
        // The records kept in their first event's row (schema version 5 on).
        let mut sql = format!(
            "SELECT {ROW_COMMAND_COLUMNS} FROM cqrs_events e WHERE e.command_type IS NOT NULL"
        );
        let args = log_conditions(
            query,
            &mut sql,
            "e.command_type",
            "e.stream",
            "e.command_correlation",
            "e.command_recorded_at",
            0,
            &format!("({ROW_SEQUENCE_BASE} + e.position)"),
        )?;
        sql.push_str(&format!(
            " ORDER BY e.command_recorded_at, e.position LIMIT {limit}"
        ));
        let mut select = conn.prepare(&sql).map_err(backend)?;
        let mut rows = select.query(params_from_iter(args)).map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            let (sequence, record) = command_record(row)?;
            entries.push(LogEntry::command(sequence, record));
        }
    }
    if query.kind != Some(MessageKind::Command) {
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM cqrs_events e WHERE 1 = 1");
        let args = log_conditions(
            query,
            &mut sql,
            "e.event_type",
            "e.stream",
            "e.correlation_id",
            "e.recorded_at",
            1,
            "e.position",
        )?;
        sql.push_str(&format!(
            " ORDER BY e.recorded_at, e.position LIMIT {limit}"
        ));
        let mut select = conn.prepare(&sql).map_err(backend)?;
        let mut rows = select.query(params_from_iter(args)).map_err(backend)?;
        let mut decoder = EventRows::default();
        while let Some(row) = rows.next().map_err(backend)? {
            entries.push(LogEntry::event(decoder.read(row)?));
        }
    }
    if let Some(snapshot) = snapshot {
        snapshot.finish().map_err(backend)?;
    }
    Ok(log_page(query, entries))
}

/// The most values of one criterion bound one parameter each; more go in one JSON array.
const MAX_LISTED: usize = 64;

/// The bytes of a UUID's 32 hex digits.
fn hex_bytes(hex: &str) -> Vec<u8> {
    uuid::Uuid::parse_str(hex).map_or_else(|_| Vec::new(), |u| u.as_bytes().to_vec())
}

/// Appends the query's criteria to `sql` (values OR-ed within one, criteria AND-ed) and
/// returns the arguments.
#[expect(
    clippy::too_many_arguments,
    reason = "the column names of one of two tables"
)]
fn log_conditions(
    query: &LogQuery,
    sql: &mut String,
    type_column: &str,
    stream_column: &str,
    correlation_column: &str,
    time_column: &str,
    kind: i64,
    sequence_column: &str,
) -> Result<Vec<rusqlite::types::Value>, StoreError> {
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    // A short list binds one parameter per value; a long one (an owner's every order, say)
    // binds one JSON array, as SQLite allows at most 32,766 parameters in a statement.
    let list = |sql: &mut String,
                column: &str,
                values: Vec<String>,
                blobs: bool,
                args: &mut Vec<rusqlite::types::Value>| {
        if values.is_empty() {
        } else if values.len() <= MAX_LISTED {
            sql.push_str(&format!(
                " AND {column} IN ({})",
                placeholders(args.len() + 1, values.len())
            ));
            args.extend(values.into_iter().map(|v| {
                if blobs {
                    rusqlite::types::Value::Blob(hex_bytes(&v))
                } else {
                    rusqlite::types::Value::Text(v)
                }
            }));
        } else {
            let value = if blobs { "unhex(value)" } else { "value" };
            args.push(rusqlite::types::Value::Text(
                serde_json::Value::from(values).to_string(),
            ));
            sql.push_str(&format!(
                " AND {column} IN (SELECT {value} FROM json_each(?{}))",
                args.len()
            ));
        }
    };
    list(sql, type_column, query.types.clone(), false, &mut args);
    list(
        sql,
        stream_column,
        query.streams.iter().map(ToString::to_string).collect(),
        false,
        &mut args,
    );
    list(
        sql,
        correlation_column,
        query
            .correlation_ids
            .iter()
            .map(|c| c.simple().to_string())
            .collect(),
        true,
        &mut args,
    );
    if let Some(since) = query.since {
        args.push(micros(since).into());
        sql.push_str(&format!(" AND {time_column} >= ?{}", args.len()));
    }
    if let Some(until) = query.until {
        args.push(micros(until).into());
        sql.push_str(&format!(" AND {time_column} < ?{}", args.len()));
    }
    if let Some(after) = query.after {
        let after_kind = match after.kind {
            MessageKind::Command => 0,
            MessageKind::Event => 1,
        };
        args.push(micros(after.recorded_at).into());
        args.push(after_kind.into());
        args.push(to_i64(after.sequence)?.into());
        let n = args.len();
        sql.push_str(&format!(
            " AND ({time_column}, {kind}, {sequence_column}) > (?{}, ?{}, ?{n})",
            n - 2,
            n - 1
        ));
    }
    Ok(args)
}
