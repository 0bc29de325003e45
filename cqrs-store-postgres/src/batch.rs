//! Appending: one append alone, and the batcher that commits concurrent appends together.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use cqrs_core::{
    Appended, CommandRecord, Commit, ExpectedVersion, NewEvent, Position, StoreError, StreamId,
    Version,
};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{backend, unique_violation};
use crate::sql::{Expected, OneEvent, Sql};
use cqrs_core::store::headers_json;
use cqrs_core::store::{from_i64, to_i64};

/// The most events one transaction may append: an event's index in its transaction has 16 bits.
pub const MAX_EVENTS_PER_TRANSACTION: usize = 65_535;

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
    /// A transaction younger than this one (which wrote before) wrote the stream's head:
    /// appending would put a later version at an earlier position. A new transaction can.
    Younger,
}

impl Appender {
    pub(crate) async fn stream_version(&self, stream: &StreamId) -> Result<Version, StoreError> {
        let v: i64 = sqlx::query_scalar(AssertSqlSafe(self.sql.stream_version.clone()))
            .bind(stream.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(Version::new(from_i64(v, "stream version", None)?))
    }

    /// Runs the append statement once. Inside a caller's transaction (`in_transaction`) this
    /// is the `append` function, with `NOTIFY` in it (only the caller's commit makes the
    /// events visible), which knows what the transaction wrote before. An append in a
    /// transaction of its own whose events carry no tags (so it takes no locks) is one plain
    /// statement instead: a PL/pgSQL call costs each of its statements an executor start of
    /// its own, which measured 30–60 µs more per append than the same work in one statement.
    /// One such event, the commonest append, takes the leaner statements of
    /// [`OneEvent`] (`commit_one`).
    pub(crate) async fn try_commit(
        &self,
        conn: &mut PgConnection,
        commit: &Commit,
        in_transaction: bool,
    ) -> Result<Attempt, StoreError> {
        if commit.events.len() > MAX_EVENTS_PER_TRANSACTION {
            return Err(StoreError::Invalid(format!(
                "{} events in one append; at most {MAX_EVENTS_PER_TRANSACTION}",
                commit.events.len()
            )));
        }
        if let ([event], false) = (commit.events.as_slice(), in_transaction)
            && event.tags.is_empty()
        {
            return self.commit_one(conn, commit, event).await;
        }
        let n = commit.events.len();
        let mut columns = EventColumns::with_capacity(n);
        for event in &commit.events {
            columns.push(event);
        }
        let expected = expected_param(commit.expected)?;
        let record = commit.command.as_ref();
        let (headers, outcome) = record_texts(record)?;
        let command = |query| bind_record(query, record, headers.as_deref(), outcome.as_deref());
        let result = if in_transaction || columns.tags.is_some() {
            let query = sqlx::query(AssertSqlSafe(self.sql.commit.clone()))
                .bind(commit.stream.as_str())
                .bind(expected)
                .bind(commit.stream.category())
                .bind(&self.channel)
                .bind(record.map(|c| c.command_id));
            command(columns.bind(query))
                .bind(in_transaction)
                .bind(&columns.tags)
                .fetch_one(&mut *conn)
                .await
        } else {
            let query = sqlx::query(AssertSqlSafe(self.sql.commit_alone.clone()))
                .bind(commit.stream.as_str())
                .bind(expected)
                .bind(commit.stream.category())
                .bind(record.map(|c| c.command_id));
            command(columns.bind(query)).fetch_one(&mut *conn).await
        };
        let row = match result {
            Ok(row) => row,
            // Another writer took a version between this statement's read and its insert.
            Err(err) => return refusal(err, record),
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
        let actual = Version::new(from_i64(current, "stream version", None)?);
        if !ok && base < 0 {
            return Ok(Attempt::Younger);
        }
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
        appended(actual, last_version, last_position).map(Attempt::Done)
    }

    /// [`Self::try_commit`] for one untagged event in a transaction of its own: the statement
    /// of its [`OneEvent`] shape, and when that appends nothing, a probe whether the command
    /// was recorded before (a duplicate is reported as such, whatever the stream's version).
    async fn commit_one(
        &self,
        conn: &mut PgConnection,
        commit: &Commit,
        event: &NewEvent,
    ) -> Result<Attempt, StoreError> {
        let expected = match commit.expected {
            ExpectedVersion::NoStream | ExpectedVersion::Exact(Version::ZERO) => Expected::New,
            ExpectedVersion::Exact(_) => Expected::Exact,
            _ => Expected::Any,
        };
        let record = commit.command.as_ref();
        let (headers, outcome) = record_texts(record)?;
        let event_headers = headers_json(&event.metadata.headers);
        let meta = &event.metadata;
        let shape = OneEvent::of(expected, record.is_some());
        let query = sqlx::query(AssertSqlSafe(Arc::clone(
            &self.sql.commit_one[shape.index()],
        )))
        .bind(commit.stream.as_str())
        .bind(expected_param(commit.expected)?)
        .bind(commit.stream.category())
        .bind(event.event_type.as_str())
        .bind(i32::from(event.schema_version))
        .bind(event.payload.as_str())
        .bind(meta.event_id)
        .bind(meta.correlation_id)
        .bind(meta.causation_id)
        .bind(meta.command_id)
        .bind(meta.recorded_at)
        .bind(event_headers.as_deref());
        let query = match record {
            Some(record) => bind_record(
                query.bind(record.command_id),
                Some(record),
                headers.as_deref(),
                outcome.as_deref(),
            ),
            None => query,
        };
        let refused = match query.fetch_optional(&mut *conn).await {
            Ok(Some(row)) => {
                let position: i64 = row.try_get(0).map_err(backend)?;
                let version: i64 = row.try_get(1).map_err(backend)?;
                return appended(Version::ZERO, Some(version), Some(position)).map(Attempt::Done);
            }
            Ok(None) => Attempt::Raced,
            // The stream was past the version, or another writer took it first.
            Err(err) => refusal(err, record)?,
        };
        if let Some(record) = record {
            ensure_new_command(conn, &self.sql, record.command_id).await?;
        }
        Ok(refused)
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
                Attempt::Raced | Attempt::Younger => break,
            }
        }
        Err(StoreError::Conflict {
            actual: self.stream_version(&commit.stream).await?,
            stream: commit.stream.clone(),
            expected: commit.expected,
        })
    }

