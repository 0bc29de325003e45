//! Reads by query and conditional commits. Correct under concurrency by locks keyed by tag
//! (docs/adr/0011-dcb-on-postgres-locks-keyed-by-tag.md): a writer of a tagged event holds its
//! tags shared until it commits; a conditional commit holds the first tag of each of its
//! query's items exclusively while it checks and writes, so every event that could break its
//! condition is either committed (and seen) or not yet begun.

use async_trait::async_trait;
use cqrs_core::store::{limit_to_i64, to_i64};
use cqrs_core::{
    Appended, Commit, ConditionalCommit, DcbStore, EventQuery, ExpectedVersion, Position,
    RecordedEvent, StoreError, StreamId,
};
use sqlx::{AssertSqlSafe, PgConnection};

use crate::MAX_EVENTS_PER_TRANSACTION;
use crate::batch::{Attempt, ensure_new_command};
use crate::error::backend;
use crate::sql::{EVENT_COLUMNS, HORIZON};
use crate::store::PostgresEventStore;

/// A value to bind to a query built at run time.
enum Arg {
    Text(String),
    Texts(Vec<String>),
    Int(i64),
}

/// SQL built at run time, numbering its parameters as they are pushed.
#[derive(Default)]
struct Builder {
    args: Vec<Arg>,
}

impl Builder {
    fn push(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn bind(
        self,
        sql: &str,
    ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let mut query = sqlx::query(AssertSqlSafe(sql.to_owned()));
        for arg in self.args {
            query = match arg {
                Arg::Text(text) => query.bind(text),
                Arg::Texts(texts) => query.bind(texts),
                Arg::Int(n) => query.bind(n),
            };
        }
        query
    }

    /// A `SELECT` of the positions, from `from` on, of events matching `query`, at most
    /// `limit` per item.
    ///
    /// An item with tags starts from the tag index (its first tag's entries from `from` on, in
    /// position order) and keeps the positions that also carry its other tags and, if it
    /// names types, are of one of them: it reads only its first tag's events. An item with
    /// types only, and [`EventQuery::all`], read the log from `from` on.
    fn positions(&mut self, schema: &str, query: &EventQuery, from: i64, limit: i64) -> String {
        let Some(items) = query.alternatives() else {
            let (from, limit) = (self.push(Arg::Int(from)), self.push(Arg::Int(limit)));
            return format!(
                "(SELECT position FROM {schema}.events WHERE position >= {from} ORDER BY position LIMIT {limit})"
            );
        };
        let mut selects = Vec::with_capacity(items.len());
        for item in items {
            let select = match item.tags.split_first() {
                Some((first, others)) => {
                    let first = self.push(Arg::Text(first.as_str().to_owned()));
                    let from = self.push(Arg::Int(from));
                    let mut sql = format!(
                        "SELECT t.position FROM {schema}.event_tags t WHERE t.tag = {first} AND t.position >= {from}"
                    );
                    for tag in others {
                        let tag = self.push(Arg::Text(tag.as_str().to_owned()));
                        sql.push_str(&format!(
                            " AND EXISTS (SELECT 1 FROM {schema}.event_tags o WHERE o.tag = {tag} AND o.position = t.position)"
                        ));
                    }
                    if !item.types.is_empty() {
                        let types = self.push(Arg::Texts(item.types.clone()));
                        sql.push_str(&format!(
                            " AND EXISTS (SELECT 1 FROM {schema}.events e WHERE e.position = t.position \
                             AND e.event_type = ANY({types}::text[]))"
                        ));
                    }
                    sql.push_str(" ORDER BY t.position");
                    sql
                }
                None => {
                    let from = self.push(Arg::Int(from));
                    let types = self.push(Arg::Texts(item.types.clone()));
                    format!(
                        "SELECT position FROM {schema}.events WHERE position >= {from} \
                         AND event_type = ANY({types}::text[]) ORDER BY position"
                    )
                }
            };
            let limit = self.push(Arg::Int(limit));
            selects.push(format!("({select} LIMIT {limit})"));
        }
        selects.join(" UNION ")
    }
}

/// Whether a condition on `query` must hold the whole log's writers off: one that matches
/// every event, or has an item without a tag, has no tag to lock by.
fn needs_the_whole_log(query: &EventQuery) -> bool {
    query
        .alternatives()
        .is_none_or(|items| items.iter().any(|item| item.tags.is_empty()))
}

#[async_trait]
impl DcbStore for PostgresEventStore {
    /// Like `read_all`, only what lies below the gap-safety horizon: a decision never reads
    /// past an event that an earlier transaction could still commit before.
    async fn read_query(
        &self,
        query: &EventQuery,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        query.validate()?;
        let schema = &self.inner.sql.schema;
        let (from, limit) = (to_i64(from.get())?, limit_to_i64(limit));
        let mut builder = Builder::default();
        let positions = builder.positions(schema, query, from, limit);
        let limit = builder.push(Arg::Int(limit));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {schema}.events WHERE position IN ({positions}) \
             AND position < {HORIZON} ORDER BY position LIMIT {limit}"
        );
        self.read_events(builder.bind(&sql)).await
    }

