//! Appending: one append alone, and the batcher that commits concurrent appends together.

use cqrs_core::{Appended, Commit, ExpectedVersion, Position, StoreError, StreamId, Version};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::error::{backend, signed, unique_violation, unsigned};
use crate::rows::headers_text;
use crate::sql::Sql;
use crate::store::MAX_EVENTS_PER_TRANSACTION;

/// The most appends one batch takes: a batch is one transaction, and a bounded one keeps a
/// flood of writers seeing commits.
const MAX_BATCH: usize = 64;

/// What appends need: the pool, the statements and the notification channel. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Appender {
    pub(crate) pool: PgPool,
    pub(crate) sql: Sql,
    pub(crate) channel: String,
}

pub(crate) enum Attempt {
    Done(Appended),
    /// A concurrent writer got the version first (a unique violation).
    Raced,
}

impl Appender {
    pub(crate) async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        let v: i64 = sqlx::query_scalar(AssertSqlSafe(self.sql.stream_version.clone()))
            .bind(stream.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(Version::new(unsigned(v, "stream version", None)?))
    }

    /// Runs the append statement once (with `NOTIFY` in it when asked: for appends inside a
    /// caller's transaction, which only the caller's commit makes visible).
    pub(crate) async fn try_commit(
        &self,
        conn: &mut PgConnection,
        commit: &Commit,
        notify_in_transaction: bool,
    ) -> Result<Attempt, StoreError> {
        if commit.events.len() > MAX_EVENTS_PER_TRANSACTION {
            return Err(StoreError::Invalid(format!(
                "{} events in one append; at most {MAX_EVENTS_PER_TRANSACTION}",
                commit.events.len()
            )));
        }
        let n = commit.events.len();
        let (mut types, mut versions, mut payloads, mut ids) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut correlations, mut causations, mut commands, mut times, mut headers) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for event in &commit.events {
            types.push(event.event_type.as_str());
            versions.push(i32::from(event.schema_version));
            payloads.push(event.payload.as_str());
            ids.push(event.metadata.event_id);
            correlations.push(event.metadata.correlation_id);
            causations.push(event.metadata.causation_id);
            commands.push(event.metadata.command_id);
            times.push(event.metadata.recorded_at);
            headers.push(headers_text(&event.metadata.headers));
        }
        let expected = match commit.expected {
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) => signed(v.get())?,
            _ => -1,
        };
        let record = commit.command.as_ref();
        let outcome = record
            .map(|c| serde_json::to_string(&c.outcome))
            .transpose()
            .map_err(backend)?;
        let result = sqlx::query(AssertSqlSafe(self.sql.commit.clone()))
            .bind(commit.stream.as_str())
            .bind(expected)
            .bind(commit.stream.category())
            .bind(&self.channel)
            .bind(record.map(|c| c.command_id))
            .bind(&types)
            .bind(&versions)
            .bind(&payloads)
            .bind(&ids)
            .bind(&correlations)
            .bind(&causations)
            .bind(&commands)
            .bind(&times)
            .bind(&headers)
            .bind(record.map(|c| c.command_type.as_str()))
            .bind(record.map(|c| c.payload.as_str()))
            .bind(record.and_then(|c| c.correlation_id))
            .bind(record.and_then(|c| c.causation_id))
            .bind(record.map(|c| c.recorded_at))
            .bind(record.and_then(|c| headers_text(&c.headers)))
            .bind(outcome)
            .bind(notify_in_transaction)
            .fetch_one(&mut *conn)
            .await;
        let row = match result {
            Ok(row) => row,
            Err(err) => {
                return match unique_violation(&err).as_deref() {
                    // Another writer took a version between this statement's read and its insert.
                    Some("events_stream_version") => Ok(Attempt::Raced),
                    Some("commands_command_id") => Err(StoreError::DuplicateCommand {
                        command_id: record.map(|c| c.command_id).unwrap_or_default(),
                    }),
                    _ => Err(backend(err)),
                };
            }
        };
        let duplicate: bool = row.try_get(0).map_err(backend)?;
        let ok: bool = row.try_get(1).map_err(backend)?;
        let current: i64 = row.try_get(2).map_err(backend)?;
        let base: i64 = row.try_get(3).map_err(backend)?;
        let last_position: Option<i64> = row.try_get(4).map_err(backend)?;
        let last_version: Option<i64> = row.try_get(5).map_err(backend)?;
        if duplicate {
            return Err(StoreError::DuplicateCommand {
                command_id: record.map(|c| c.command_id).unwrap_or_default(),
            });
        }
        let actual = Version::new(unsigned(current, "stream version", None)?);
        if !ok {
            if usize::try_from(base)
                .unwrap_or(usize::MAX)
                .saturating_add(n)
                > MAX_EVENTS_PER_TRANSACTION
            {
                return Err(StoreError::Invalid(format!(
                    "more than {MAX_EVENTS_PER_TRANSACTION} events in one transaction"
                )));
            }
            return Err(StoreError::Conflict {
                stream: commit.stream.clone(),
                expected: commit.expected,
                actual,
            });
        }
        Ok(Attempt::Done(Appended {
            version: last_version.map_or(Ok(actual), |v| {
                unsigned(v, "version", None).map(Version::new)
            })?,
            position: last_position
                .map(|p| unsigned(p, "position", None).map(Position::new))
                .transpose()?,
        }))
    }

    /// Appends `commit` on its own, trying again while an append at any version loses races.
    pub(crate) async fn commit_alone(&self, commit: &Commit) -> Result<Appended, StoreError> {
        for _ in 0..32 {
            let mut conn = self.pool.acquire().await.map_err(backend)?;
            match self.try_commit(&mut conn, commit, false).await? {
                Attempt::Done(appended) => return Ok(appended),
                Attempt::Raced if commit.expected == ExpectedVersion::Any => {
                    tokio::task::yield_now().await
                }
                Attempt::Raced => break,
            }
        }
        Err(StoreError::Conflict {
            actual: self.stream_version(&commit.stream).await?,
            stream: commit.stream.clone(),
            expected: commit.expected,
        })
    }

    /// Appends every commit of `batch` in one transaction and one round trip, each checked as
    /// if it were alone, in order (a later one sees the earlier ones). `Err` means the batch as
    /// a whole failed (another connection took one of its versions, say) and wrote nothing.
    async fn append_many(
        &self,
        batch: &[&Commit],
    ) -> Result<Vec<Result<Appended, StoreError>>, sqlx::Error> {
        let events: usize = batch.iter().map(|c| c.events.len()).sum();
        let mut streams = Vec::with_capacity(batch.len());
        let mut expected = Vec::with_capacity(batch.len());
        let mut categories = Vec::with_capacity(batch.len());
        let mut counts = Vec::with_capacity(batch.len());
        let mut command_ids = Vec::with_capacity(batch.len());
        let mut command_types = Vec::with_capacity(batch.len());
        let mut command_payloads = Vec::with_capacity(batch.len());
        let mut command_correlations = Vec::with_capacity(batch.len());
        let mut command_causations = Vec::with_capacity(batch.len());
        let mut command_times = Vec::with_capacity(batch.len());
        let mut command_headers = Vec::with_capacity(batch.len());
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut types = Vec::with_capacity(events);
        let mut versions = Vec::with_capacity(events);
        let mut payloads = Vec::with_capacity(events);
        let mut ids = Vec::with_capacity(events);
        let mut correlations = Vec::with_capacity(events);
        let mut causations = Vec::with_capacity(events);
        let mut commands = Vec::with_capacity(events);
        let mut times = Vec::with_capacity(events);
        let mut headers = Vec::with_capacity(events);
        for commit in batch {
            streams.push(commit.stream.as_str());
            expected.push(match commit.expected {
                ExpectedVersion::NoStream => 0,
                ExpectedVersion::Exact(v) => i64::try_from(v.get()).unwrap_or(i64::MAX),
                _ => -1,
            });
            categories.push(commit.stream.category());
            counts.push(i32::try_from(commit.events.len()).unwrap_or(i32::MAX));
            let record = commit.command.as_ref();
            command_ids.push(record.map(|c| c.command_id));
            command_types.push(record.map(|c| c.command_type.as_str()));
            command_payloads.push(record.map(|c| c.payload.as_str()));
            command_correlations.push(record.and_then(|c| c.correlation_id));
            command_causations.push(record.and_then(|c| c.causation_id));
            command_times.push(record.map(|c| c.recorded_at));
            command_headers.push(record.and_then(|c| headers_text(&c.headers)));
            outcomes.push(record.and_then(|c| serde_json::to_string(&c.outcome).ok()));
            for event in &commit.events {
                types.push(event.event_type.as_str());
                versions.push(i32::from(event.schema_version));
                payloads.push(event.payload.as_str());
                ids.push(event.metadata.event_id);
                correlations.push(event.metadata.correlation_id);
                causations.push(event.metadata.causation_id);
                commands.push(event.metadata.command_id);
                times.push(event.metadata.recorded_at);
                headers.push(headers_text(&event.metadata.headers));
            }
        }
        let rows = sqlx::query(AssertSqlSafe(self.sql.append_many.clone()))
            .bind(&streams)
            .bind(&expected)
            .bind(&categories)
            .bind(&counts)
            .bind(&command_ids)
            .bind(&command_types)
            .bind(&command_payloads)
            .bind(&command_correlations)
            .bind(&command_causations)
            .bind(&command_times)
            .bind(&command_headers)
            .bind(&outcomes)
            .bind(&types)
            .bind(&versions)
            .bind(&payloads)
            .bind(&ids)
            .bind(&correlations)
            .bind(&causations)
            .bind(&commands)
            .bind(&times)
            .bind(&headers)
            .fetch_all(&self.pool)
            .await?;
        Ok(batch
            .iter()
            .zip(&rows)
            .map(|(commit, row)| {
                let status: i32 = row.try_get(0).map_err(backend)?;
                let current: i64 = row.try_get(1).map_err(backend)?;
                let last_position: Option<i64> = row.try_get(2).map_err(backend)?;
                let last_version: Option<i64> = row.try_get(3).map_err(backend)?;
                let actual = Version::new(unsigned(current, "stream version", None)?);
                match status {
                    0 => Ok(Appended {
                        version: last_version.map_or(Ok(actual), |v| {
                            unsigned(v, "version", None).map(Version::new)
                        })?,
                        position: last_position
                            .map(|p| unsigned(p, "position", None).map(Position::new))
                            .transpose()?,
                    }),
                    1 => Err(StoreError::DuplicateCommand {
                        command_id: commit
                            .command
                            .as_ref()
                            .map(|c| c.command_id)
                            .unwrap_or_default(),
                    }),
                    2 => Err(StoreError::Conflict {
                        stream: commit.stream.clone(),
                        expected: commit.expected,
                        actual,
                    }),
                    _ => Err(StoreError::Invalid(format!(
                        "more than {MAX_EVENTS_PER_TRANSACTION} events in one transaction"
                    ))),
                }
            })
            .collect())
    }
}