    /// Appends every commit of `batch` in one statement and one transaction, each checked as
    /// if it were alone: no two may share a stream or a command id ([`take_batch`]). `Err`
    /// means the batch as a whole failed (another connection took one of its versions, say)
    /// and wrote nothing.
    async fn append_many(
        &self,
        batch: &[&Commit],
    ) -> Result<Vec<Result<Appended, StoreError>>, sqlx::Error> {
        self.run_batch(
            &self.sql.append_many,
            Some(&self.sql.append_many_untagged),
            batch,
        )
        .await
    }

    /// Appends `commits` in the order given, in as few transactions as hold them (each at
    /// most [`MAX_EVENTS_PER_TRANSACTION`] events): each transaction one call of
    /// `append_in_order`, which checks each commit against its stream as the earlier ones
    /// leave it and appends all of them or none. A transaction that another connection beat
    /// to a version or a command id is tried again, and then sees why.
    pub(crate) async fn commit_in_order(
        &self,
        commits: &[Commit],
    ) -> Result<Vec<Appended>, StoreError> {
        let mut appended = Vec::with_capacity(commits.len());
        let mut rest = commits;
        while !rest.is_empty() {
            let mut events = 0;
            let take = rest
                .iter()
                .take_while(|c| {
                    events += c.events.len();
                    events <= MAX_EVENTS_PER_TRANSACTION
                })
                .count();
            if take == 0 {
                return Err(StoreError::Invalid(format!(
                    "{} events in one append; at most {MAX_EVENTS_PER_TRANSACTION}",
                    rest[0].events.len()
                )));
            }
            let (chunk, later) = rest.split_at(take);
            let chunk: Vec<&Commit> = chunk.iter().collect();
            let mut tries = 0;
            let results = loop {
                tries += 1;
                match self
                    .run_batch(&self.sql.append_in_order, None, &chunk)
                    .await
                {
                    Ok(results) => break results,
                    Err(err) if tries < 8 && unique_violation(&err).is_some() => {
                        tokio::task::yield_now().await;
                    }
                    Err(err) => return Err(backend(err)),
                }
            };
            for result in results {
                appended.push(result?);
            }
            rest = later;
        }
        Ok(appended)
    }

