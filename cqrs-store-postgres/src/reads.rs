//! Reading events: by stream (sharing round trips under load), folded as read, from the
//! global log below the gap-safety horizon, filtered, and live.

use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_core::store::{SubscriptionOptions, subscription};
use cqrs_core::{
    BatchStream, EventFilter, EventReader, EventView, Position, ReadBatch, RecordedEvent,
    StoreError, StreamId, StreamSummary, Version,
};
use futures::TryStreamExt;
use sqlx::{AssertSqlSafe, Row};

use crate::error::backend;
use crate::rows::EventRows;
use cqrs_core::store::{from_i64, limit_to_i64, to_i64};

use crate::store::PostgresEventStore;

#[async_trait]
impl EventReader for PostgresEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.reader.read_stream(stream, from).await
    }

    /// Reads only the columns a fold needs while the server is quiet; shares a round trip
    /// with other reads under load.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        visit: &mut (dyn for<'e> FnMut(EventView<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        match self.inner.reader.visit_alone(stream, from, visit).await {
            Some(visited) => visited,
            None => cqrs_core::store::visit_by_reading(self, stream, from, visit).await,
        }
    }

    async fn read_stream_page(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_events(
            sqlx::query(AssertSqlSafe(self.inner.sql.read_stream_page.clone()))
                .bind(stream.as_str())
                .bind(to_i64(from.get())?)
                .bind(limit_to_i64(limit)),
        )
        .await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamSummary>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Start at the prefix itself, or just past `after` when that is further on.
        let (cursor, inclusive) = match after {
            Some(after) if after >= prefix => (after, false),
            _ => (prefix, true),
        };
        let events = self
            .read_events(
                sqlx::query(AssertSqlSafe(self.inner.sql.list_streams.clone()))
                    .bind(cursor)
                    .bind(inclusive)
                    .bind(prefix)
                    .bind(limit_to_i64(limit)),
            )
            .await?;
        Ok(events.iter().map(StreamSummary::of_last).collect())
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_events(
            sqlx::query(AssertSqlSafe(self.inner.sql.read_all.clone()))
                .bind(to_i64(from.get())?)
                .bind(limit_to_i64(limit)),
        )
        .await
    }

    async fn read_filtered(
        &self,
        from: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadBatch, StoreError> {
        let limit = limit.max(1);
        // Decoded as the rows arrive (see `PostgresEventStore::read_events`).
        let mut rows = sqlx::query(AssertSqlSafe(self.inner.sql.read_filtered.clone()))
            .bind(to_i64(from.get())?)
            .bind(limit_to_i64(limit))
            .bind(filter.is_all())
            .bind(&filter.types)
            .bind(&filter.categories)
            .fetch(&self.inner.pool);
        let mut head = None;
        let mut decoder = EventRows::new(1);
        let mut events = Vec::new();
        while let Some(row) = rows.try_next().await.map_err(backend)? {
            if head.is_none() {
                head = Some(row.try_get::<i64, _>(0).map_err(backend)?);
            }
            let position: Option<i64> = row.try_get(1).map_err(backend)?;
            if position.is_some() {
                events.push(decoder.read(&row)?);
            }
        }
        drop(rows);
        let head = Position::new(from_i64(head.unwrap_or(0), "head", None)?);
        let full = events.len() == limit;
        let next = if full {
            events.last().map_or(from, |e| e.position.next())
        } else {
            from.max(head.next())
        };
        Ok(ReadBatch {
            events,
            next,
            end: !full,
        })
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let head: i64 = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.head.clone()))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(Position::new(from_i64(head, "head", None)?))
    }

    /// Every committed event, below the horizon or not: committed rows are visible to a new
    /// snapshot at once; the horizon only holds back their delivery.
    async fn last_committed(&self) -> Result<Position, StoreError> {
        let last: i64 = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.last_committed.clone()))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(Position::new(from_i64(
            last,
            "last committed position",
            None,
        )?))
    }

    fn subscribe_batches(&self, from: Position, filter: EventFilter) -> BatchStream {
        let options = SubscriptionOptions {
            poll_interval: Some(self.inner.poll_interval),
            ..SubscriptionOptions::default()
        };
        subscription(
            Arc::new(self.clone()),
            &self.inner.notifier,
            from,
            filter,
            options,
        )
    }
}
