//! Reads by query and conditional commits: the condition checked and the events written in
//! one job of the single writer, so no other write can come between.

use async_trait::async_trait;
use cqrs_core::store::{limit_to_i64, to_i64};
use cqrs_core::{
    Appended, ConditionalCommit, DcbStore, EventQuery, Position, RecordedEvent, StoreError,
};
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use crate::error::backend;
use crate::rows::{EVENT_COLUMNS, EventRows, check_command, check_stream, write_events};
use crate::store::SqliteEventStore;
use crate::writer::WriteError;

#[async_trait]
impl DcbStore for SqliteEventStore {
    async fn read_query(
        &self,
        query: &EventQuery,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        query.validate()?;
        let query = query.clone();
        let (from, limit) = (to_i64(from.get())?, limit_to_i64(limit));
        self.read(move |conn| {
            let mut args = Vec::new();
            let positions = matching_positions(&query, from, limit, &mut args);
            args.push(Value::Integer(limit));
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM cqrs_events e WHERE e.position IN ({positions}) \
                     ORDER BY e.position LIMIT ? + 0"
                ))
                .map_err(backend)?;
            let mut rows = select.query(params_from_iter(args)).map_err(backend)?;
            let mut decoder = EventRows::default();
            let mut events = Vec::new();
            while let Some(row) = rows.next().map_err(backend)? {
                events.push(decoder.read(row)?);
            }
            Ok(events)
        })
        .await
    }

    /// One job of the writer: the command id, the condition and every stream's version are
    /// checked, and the events written, with no other write between.
    async fn commit_if(&self, commit: ConditionalCommit) -> Result<Vec<Appended>, StoreError> {
        commit.validate()?;
        self.inner
            .writer
            .write_checked(true, move |conn| {
                check_command(conn, commit.command.as_ref())?;
                if let Some(condition) = &commit.condition {
                    let after = condition.after.map_or(Ok(0), |p| to_i64(p.get()))?;
                    if let Some(found) =
                        first_match(conn, &condition.query, after.saturating_add(1))?
                    {
                        return Err(WriteError::Refused(StoreError::ConditionFailed {
                            after: condition.after,
                            found,
                        }));
                    }
                }
                let mut versions = Vec::with_capacity(commit.appends.len());
                for append in &commit.appends {
                    let count = append.events.len();
                    versions.push(check_stream(
                        conn,
                        &append.stream,
                        append.expected,
                        count,
                        None,
                    )?);
                }
                // From here on a failure leaves writes behind: the transaction must go.
                let mut command = commit.command.as_ref();
                let mut appended = Vec::with_capacity(versions.len());
                for (append, actual) in commit.appends.iter().zip(versions) {
                    // The record goes with the stream it targets (validated to be one of them).
                    let record = command.filter(|c| c.target == append.stream);
                    if record.is_some() {
                        command = None;
                    }
                    let written =
                        write_events(conn, &append.stream, &append.events, actual, record);
                    appended.push(written.map_err(WriteError::Broken)?);
                }
                Ok(appended)
            })
            .await
    }
}

/// The first position from `from` on of an event matching `query`.
fn first_match(
    conn: &Connection,
    query: &EventQuery,
    from: i64,
) -> Result<Option<Position>, StoreError> {
    let mut args = Vec::new();
    let positions = matching_positions(query, from, 1, &mut args);
    let mut select = conn
        .prepare_cached(&format!("SELECT min(position) FROM ({positions})"))
        .map_err(backend)?;
    let found: Option<i64> = select
        .query_row(params_from_iter(args), |r| r.get(0))
        .map_err(backend)?;
    Ok(found.map(|p| Position::new(p.unsigned_abs())))
}

/// A `SELECT` of the positions, from `from` on, of events matching `query`, at most `limit`
/// per item, pushing its arguments onto `args` in order.
///
/// An item with tags starts from the tag index (its first tag's entries from `from` on, in
/// position order) and keeps the positions that also carry its other tags and, if it names
/// types, are of one of them: it reads only its first tag's events. An item with types only,
/// and [`EventQuery::all`], read the log from `from` on.
fn matching_positions(query: &EventQuery, from: i64, limit: i64, args: &mut Vec<Value>) -> String {
    let Some(items) = query.alternatives() else {
        args.extend([Value::Integer(from), Value::Integer(limit)]);
        return "SELECT position FROM (SELECT position FROM cqrs_events WHERE position >= ? \
                ORDER BY position LIMIT ? + 0)"
            .to_owned();
    };
    let mut selects = Vec::with_capacity(items.len());
    for item in items {
        let types = vec!["?"; item.types.len()].join(", ");
        let select = match item.tags.split_first() {
            Some((first, others)) => {
                args.push(Value::Text(first.as_str().to_owned()));
                args.push(Value::Integer(from));
                let mut sql =
                    "SELECT t.position FROM cqrs_event_tags t WHERE t.tag = ? AND t.position >= ?"
                        .to_owned();
                for tag in others {
                    sql.push_str(
                        " AND EXISTS (SELECT 1 FROM cqrs_event_tags o WHERE o.tag = ? AND o.position = t.position)",
                    );
                    args.push(Value::Text(tag.as_str().to_owned()));
                }
                if !item.types.is_empty() {
                    sql.push_str(&format!(
                        " AND (SELECT event_type FROM cqrs_events e WHERE e.position = t.position) IN ({types})"
                    ));
                    args.extend(item.types.iter().map(|t| Value::Text(t.clone())));
                }
                sql.push_str(" ORDER BY t.position LIMIT ? + 0");
                sql
            }
            None => {
                args.push(Value::Integer(from));
                args.extend(item.types.iter().map(|t| Value::Text(t.clone())));
                format!(
                    "SELECT position FROM cqrs_events WHERE position >= ? AND event_type IN ({types}) \
                     ORDER BY position LIMIT ? + 0"
                )
            }
        };
        args.push(Value::Integer(limit));
        selects.push(format!("SELECT position FROM ({select})"));
    }
    selects.join(" UNION ")
}