    /// Runs `statement` (`append_many` or `append_in_order`) over `batch`, or `untagged`
    /// (the same without tags) when there is one and no event has tags, and reads each
    /// commit's answer.
    async fn run_batch(
        &self,
        statement: &Arc<str>,
        untagged: Option<&Arc<str>>,
        batch: &[&Commit],
    ) -> Result<Vec<Result<Appended, StoreError>>, sqlx::Error> {
        let columns = CommitColumns::new(batch);
        let query = match untagged {
            Some(untagged) if columns.events.tags.is_none() => {
                columns.bind_untagged(sqlx::query(AssertSqlSafe(Arc::clone(untagged))))
            }
            _ => columns
                .bind_untagged(sqlx::query(AssertSqlSafe(Arc::clone(statement))))
                .bind(&columns.events.tags),
        };
        let rows = query.fetch_all(&self.pool).await?;
        if rows.len() != batch.len() {
            return Err(sqlx::Error::Protocol(format!(
                "{} answers to {} appends",
                rows.len(),
                batch.len()
            )));
        }
        Ok(batch
            .iter()
            .zip(&rows)
            .map(|(commit, row)| {
                let status: i32 = row.try_get(0).map_err(backend)?;
                let current: i64 = row.try_get(1).map_err(backend)?;
                let last_position: Option<i64> = row.try_get(2).map_err(backend)?;
                let last_version: Option<i64> = row.try_get(3).map_err(backend)?;
                let actual = Version::new(from_i64(current, "stream version", None)?);
                match status {
                    0 => appended(actual, last_version, last_position),
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
                    other => Err(StoreError::Backend(
                        format!("append status {other} unknown to this build").into(),
                    )),
                }
            })
            .collect())
    }
}

/// What an append statement's error means: a unique violation of a stream's version is a
/// race lost ([`Attempt::Raced`], to check again), one of a command id a duplicate; anything
/// else is the backend's error.
fn refusal(err: sqlx::Error, record: Option<&CommandRecord>) -> Result<Attempt, StoreError> {
    match unique_violation(&err).as_deref() {
        Some("events_stream_version") => Ok(Attempt::Raced),
        Some("commands_command_id") => Err(StoreError::DuplicateCommand {
            command_id: record.map(|c| c.command_id).unwrap_or_default(),
        }),
        _ => Err(backend(err)),
    }
}

/// [`StoreError::DuplicateCommand`] if command `id` is recorded, as seen by `conn`.
pub(crate) async fn ensure_new_command(
    conn: &mut PgConnection,
    sql: &Sql,
    id: Uuid,
) -> Result<(), StoreError> {
    let recorded: bool = sqlx::query_scalar(AssertSqlSafe(Arc::clone(&sql.command_recorded)))
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
    if recorded {
        return Err(StoreError::DuplicateCommand { command_id: id });
    }
    Ok(())
}

/// An expected version as the append statements take it: 0 for no stream, -1 for any.
fn expected_param(expected: ExpectedVersion) -> Result<i64, StoreError> {
    match expected {
        ExpectedVersion::NoStream => Ok(0),
        ExpectedVersion::Exact(v) => to_i64(v.get()),
        _ => Ok(-1),
    }
}

/// A command record's headers and outcome as JSON text, for [`bind_record`].
fn record_texts(
    record: Option<&CommandRecord>,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let outcome = record
        .map(|c| serde_json::to_string(&c.outcome))
        .transpose()
        .map_err(backend)?;
    Ok((record.and_then(|c| headers_json(&c.headers)), outcome))
}

