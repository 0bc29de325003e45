//! Reading events: by stream, folded as read, from the global log, filtered, and live.

use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_core::store::{SubscriptionOptions, subscription};
use cqrs_core::store::{from_i64, limit_to_i64, to_i64};
use cqrs_core::{
    BatchStream, EventFilter, EventReader, EventView, Position, ReadBatch, RecordedEvent,
    StoreError, StreamId, StreamSummary, Version,
};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use crate::error::backend;
use crate::readahead::Next;
use crate::rows::{self, EVENT_COLUMNS, EventRows};
use crate::store::SqliteEventStore;
use crate::writer::on_multi_thread_runtime;

#[async_trait]
impl EventReader for SqliteEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = stream.clone();
        self.read(move |conn| read_stream(conn, &stream, from, None))
            .await
    }

    /// Decodes straight from the rows on the calling thread where the runtime allows it
    /// (see [`SqliteEventStore::query`]'s connections); elsewhere reads with `read_stream`.
    async fn visit_stream(
        &self,
        stream: &StreamId,
        from: Version,
        visit: &mut (dyn for<'e> FnMut(EventView<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        match &self.inner.readers {
            Some(pool) if on_multi_thread_runtime() => tokio::task::block_in_place(|| {
                pool.run(|conn| rows::visit_stream(conn, stream, from, visit).map(|_| ()))
            }),
            _ => cqrs_core::store::visit_by_reading(self, stream, from, visit).await,
        }
    }

    async fn read_stream_page(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = stream.clone();
        let limit = limit_to_i64(limit);
        self.read(move |conn| read_stream(conn, &stream, from, Some(limit)))
            .await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamSummary>, StoreError> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.read(move |conn| list_streams(conn, &prefix, after.as_deref(), limit))
            .await
    }

    /// A scan that pages on from where its last page ended gets its pages read ahead, on
    /// another connection and thread while it uses the one before (see `readahead`).
    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = to_i64(from.get())?;
        let limit = limit_to_i64(limit);
        let ahead = &self.inner.read_ahead;
        let full = |page: &[RecordedEvent]| i64::try_from(page.len()).ok() == Some(limit);
        // In memory, reads share the writer's connection: there is no other to read ahead on.
        if self.inner.readers.is_none() || tokio::runtime::Handle::try_current().is_err() {
            return self.read(move |conn| log_page(conn, from, limit)).await;
        }
        let (continued, ready) = match ahead.claim(from, limit) {
            // Short (it reached the head then), failed or lost: it is read again below.
            Next::Ahead(page) => (
                true,
                page.await.ok().and_then(Result::ok).filter(|p| full(p)),
            ),
            Next::Continue => (true, None),
            Next::Read => (false, None),
        };
        let page = match ready {
            Some(page) => page,
            None => self.read(move |conn| log_page(conn, from, limit)).await?,
        };
        if let Some(last) = page.last()
            && full(&page)
        {
            let next = to_i64(last.position.next().get())?;
            if continued {
                let inner = Arc::clone(&self.inner);
                ahead.read_ahead(next, limit, move |from| {
                    let readers = inner.readers.as_ref().expect("checked: a file store");
                    readers.run(|conn| log_page(conn, from, limit))
                });
            } else {
                ahead.mark(next, limit);
            }
        }
        Ok(page)
    }

    async fn read_filtered(
        &self,
        from: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadBatch, StoreError> {
        let filter = filter.clone();
        let limit = limit.max(1);
        self.read(move |conn| read_filtered(conn, from, limit, &filter))
            .await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.read(head).await
    }

    fn subscribe_batches(&self, from: Position, filter: EventFilter) -> BatchStream {
        subscription(
            Arc::new(self.clone()),
            &self.inner.notifier,
            from,
            filter,
            SubscriptionOptions::default(),
        )
    }
}

/// Up to `limit` events of the log from position `from` on.
fn log_page(conn: &Connection, from: i64, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut select = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM cqrs_events e \
             WHERE e.position >= ?1 ORDER BY e.position LIMIT ?2 + 0"
        ))
        .map_err(backend)?;
    let mut rows = select.query(params![from, limit]).map_err(backend)?;
    let mut decoder = EventRows::default();
    // A page of the log is usually full: one allocation instead of a dozen doublings.
    let mut events = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(10_000));
    while let Some(row) = rows.next().map_err(backend)? {
        events.push(decoder.read(row)?);
    }
    Ok(events)
}