    /// One transaction: the log's write lock (exclusive of writers if the condition has an
    /// item without a tag), the tags' locks in one order, then the command id, the condition
    /// and each stream's version checked, and the events written.
    async fn commit_if(&self, commit: ConditionalCommit) -> Result<Vec<Appended>, StoreError> {
        commit.validate()?;
        if commit.len() > MAX_EVENTS_PER_TRANSACTION {
            return Err(StoreError::Invalid(format!(
                "{} events in one commit; at most {MAX_EVENTS_PER_TRANSACTION}",
                commit.len()
            )));
        }
        // An append at any version can lose its version to a writer on the same stream that
        // holds none of this commit's locks; the transaction is then gone, so it starts over.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.inner.pool.begin().await.map_err(backend)?;
            match self.commit_if_in(&mut tx, &commit).await? {
                Ok(appended) => {
                    tx.commit().await.map_err(backend)?;
                    // Subscribers in this process at once; other processes by the NOTIFY sent
                    // within.
                    self.inner.notifier.notify();
                    return Ok(appended);
                }
                Err(raced) => {
                    drop(tx);
                    if !raced.retry || attempt >= 32 {
                        return Err(self.conflict(raced).await);
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// A stream this commit could not append to in its transaction.
struct Raced {
    stream: StreamId,
    expected: ExpectedVersion,
    /// Whether a new transaction may succeed: the append was at any version and another
    /// writer took it, or a younger transaction wrote the stream's head.
    retry: bool,
}

impl PostgresEventStore {
    async fn conflict(&self, raced: Raced) -> StoreError {
        match self.inner.appender.stream_version(&raced.stream).await {
            Ok(actual) => StoreError::Conflict {
                stream: raced.stream,
                expected: raced.expected,
                actual,
            },
            Err(err) => err,
        }
    }

    /// The commit within `conn`'s transaction; `Ok(Err(_))` if a stream's version was taken
    /// meanwhile (the transaction is then aborted).
    async fn commit_if_in(
        &self,
        conn: &mut PgConnection,
        commit: &ConditionalCommit,
    ) -> Result<Result<Vec<Appended>, Raced>, StoreError> {
        let schema = self.inner.sql.schema.clone();
        let whole_log = commit
            .condition
            .as_ref()
            .is_some_and(|c| needs_the_whole_log(&c.query));
        let mode = if whole_log {
            "SHARE ROW EXCLUSIVE"
        } else {
            "ROW EXCLUSIVE"
        };
        sqlx::raw_sql(AssertSqlSafe(format!(
            "LOCK TABLE {schema}.events IN {mode} MODE"
        )))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
        let mut tags = Vec::new();
        let mut exclusive = Vec::new();
        if let Some(items) = commit
            .condition
            .as_ref()
            .and_then(|c| c.query.alternatives())
        {
            // Every event an item matches carries the item's first tag, and its writer holds
            // that tag's lock shared until it commits.
            for first in items.iter().filter_map(|item| item.tags.first()) {
                tags.push(first.as_str().to_owned());
                exclusive.push(true);
            }
        }
        for event in commit.appends.iter().flat_map(|a| &a.events) {
            for tag in &event.tags {
                tags.push(tag.as_str().to_owned());
                exclusive.push(false);
            }
        }
        if !tags.is_empty() {
            sqlx::query(AssertSqlSafe(format!("SELECT {schema}.lock_tags($1, $2)")))
                .bind(&tags)
                .bind(&exclusive)
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
        }
        if let Some(command) = &commit.command {
            ensure_new_command(conn, &self.inner.sql, command.command_id).await?;
        }
        if let Some(condition) = &commit.condition {
            let after = condition.after.map_or(Ok(0), |p| to_i64(p.get()))?;
            let mut builder = Builder::default();
            // Everything committed counts here, not only what lies below the horizon: the
            // locks leave no writer of a matching event running.
            let positions =
                builder.positions(&schema, &condition.query, after.saturating_add(1), 1);
            let found: Option<i64> = builder
                .bind(&format!("SELECT min(position) FROM ({positions}) m"))
                .fetch_one(&mut *conn)
                .await
                .and_then(|row| sqlx::Row::try_get(&row, 0))
                .map_err(backend)?;
            if let Some(found) = found {
                return Err(StoreError::ConditionFailed {
                    after: condition.after,
                    found: Position::new(found.unsigned_abs()),
                });
            }
        }
        let mut command = commit.command.clone();
        let mut appended = Vec::with_capacity(commit.appends.len());
        for append in &commit.appends {
            let mut one = Commit::new(
                append.stream.clone(),
                append.expected,
                append.events.clone(),
            );
            if command.as_ref().is_some_and(|c| c.target == one.stream) {
                one.command = command.take();
            }
            match self.inner.appender.try_commit(conn, &one, true).await? {
                Attempt::Done(done) => appended.push(done),
                Attempt::Raced => {
                    return Ok(Err(Raced {
                        retry: one.expected == ExpectedVersion::Any,
                        stream: one.stream,
                        expected: one.expected,
                    }));
                }
                // Only the transaction's id was too old: a new one may append.
                Attempt::Younger => {
                    return Ok(Err(Raced {
                        retry: true,
                        stream: one.stream,
                        expected: one.expected,
                    }));
                }
            }
        }
        Ok(Ok(appended))
    }
}
