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
        if !query.correlation_ids.is_empty() || !query.streams.is_empty() {
            // The criteria are one prepared statement whose empty lists switch a criterion
            // off (`cardinality($3) = 0 OR …`). A generic plan, which PostgreSQL may settle on
            // after a few executions, cannot use an index for such a criterion; planned with
            // the values, the empty ones fold away and the correlation index (an option) or
            // the stream index serve the rest.
            sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
                .execute(&mut *snapshot)
                .await
                .map_err(backend)?;
        }
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

#[cfg(all(test, feature = "testing"))]
mod tests {
    use cqrs_core::{Commit, EventStore, ExpectedVersion, Json, Metadata, NewEvent};
    use sqlx::Row as _;

    use super::*;
    use crate::PostgresOptions;

    #[tokio::test]
    async fn a_flow_query_planned_with_its_values_reads_the_correlation_index() {
        let options = PostgresOptions::default().with_correlation_index(true);
        let Some(store) = crate::testing::fresh_store_with(options).await else {
            return;
        };
        // Enough flows that reading one through the index beats a scan.
        let flows: Vec<Uuid> = (0..2_000).map(|_| Uuid::new_v4()).collect();
        let commits = flows
            .iter()
            .enumerate()
            .map(|(n, flow)| {
                Commit::new(
                    StreamId::new(format!("order-{n}")).expect("stream"),
                    ExpectedVersion::NoStream,
                    vec![
                        NewEvent::new("order.placed", Json::null())
                            .with_metadata(Metadata::new().with_correlation_id(*flow)),
                    ],
                )
            })
            .collect();
        store.commit_in_order(commits).await.expect("commits");
        sqlx::query("ANALYZE cqrs.events")
            .execute(&store.inner.pool)
            .await
            .expect("analyze");
        let query = LogQuery {
            correlation_ids: vec![flows[1_000]],
            ..LogQuery::new()
        };
        // The statement as `query_log` runs it, with the setting it runs under.
        let mut tx = store.inner.pool.begin().await.expect("begin");
        sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
            .execute(&mut *tx)
            .await
            .expect("set");
        for _ in 0..8 {
            // Past the executions after which PostgreSQL may settle on a generic plan.
            let plan: Vec<String> = bind_log(
                sqlx::query(AssertSqlSafe(format!(
                    "EXPLAIN {}",
                    store.inner.sql.log_events
                ))),
                &[],
                &[],
                &query,
                (None, 0, 0),
                100,
            )
            .fetch_all(&mut *tx)
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect();
            assert!(
                plan.iter().any(|line| line.contains("events_correlation")),
                "{plan:#?}"
            );
        }
        let found = store.query_log(&query).await.expect("query");
        assert_eq!(found.len(), 1);
    }
}