/// What a successful append reports: the stream's new version (its version before, for an
/// append of no events) and its last event's position.
fn appended(
    before: Version,
    last_version: Option<i64>,
    last_position: Option<i64>,
) -> Result<Appended, StoreError> {
    Ok(Appended {
        version: last_version.map_or(Ok(before), |v| {
            from_i64(v, "version", None).map(Version::new)
        })?,
        position: last_position
            .map(|p| from_i64(p, "position", None).map(Position::new))
            .transpose()?,
    })
}

/// A list of commits as the column arrays `append_many` and `append_in_order` take: one
/// element per commit, then one per event with its commit's index (from 1) in `owners`.
struct CommitColumns<'a> {
    streams: Vec<&'a str>,
    expected: Vec<i64>,
    categories: Vec<&'a str>,
    counts: Vec<i32>,
    command_ids: Vec<Option<Uuid>>,
    command_types: Vec<Option<&'a str>>,
    command_payloads: Vec<Option<&'a str>>,
    command_correlations: Vec<Option<Uuid>>,
    command_causations: Vec<Option<Uuid>>,
    command_times: Vec<Option<DateTime<Utc>>>,
    command_headers: Vec<Option<String>>,
    outcomes: Vec<Option<String>>,
    owners: Vec<i32>,
    events: EventColumns<'a>,
}

impl<'a> CommitColumns<'a> {
    fn new(commits: &[&'a Commit]) -> Self {
        let n = commits.len();
        let events: usize = commits.iter().map(|c| c.events.len()).sum();
        let mut columns = Self {
            streams: Vec::with_capacity(n),
            expected: Vec::with_capacity(n),
            categories: Vec::with_capacity(n),
            counts: Vec::with_capacity(n),
            command_ids: Vec::with_capacity(n),
            command_types: Vec::with_capacity(n),
            command_payloads: Vec::with_capacity(n),
            command_correlations: Vec::with_capacity(n),
            command_causations: Vec::with_capacity(n),
            command_times: Vec::with_capacity(n),
            command_headers: Vec::with_capacity(n),
            outcomes: Vec::with_capacity(n),
            owners: Vec::with_capacity(events),
            events: EventColumns::with_capacity(events),
        };
        for (index, commit) in (1_i32..).zip(commits) {
            columns.streams.push(commit.stream.as_str());
            columns.expected.push(match commit.expected {
                ExpectedVersion::NoStream => 0,
                ExpectedVersion::Exact(v) => i64::try_from(v.get()).unwrap_or(i64::MAX),
                _ => -1,
            });
            columns.categories.push(commit.stream.category());
            columns
                .counts
                .push(i32::try_from(commit.events.len()).unwrap_or(i32::MAX));
            let record = commit.command.as_ref();
            columns.command_ids.push(record.map(|c| c.command_id));
            columns
                .command_types
                .push(record.map(|c| c.command_type.as_str()));
            columns
                .command_payloads
                .push(record.map(|c| c.payload.as_str()));
            columns
                .command_correlations
                .push(record.and_then(|c| c.correlation_id));
            columns
                .command_causations
                .push(record.and_then(|c| c.causation_id));
            columns.command_times.push(record.map(|c| c.recorded_at));
            columns
                .command_headers
                .push(record.and_then(|c| headers_json(&c.headers)));
            columns
                .outcomes
                .push(record.and_then(|c| serde_json::to_string(&c.outcome).ok()));
            for event in &commit.events {
                columns.owners.push(index);
                columns.events.push(event);
            }
        }
        columns
    }

    /// Binds the columns as the functions' first 22 parameters: all but the tags.
    fn bind_untagged<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        let query = query
            .bind(&self.streams)
            .bind(&self.expected)
            .bind(&self.categories)
            .bind(&self.counts)
            .bind(&self.command_ids)
            .bind(&self.command_types)
            .bind(&self.command_payloads)
            .bind(&self.command_correlations)
            .bind(&self.command_causations)
            .bind(&self.command_times)
            .bind(&self.command_headers)
            .bind(&self.outcomes)
            .bind(&self.owners);
        self.events.bind(query)
    }
}

