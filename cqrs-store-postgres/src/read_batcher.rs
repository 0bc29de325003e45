//! Reading streams: concurrent `read_stream` calls share a round trip when the server is busy.

use std::ops::ControlFlow;
use std::sync::Arc;

use cqrs_core::{EventView, RecordedEvent, StoreError, StreamId, Version};
use sqlx::{AssertSqlSafe, PgPool, Row};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::backend;
use crate::rows::{EventRows, fold_columns};
use crate::sql::Sql;
use cqrs_core::store::to_i64;

/// How many stream reads may be at the server at once before newcomers wait and share one.
/// Below this, every read goes on its own at once, so a quiet store adds no latency.
const IN_FLIGHT: usize = 2;

/// The most reads one query takes.
const MAX_READS: usize = 64;

/// A `read_stream` waiting for a free slot.
struct StreamRead {
    stream: StreamId,
    from: Version,
    reply: oneshot::Sender<Result<Vec<RecordedEvent>, StoreError>>,
}

/// Serves stream reads: each at once, by its caller, while fewer than [`IN_FLIGHT`] are at the
/// server; the ones that arrive meanwhile wait and go together in one query when a slot
/// frees. A command handler reads its aggregate before every decision, so under load this
/// saves most of the reads' round trips. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    pool: PgPool,
    sql: Sql,
    slots: Arc<Semaphore>,
    waiting: mpsc::UnboundedSender<StreamRead>,
}

impl Reader {
    /// A reader, and the task that serves its waiting reads (to abort with the store).
    pub(crate) fn start(pool: PgPool, sql: Sql) -> (Self, JoinHandle<()>) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let (waiting, reads) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve_waiting(
            pool.clone(),
            sql.clone(),
            Arc::clone(&slots),
            reads,
        ));
        let reader = Self {
            pool,
            sql,
            slots,
            waiting,
        };
        (reader, task)
    }

    /// Reads `stream` from `from` on.
    pub(crate) async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // A free slot is taken only when no read waits for one (the semaphore is fair).
        if let Ok(_slot) = self.slots.try_acquire() {
            return read_one(&self.pool, &self.sql, stream, from).await;
        }
        let (reply, answer) = oneshot::channel();
        self.waiting
            .send(StreamRead {
                stream: stream.clone(),
                from,
                reply,
            })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Hands `stream`'s events from `from` on to `visit`, as a fold reads them, by a query of
    /// the fold's columns only, if a slot is free; `None` (nothing read) if none is.
    pub(crate) async fn visit_alone(
        &self,
        stream: &StreamId,
        from: Version,
        visit: &mut (dyn for<'e> FnMut(EventView<'e>) -> ControlFlow<()> + Send),
    ) -> Option<Result<(), StoreError>> {
        let _slot = self.slots.try_acquire().ok()?;
        Some(self.visit_columns(stream, from, visit).await)
    }

    async fn visit_columns(
        &self,
        stream: &StreamId,
        from: Version,
        visit: &mut (dyn for<'e> FnMut(EventView<'e>) -> ControlFlow<()> + Send),
    ) -> Result<(), StoreError> {
        let rows = sqlx::query(AssertSqlSafe(self.sql.visit_stream.clone()))
            .bind(stream.as_str())
            .bind(to_i64(from.get())?)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        for row in &rows {
            let (position, version, event_type, schema_version, payload) = fold_columns(row, 0)?;
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
        Ok(())
    }
}

/// Sends the reads that found no free slot, together, each time a slot frees.
async fn serve_waiting(
    pool: PgPool,
    sql: Sql,
    slots: Arc<Semaphore>,
    mut waiting: mpsc::UnboundedReceiver<StreamRead>,
) {
    while let Some(first) = waiting.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut reads = vec![first];
        while reads.len() < MAX_READS {
            match waiting.try_recv() {
                Ok(next) => reads.push(next),
                Err(_) => break,
            }
        }
        let (pool, sql) = (pool.clone(), sql.clone());
        tokio::spawn(async move {
            if reads.len() > 1 {
                read_many(&pool, &sql, reads).await;
            } else if let Some(read) = reads.pop() {
                let result = read_one(&pool, &sql, &read.stream, read.from).await;
                let _ = read.reply.send(result);
            }
            drop(slot);
        });
    }
}

/// Reads one stream from `from` on.
async fn read_one(
    pool: &PgPool,
    sql: &Sql,
    stream: &StreamId,
    from: Version,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(sql.read_stream.clone()))
        .bind(stream.as_str())
        .bind(to_i64(from.get())?)
        .fetch_all(pool)
        .await
        .map_err(backend)?;
    let mut decoder = EventRows::new(0);
    rows.iter().map(|row| decoder.read(row)).collect()
}

/// Reads every stream of `reads` in one query and answers each; a row that cannot be read
/// fails only the read it belongs to.
async fn read_many(pool: &PgPool, sql: &Sql, reads: Vec<StreamRead>) {
    let mut streams = Vec::with_capacity(reads.len());
    let mut froms = Vec::with_capacity(reads.len());
    for read in &reads {
        streams.push(read.stream.as_str());
        froms.push(i64::try_from(read.from.get()).unwrap_or(i64::MAX));
    }
    let rows = sqlx::query(AssertSqlSafe(sql.read_streams.clone()))
        .bind(&streams)
        .bind(&froms)
        .fetch_all(pool)
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(err) => {
            let message = err.to_string();
            for read in reads {
                let _ = read
                    .reply
                    .send(Err(StoreError::Backend(message.clone().into())));
            }
            return;
        }
    };
    let mut results: Vec<Result<Vec<RecordedEvent>, StoreError>> =
        reads.iter().map(|_| Ok(Vec::new())).collect();
    let mut decoder = EventRows::new(1);
    for row in &rows {
        let index = row
            .try_get::<i64, _>(0)
            .ok()
            .and_then(|i| usize::try_from(i - 1).ok())
            .filter(|i| *i < results.len());
        let Some(index) = index else {
            let message = "a shared stream read returned a row of no read".to_owned();
            for read in reads {
                let _ = read
                    .reply
                    .send(Err(StoreError::Backend(message.clone().into())));
            }
            return;
        };
        if let Ok(events) = &mut results[index] {
            match decoder.read(row) {
                Ok(event) => events.push(event),
                Err(err) => results[index] = Err(err),
            }
        }
    }
    for (read, result) in reads.into_iter().zip(results) {
        let _ = read.reply.send(result);
    }
}