/// Reads `stream` from version `from` on `conn`.
/// A loose index scan over the (stream, version) index: one seek to each next stream name,
/// and one to its last event, so that a page costs the same in a log of any length.
fn list_streams(
    conn: &Connection,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<StreamSummary>, StoreError> {
    let mut next = conn
        .prepare_cached("SELECT stream FROM cqrs_events WHERE stream > ?1 ORDER BY stream LIMIT 1")
        .map_err(backend)?;
    let mut first = conn
        .prepare_cached("SELECT stream FROM cqrs_events WHERE stream >= ?1 ORDER BY stream LIMIT 1")
        .map_err(backend)?;
    let mut last = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM cqrs_events e WHERE e.stream = ?1 ORDER BY e.version DESC LIMIT 1"
        ))
        .map_err(backend)?;
    let mut decoder = EventRows::default();
    let mut streams = Vec::new();
    // Start at the prefix itself, or just past `after` when that is further on.
    let mut cursor = match after {
        Some(after) if after >= prefix => next
            .query_row(params![after], |row| row.get::<_, String>(0))
            .optional(),
        _ => first
            .query_row(params![prefix], |row| row.get::<_, String>(0))
            .optional(),
    }
    .map_err(backend)?;
    while let Some(stream) = cursor.take() {
        if streams.len() == limit || !stream.starts_with(prefix) {
            break;
        }
        let mut rows = last.query(params![stream]).map_err(backend)?;
        if let Some(row) = rows.next().map_err(backend)? {
            streams.push(StreamSummary::of_last(&decoder.read(row)?));
        }
        drop(rows);
        cursor = next
            .query_row(params![stream], |row| row.get::<_, String>(0))
            .optional()
            .map_err(backend)?;
    }
    Ok(streams)
}

/// `stream` from version `from` on; up to `limit` events when given (a page), else all: a
/// whole read keeps its statement without a `LIMIT`.
fn read_stream(
    conn: &Connection,
    stream: &StreamId,
    from: Version,
    limit: Option<i64>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let from = to_i64(from.get())?;
    let whole = format!(
        "SELECT {EVENT_COLUMNS} FROM cqrs_events e WHERE e.stream = ?1 AND e.version >= ?2 ORDER BY e.version"
    );
    let sql = match limit {
        Some(_) => format!("{whole} LIMIT ?3 + 0"),
        None => whole,
    };
    let mut select = conn.prepare_cached(&sql).map_err(backend)?;
    let mut rows = match limit {
        Some(limit) => select.query(params![stream.as_str(), from, limit]),
        None => select.query(params![stream.as_str(), from]),
    }
    .map_err(backend)?;
    let mut decoder = EventRows::default();
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        events.push(decoder.read(row)?);
    }
    Ok(events)
}

fn head(conn: &Connection) -> Result<Position, StoreError> {
    let max: Option<i64> = conn
        .query_row("SELECT max(position) FROM cqrs_events", [], |r| r.get(0))
        .map_err(backend)?;
    Ok(Position::new(
        max.map_or(Ok(0), |p| from_i64(p, "position", None))?,
    ))
}

/// How many positions one filtered read scans at most: bounds the work of a read that finds
/// few matches.
const SCAN_WINDOW: u64 = 4096;

fn read_filtered(
    conn: &Connection,
    from: Position,
    limit: usize,
    filter: &EventFilter,
) -> Result<ReadBatch, StoreError> {
    let head = head(conn)?;
    let from = from.max(Position::START);
    if from > head {
        return Ok(ReadBatch {
            events: Vec::new(),
            next: from,
            end: true,
        });
    }
    // Positions are dense (one writer hands them out), so a window of positions is a window
    // of rows; bounding it by the head read above keeps the batch consistent with `end`.
    let window_end = head
        .get()
        .saturating_add(1)
        .min(from.get().saturating_add(SCAN_WINDOW.max(limit as u64)));
    let mut sql = format!(
        "SELECT {EVENT_COLUMNS} FROM cqrs_events e \
         WHERE e.position >= ?1 AND e.position < ?2"
    );
    let mut args: Vec<rusqlite::types::Value> =
        vec![to_i64(from.get())?.into(), to_i64(window_end)?.into()];
    if !filter.is_all() {
        let mut alternatives = Vec::new();
        if !filter.types.is_empty() {
            alternatives.push(format!(
                "e.event_type IN ({})",
                placeholders(args.len() + 1, filter.types.len())
            ));
            args.extend(filter.types.iter().map(|t| t.clone().into()));
        }
        if !filter.categories.is_empty() {
            alternatives.push(format!(
                "e.category IN ({})",
                placeholders(args.len() + 1, filter.categories.len())
            ));
            args.extend(filter.categories.iter().map(|c| c.clone().into()));
        }
        sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }
    sql.push_str(&format!(
        " ORDER BY e.position LIMIT ?{} + 0",
        args.len() + 1
    ));
    args.push(limit_to_i64(limit).into());
    let mut select = conn.prepare_cached(&sql).map_err(backend)?;
    let mut rows = select.query(params_from_iter(args)).map_err(backend)?;
    let mut decoder = EventRows::default();
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        events.push(decoder.read(row)?);
    }
    let full = events.len() == limit;
    let next = if full {
        events.last().map_or(from, |e| e.position.next())
    } else {
        Position::new(window_end)
    };
    let end = !full && window_end > head.get();
    Ok(ReadBatch { events, next, end })
}

pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