/// An append waiting for the batcher.
pub(crate) struct Pending {
    pub(crate) commit: Commit,
    pub(crate) reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Commits every append waiting in `pending` together: one round trip, one transaction, one
/// sync of PostgreSQL's log for all of them. If a batch fails as a whole (another connection
/// took one of its versions), its appends are retried one by one, so each still gets its own
/// answer.
pub(crate) async fn run_batcher(appender: Appender, mut pending: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = pending.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let commits: Vec<&Commit> = batch.iter().map(|p| &p.commit).collect();
        let fits =
            commits.iter().map(|c| c.events.len()).sum::<usize>() <= MAX_EVENTS_PER_TRANSACTION;
        let results = if batch.len() > 1 && fits {
            appender.append_many(&commits).await.ok()
        } else {
            None
        };
        match results {
            Some(results) => {
                for (waiting, result) in batch.drain(..).zip(results) {
                    let _ = waiting.reply.send(result);
                }
            }
            None => {
                // Alone, too big, or the batch failed: one by one, concurrently.
                let singles = batch.drain(..).map(|waiting| {
                    let appender = appender.clone();
                    async move {
                        let result = appender.commit_alone(&waiting.commit).await;
                        let _ = waiting.reply.send(result);
                    }
                });
                futures::future::join_all(singles).await;
            }
        }
    }
}