/// The events of one or more appends as the column arrays the append functions take.
struct EventColumns<'a> {
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<&'a str>,
    ids: Vec<Uuid>,
    correlations: Vec<Option<Uuid>>,
    causations: Vec<Option<Uuid>>,
    commands: Vec<Option<Uuid>>,
    times: Vec<DateTime<Utc>>,
    headers: Vec<Option<String>>,
    /// Each event's tags as a JSON array; `None` while no event has any (bound as NULL).
    tags: Option<Vec<Option<String>>>,
}

impl<'a> EventColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            correlations: Vec::with_capacity(n),
            causations: Vec::with_capacity(n),
            commands: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            tags: None,
        }
    }

    fn push(&mut self, event: &'a NewEvent) {
        self.types.push(event.event_type.as_str());
        self.schema_versions.push(i32::from(event.schema_version));
        self.payloads.push(event.payload.as_str());
        self.ids.push(event.metadata.event_id);
        self.correlations.push(event.metadata.correlation_id);
        self.causations.push(event.metadata.causation_id);
        self.commands.push(event.metadata.command_id);
        self.times.push(event.metadata.recorded_at);
        self.headers.push(headers_json(&event.metadata.headers));
        if !event.tags.is_empty() && self.tags.is_none() {
            self.tags = Some(vec![None; self.types.len() - 1]);
        }
        if let Some(tags) = &mut self.tags {
            tags.push(
                (!event.tags.is_empty())
                    .then(|| serde_json::to_string(&event.tags).unwrap_or_default()),
            );
        }
    }

    /// Binds the columns as the next nine parameters, in the functions' order.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.ids)
            .bind(&self.correlations)
            .bind(&self.causations)
            .bind(&self.commands)
            .bind(&self.times)
            .bind(&self.headers)
    }
}

/// Binds a command record's columns after its id, as the next seven parameters (all NULL
/// without one), in the append statements' order.
fn bind_record<'q>(
    query: PgQuery<'q>,
    record: Option<&'q CommandRecord>,
    headers: Option<&'q str>,
    outcome: Option<&'q str>,
) -> PgQuery<'q> {
    query
        .bind(record.map(|c| c.command_type.as_str()))
        .bind(record.map(|c| c.payload.as_str()))
        .bind(record.and_then(|c| c.correlation_id))
        .bind(record.and_then(|c| c.causation_id))
        .bind(record.map(|c| c.recorded_at))
        .bind(headers)
        .bind(outcome)
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Which way an append goes: through the batcher, or straight to the server by its caller.
/// A lone writer gains nothing from the batcher but pays two hops between tasks for it
/// (measured 2–5 % of a command), so an append commits by its caller when no other append is
/// under way and the batcher's last batch was not shared; under concurrent writers every
/// append goes through the batcher, whose shared commits are the point. Either way each
/// stream's appends keep their order: an append skips the queue only when it is empty.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Appends between their call and their answer, whichever way they went.
    in_flight: AtomicUsize,
    /// Whether the batcher's last batch held more than one append.
    shared: AtomicBool,
}

impl Traffic {
    /// Counts an append in until the guard drops; `true` when it may commit by itself.
    pub(crate) fn enter(&self) -> (InFlight<'_>, bool) {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let alone = before == 0 && !self.shared.load(Ordering::Acquire);
        (InFlight(self), alone)
    }
}

