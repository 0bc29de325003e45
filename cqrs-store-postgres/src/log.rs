//! The message log: command records, and log queries over commands and events in one snapshot.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::store::log_page;
use cqrs_core::{CommandRecord, LogEntry, LogQuery, MessageKind, MessageLog, StoreError, StreamId};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::error::backend;
use crate::rows::{EventRows, command_record};
use crate::sql::LOG_SNAPSHOT;
use cqrs_core::store::to_i64;

use crate::store::PostgresEventStore;

#[async_trait]
impl MessageLog for PostgresEventStore {
    async fn find_command(&self, id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.find_command.clone()))
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend)?;
        row.map(|row| command_record(&row).map(|(_, record)| record))
            .transpose()
    }

    async fn query_log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
        let sql = &self.inner.sql;
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let types: Vec<&str> = query.types.iter().map(String::as_str).collect();
        let streams: Vec<&str> = query.streams.iter().map(StreamId::as_str).collect();
        let after = match query.after {
            Some(a) => (
                Some(a.recorded_at),
                i32::from(a.kind == MessageKind::Event),
                to_i64(a.sequence)?,
            ),
            None => (None, 0, 0),
        };
        let mut snapshot = self
            .inner
            .pool
            .begin_with(LOG_SNAPSHOT)
            .await
            .map_err(backend)?;
        let mut entries = Vec::new();
        if query.kind != Some(MessageKind::Event) {
            let rows = bind_log(
                sqlx::query(AssertSqlSafe(sql.log_commands.clone())),
                &types,
                &streams,
                query,
                after,
                limit,
            )
            .fetch_all(&mut *snapshot)
            .await
            .map_err(backend)?;
            for row in &rows {
                let (sequence, record) = command_record(row)?;
                entries.push(LogEntry::command(sequence, record));
            }
        }
        if query.kind != Some(MessageKind::Command) {
            let rows = bind_log(
                sqlx::query(AssertSqlSafe(sql.log_events.clone())),
                &types,
                &streams,
                query,
                after,
                limit,
            )
            .fetch_all(&mut *snapshot)
            .await
            .map_err(backend)?;
            let mut decoder = EventRows::new(0);
            for row in &rows {
                entries.push(LogEntry::event(decoder.read(row)?));
            }
        }
        snapshot.commit().await.map_err(backend)?;
        Ok(log_page(query, entries))
    }
}

/// Binds a log query's nine parameters (see `sql::log_criteria`).
fn bind_log<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    types: &'q [&'q str],
    streams: &'q [&'q str],
    log: &'q LogQuery,
    (after_time, after_kind, after_sequence): (Option<DateTime<Utc>>, i32, i64),
    limit: i64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(types)
        .bind(streams)
        .bind(&log.correlation_ids)
        .bind(log.since)
        .bind(log.until)
        .bind(after_time)
        .bind(after_kind)
        .bind(after_sequence)
        .bind(limit)
}