/// An append counted in [`Traffic`], until dropped.
pub(crate) struct InFlight<'a>(&'a Traffic);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An append waiting for the batcher.
pub(crate) struct Pending {
    pub(crate) commit: Commit,
    pub(crate) reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Commits every append waiting in `pending` together: one round trip, one transaction, one
/// sync of PostgreSQL's log for all of them. One batch at a time: appends arriving meanwhile
/// wait and form the next batch, and each stream's appends commit in the order they came.
/// (Several batches in flight measured no faster, their log syncs no longer shared, and could
/// race each other for a stream's version.) If a batch loses a race to another connection
/// for a version, its appends are tried again one by one, so each still gets its own answer.
///
/// Writers answered by one batch come back together, each after its own round trip to load
/// its next aggregate. Taking whoever came first at once split them into a batch of one or
/// two and a batch of the rest, two log syncs where one would do (16 writers averaged 7.5
/// appends a batch). So when fewer appends wait than the last batch carried, the batcher
/// lingers for the rest, at most as long as the last commit took (and never over
/// [`MAX_LINGER`]): waiting for them costs less than the extra commit. A lone writer never
/// waits (its last batch was itself), and a writer whose peers went quiet waits once.
pub(crate) async fn run_batcher(
    appender: Appender,
    traffic: Arc<Traffic>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
) {
    let mut held = VecDeque::new();
    let mut last_batch = 0;
    let mut last_commit = Duration::ZERO;
    loop {
        if held.is_empty() {
            let Some(first) = pending.recv().await else {
                return;
            };
            held.push_back(first);
        }
        while held.len() < 2 * MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => held.push_back(next),
                Err(_) => break,
            }
        }
        if held.len() < last_batch {
            let deadline = tokio::time::Instant::now() + last_commit.min(MAX_LINGER);
            while held.len() < last_batch {
                match tokio::time::timeout_at(deadline, pending.recv()).await {
                    Ok(Some(next)) => held.push_back(next),
                    // Closed (what is held still commits) or waited long enough.
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let batch = take_batch(&mut held);
        last_batch = batch.len();
        traffic.shared.store(last_batch > 1, Ordering::Release);
        #[expect(clippy::cast_precision_loss, reason = "a batch is at most MAX_BATCH")]
        metrics::histogram!(cqrs_core::metric::GROUP_COMMIT_SIZE, "store" => "postgres")
            .record(last_batch as f64);
        let started = Instant::now();
        commit_batch(&appender, batch).await;
        last_commit = started.elapsed();
    }
}

/// The longest the batcher waits for the writers of its last batch to come back.
const MAX_LINGER: Duration = Duration::from_millis(1);

/// Takes the next batch from `held`, in arrival order: at most [`MAX_BATCH`] appends and
/// [`MAX_EVENTS_PER_TRANSACTION`] events, and never two appends of one stream or one command
/// id, whose checks must each see the other's effect. What is left waits, in order, for the
/// next batch; an append left behind holds back later appends of its stream, so each stream's
/// appends still commit in the order they came.
fn take_batch(held: &mut VecDeque<Pending>) -> Vec<Pending> {
    let mut batch = Vec::with_capacity(MAX_BATCH.min(held.len()));
    let mut rest = VecDeque::new();
    let mut streams = HashSet::new();
    let mut commands = HashSet::new();
    let mut events = 0;
    for waiting in held.drain(..) {
        let commit = &waiting.commit;
        let new_stream = streams.insert(commit.stream.clone());
        let new_command = commit
            .command
            .as_ref()
            .is_none_or(|c| commands.insert(c.command_id));
        let fits = batch.is_empty()
            || (batch.len() < MAX_BATCH
                && events + commit.events.len() <= MAX_EVENTS_PER_TRANSACTION);
        if new_stream && new_command && fits {
            events += commit.events.len();
            batch.push(waiting);
        } else {
            rest.push_back(waiting);
        }
    }
    *held = rest;
    batch
}

async fn commit_batch(appender: &Appender, batch: Vec<Pending>) {
    // A lone append goes through the per-append statement: it binds scalars rather than
    // arrays, and it is the one path that refuses an append too big for one transaction
    // (`take_batch` only puts appends together when they fit).
    if batch.len() > 1 {
        let commits: Vec<&Commit> = batch.iter().map(|p| &p.commit).collect();
        match appender.append_many(&commits).await {
            Ok(results) => {
                for (waiting, result) in batch.into_iter().zip(results) {
                    let _ = waiting.reply.send(result);
                }
                return;
            }
            // Another connection took a version: nothing was written, so each append is
            // tried again alone below and gets its own answer.
            Err(err) if unique_violation(&err).is_some() => {}
            // Whether the batch committed is unknown (the connection died, say): trying again
            // could append twice, so every caller hears of the failure.
            Err(err) => {
                let message = err.to_string();
                for waiting in batch {
                    let _ = waiting
                        .reply
                        .send(Err(StoreError::Backend(message.clone().into())));
                }
                return;
            }
        }
    }
    let singles = batch.into_iter().map(|waiting| async move {
        let result = appender.commit_alone(&waiting.commit).await;
        let _ = waiting.reply.send(result);
    });
    futures::future::join_all(singles).await;
}

#[cfg(test)]
mod tests {
    use cqrs_core::{CommandRecord, Headers, Json, NewEvent, Outcome};

    use super::*;

    fn pending(stream: &str, events: usize, command: Option<u128>) -> Pending {
        let stream = StreamId::new(stream).unwrap();
        let mut commit = Commit::new(
            stream.clone(),
            ExpectedVersion::Any,
            (0..events)
                .map(|_| NewEvent::new("e", Json::null()))
                .collect(),
        );
        if let Some(id) = command {
            commit = commit.with_command(CommandRecord {
                command_id: uuid::Uuid::from_u128(id),
                command_type: "c".into(),
                target: stream,
                payload: Json::null(),
                correlation_id: None,
                causation_id: None,
                recorded_at: chrono::Utc::now(),
                headers: Headers::new(),
                outcome: Outcome::Accepted {
                    version: Version::new(1),
                    events: 1,
                },
            });
        }
        Pending {
            commit,
            reply: oneshot::channel().0,
        }
    }

    fn streams(batch: &[Pending]) -> Vec<&str> {
        batch.iter().map(|p| p.commit.stream.as_str()).collect()
    }

    #[test]
    fn a_stream_or_command_id_appears_once_per_batch_and_order_is_kept() {
        let mut held: VecDeque<Pending> = [
            pending("a-1", 1, Some(1)),
            pending("b-1", 1, None),
            pending("a-1", 1, None),
            pending("c-1", 1, Some(1)),
            pending("d-1", 1, None),
            pending("a-1", 1, None),
        ]
        .into();
        let first = take_batch(&mut held);
        assert_eq!(streams(&first), ["a-1", "b-1", "d-1"]);
        let second = take_batch(&mut held);
        assert_eq!(streams(&second), ["a-1", "c-1"]);
        let third = take_batch(&mut held);
        assert_eq!(streams(&third), ["a-1"]);
        assert!(held.is_empty());
    }

    #[test]
    fn an_append_left_behind_for_size_holds_back_later_appends_of_its_stream() {
        let mut held: VecDeque<Pending> = [
            pending("a-1", MAX_EVENTS_PER_TRANSACTION - 1, None),
            pending("b-1", 2, None),
            pending("c-1", 1, None),
            pending("b-1", 1, None),
        ]
        .into();
        assert_eq!(streams(&take_batch(&mut held)), ["a-1", "c-1"]);
        assert_eq!(streams(&take_batch(&mut held)), ["b-1"]);
        assert_eq!(streams(&take_batch(&mut held)), ["b-1"]);
    }

    #[test]
    fn a_batch_takes_at_most_max_batch_appends_and_a_lone_giant_goes_alone() {
        let mut held: VecDeque<Pending> = (0..MAX_BATCH + 3)
            .map(|i| pending(&format!("s-{i}"), 1, None))
            .collect();
        assert_eq!(take_batch(&mut held).len(), MAX_BATCH);
        assert_eq!(take_batch(&mut held).len(), 3);
        let mut held: VecDeque<Pending> = [
            pending("giant-1", MAX_EVENTS_PER_TRANSACTION + 1, None),
            pending("small-1", 1, None),
        ]
        .into();
        assert_eq!(streams(&take_batch(&mut held)), ["giant-1"]);
        assert_eq!(streams(&take_batch(&mut held)), ["small-1"]);
    }
}
