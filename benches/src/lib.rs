//! Shared pieces of the benchmarks: a bank-account aggregate, and the raw SQLite baseline that
//! writes and reads the same rows as the store with no framework.
//!
//! Every benchmark measures the framework beside the raw engine doing the same work at the
//! same durability, in the same run, so that the ratio between them means something on any
//! machine.

pub mod raw_postgres;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use cqrs_core::{Aggregate, ApplyError, DomainEvent};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// A bank account: the workload of every command benchmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The balance, in cents.
    pub balance: i64,
}

/// What an account can be asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AccountCommand {
    /// Open it.
    #[serde(rename = "account.open")]
    Open {
        /// The owner.
        owner: String,
    },
    /// Put money in.
    #[serde(rename = "account.deposit")]
    Deposit {
        /// How much, in cents.
        amount: i64,
    },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// It was opened.
    #[serde(rename = "account.opened")]
    Opened {
        /// The owner.
        owner: String,
    },
    /// Money was put in.
    #[serde(rename = "account.deposited")]
    Deposited {
        /// How much, in cents.
        amount: i64,
    },
}

impl DomainEvent for AccountEvent {}

/// Why an account refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AccountError {
    /// It is open already.
    #[error("the account is open already")]
    AlreadyOpen,
    /// It does not exist.
    #[error("no such account")]
    NotFound,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Id = String;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(
        state: Option<&Self>,
        _id: &String,
        command: AccountCommand,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        match (state, command) {
            (None, AccountCommand::Open { owner }) => Ok(vec![AccountEvent::Opened { owner }]),
            (Some(_), AccountCommand::Open { .. }) => Err(AccountError::AlreadyOpen),
            (None, AccountCommand::Deposit { .. }) => Err(AccountError::NotFound),
            (Some(_), AccountCommand::Deposit { amount }) => {
                Ok(vec![AccountEvent::Deposited { amount }])
            }
        }
    }

    fn apply(state: Option<Self>, event: &AccountEvent) -> Result<Self, ApplyError> {
        match (state, event) {
            (None, AccountEvent::Opened { .. }) => Ok(Account { balance: 0 }),
            (Some(a), AccountEvent::Deposited { amount }) => Ok(Account {
                balance: a.balance + amount,
            }),
            (state, event) => Err(ApplyError::unexpected(state.is_some(), event)),
        }
    }
}

/// The raw baseline: one SQLite connection, the same pragmas and the same event rows as the
/// store (stream, version, type, schema version, payload, ids, time, headers, unique per
/// stream version), and no framework.
pub struct RawSqlite {
    conn: Connection,
}

impl RawSqlite {
    /// Opens `path` with WAL and `synchronous` (`"FULL"` or `"NORMAL"`), as the store does.
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails: a benchmark cannot go on.
    #[must_use]
    pub fn open(path: &Path, synchronous: &str) -> Self {
        let conn = Connection::open(path).expect("open");
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -16000;
             CREATE TABLE IF NOT EXISTS raw_events (
                 position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL,
                 event_type TEXT NOT NULL, schema_version INTEGER NOT NULL, payload TEXT NOT NULL,
                 event_id BLOB NOT NULL, correlation_id BLOB, causation_id BLOB, command_id BLOB,
                 recorded_at INTEGER NOT NULL, headers TEXT, UNIQUE (stream, version));
             CREATE TABLE IF NOT EXISTS raw_commands (
                 sequence INTEGER PRIMARY KEY, command_id BLOB NOT NULL UNIQUE, command_type TEXT NOT NULL,
                 target TEXT NOT NULL, payload TEXT NOT NULL, correlation_id BLOB, causation_id BLOB,
                 recorded_at INTEGER NOT NULL, headers TEXT, outcome TEXT NOT NULL);"
        ))
        .expect("schema");
        Self { conn }
    }

    /// Appends one event in its own transaction: what a hand-written append does.
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails.
    pub fn append_one(&self, stream: &str, version: i64, payload: &str) {
        self.conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        self.insert(stream, version, payload);
        self.conn.execute_batch("COMMIT").expect("commit");
    }

    /// Handles a command the hand-written way, in one transaction: read the stream's version,
    /// insert the next event and the command's record (the same rows the store writes).
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails.
    pub fn command(&self, stream: &str, payload: &str) {
        self.conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let version: Option<i64> = self
            .conn
            .prepare_cached("SELECT max(version) FROM raw_events WHERE stream = ?1")
            .expect("prepare")
            .query_row([stream], |r| r.get(0))
            .optional()
            .expect("select")
            .flatten();
        self.insert(stream, version.unwrap_or(0) + 1, payload);
        let id = uuid::Uuid::now_v7();
        self.conn
            .prepare_cached(
                "INSERT INTO raw_commands (command_id, command_type, target, payload, correlation_id, causation_id, \
                 recorded_at, headers, outcome) VALUES (?1, 'account.open', ?2, ?3, ?1, NULL, ?4, NULL, ?5)",
            )
            .expect("prepare")
            .execute(params![
                id.as_bytes().as_slice(),
                stream,
                r#"{"owner":"ana"}"#,
                1_767_225_600_000_000_i64,
                r#"{"outcome":"accepted","version":1,"events":1}"#
            ])
            .expect("insert");
        self.conn.execute_batch("COMMIT").expect("commit");
    }

    /// Inserts `count` events of `stream` in one transaction (for setting up reads).
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails.
    pub fn fill(&self, stream: &str, first_version: i64, count: i64, payload: &str) {
        self.conn.execute_batch("BEGIN").expect("begin");
        for v in first_version..first_version + count {
            self.insert(stream, v, payload);
        }
        self.conn.execute_batch("COMMIT").expect("commit");
    }

    fn insert(&self, stream: &str, version: i64, payload: &str) {
        let id = uuid::Uuid::now_v7();
        self.conn
            .prepare_cached(
                "INSERT INTO raw_events (stream, version, event_type, schema_version, payload, event_id, \
                 correlation_id, causation_id, command_id, recorded_at, headers) \
                 VALUES (?1, ?2, 'account.deposited', 1, ?3, ?4, ?4, ?4, ?4, ?5, NULL)",
            )
            .expect("prepare")
            .execute(params![stream, version, payload, id.as_bytes().as_slice(), 1_767_225_600_000_000_i64])
            .expect("insert");
    }

    /// Loads a stream the hand-written way: select its rows in order and deserialize each
    /// payload into the event type, folding into the state.
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails.
    #[must_use]
    pub fn load(&self, stream: &str) -> (i64, usize) {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT position, version, event_type, schema_version, payload, event_id, correlation_id, \
                 causation_id, command_id, recorded_at, headers FROM raw_events WHERE stream = ?1 ORDER BY version",
            )
            .expect("prepare");
        let mut rows = select.query([stream]).expect("query");
        let (mut balance, mut n) = (0, 0);
        while let Some(row) = rows.next().expect("row") {
            let payload: String = row.get(4).expect("payload");
            let _id: Vec<u8> = row.get(5).expect("id");
            if let Ok(AccountEvent::Deposited { amount }) =
                cqrs_core::decode_message("account.deposited", &payload)
            {
                balance += amount;
            }
            n += 1;
        }
        (balance, n)
    }

    /// Scans every row in position order, reading every column: the raw sequential scan.
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails.
    #[must_use]
    pub fn scan(&self) -> usize {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT position, stream, version, event_type, schema_version, payload, event_id, correlation_id, \
                 causation_id, command_id, recorded_at, headers FROM raw_events ORDER BY position",
            )
            .expect("prepare");
        let mut rows = select.query([]).expect("query");
        let mut n = 0;
        while let Some(row) = rows.next().expect("row") {
            let _stream: String = row.get(1).expect("stream");
            let _type: String = row.get(3).expect("type");
            let _payload: String = row.get(5).expect("payload");
            let _id: Vec<u8> = row.get(6).expect("id");
            n += 1;
        }
        n
    }
}

/// The in-memory raw baseline: a `Mutex` over a `Vec` of rows (the fields the store keeps
/// for an event) and each stream's row indices, with no framework: what a hand-written
/// in-memory log does. Readers take owned copies of rows, as anything that reads outside the
/// lock must (the SQLite and PostgreSQL raw scans materialize their rows too).
#[derive(Debug, Default)]
pub struct RawMemory {
    log: Mutex<RawLog>,
}

#[derive(Debug, Default)]
struct RawLog {
    rows: Vec<RawRow>,
    streams: HashMap<String, Vec<usize>>,
    commands: HashMap<uuid::Uuid, RawCommand>,
}

/// One event row of [`RawMemory`].
#[derive(Debug, Clone)]
pub struct RawRow {
    /// The stream.
    pub stream: String,
    /// Its version in the stream.
    pub version: u64,
    /// The type name.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u16,
    /// The payload, JSON.
    pub payload: String,
    /// The event's id.
    pub event_id: uuid::Uuid,
    /// When it was recorded.
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug)]
struct RawCommand {
    _target: String,
    _payload: String,
    _outcome: String,
}

impl RawLog {
    fn push(&mut self, stream: &str, version: u64, event_type: &str, payload: &str) {
        let index = self.rows.len();
        self.rows.push(RawRow {
            stream: stream.to_owned(),
            version,
            event_type: event_type.to_owned(),
            schema_version: 1,
            payload: payload.to_owned(),
            event_id: uuid::Uuid::now_v7(),
            recorded_at: chrono::Utc::now(),
        });
        self.streams
            .entry(stream.to_owned())
            .or_default()
            .push(index);
    }
}

impl RawMemory {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RawLog> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `count` events to the new stream `stream` under one lock, refusing a stream
    /// that exists (the store's `NoStream` check).
    ///
    /// # Panics
    ///
    /// Panics if the stream exists: a benchmark writes new streams only.
    pub fn append_new(&self, stream: &str, count: u64, payload: &str) {
        let mut log = self.lock();
        assert!(!log.streams.contains_key(stream), "{stream} exists");
        for version in 1..=count {
            log.push(stream, version, "account.deposited", payload);
        }
    }

    /// Handles a command the hand-written way, under one lock: look up the stream's version,
    /// push the next event and keep the command's record (the same rows the store keeps).
    pub fn command(&self, stream: &str, payload: &str) {
        let mut log = self.lock();
        let version = log.streams.get(stream).map_or(0, Vec::len) as u64;
        log.push(stream, version + 1, "account.opened", payload);
        log.commands.insert(
            uuid::Uuid::now_v7(),
            RawCommand {
                _target: stream.to_owned(),
                _payload: r#"{"owner":"ana"}"#.to_owned(),
                _outcome: r#"{"outcome":"accepted","version":1,"events":1}"#.to_owned(),
            },
        );
    }

    /// Appends `count` events to `stream`, whatever it holds (for setting up reads).
    pub fn fill(&self, stream: &str, count: u64, payload: &str) {
        let mut log = self.lock();
        let first = log.streams.get(stream).map_or(0, Vec::len) as u64 + 1;
        for version in first..first + count {
            log.push(stream, version, "account.deposited", payload);
        }
    }

    /// Loads a stream the hand-written way: copy its rows out of the lock, deserialize each
    /// payload into the event type and fold it into the state.
    #[must_use]
    pub fn load(&self, stream: &str) -> (i64, usize) {
        let rows: Vec<RawRow> = {
            let log = self.lock();
            log.streams
                .get(stream)
                .map(|indices| indices.iter().map(|&i| log.rows[i].clone()).collect())
                .unwrap_or_default()
        };
        let mut balance = 0;
        for row in &rows {
            if let Ok(AccountEvent::Deposited { amount }) =
                cqrs_core::decode_message(&row.event_type, &row.payload)
            {
                balance += amount;
            }
        }
        (balance, rows.len())
    }

    /// Scans every row in order, in pages of 10,000 copied out of the lock: the raw
    /// sequential scan.
    #[must_use]
    pub fn scan(&self) -> u64 {
        let mut from = 0;
        let mut seen = 0;
        loop {
            let page: Vec<RawRow> = {
                let log = self.lock();
                log.rows.iter().skip(from).take(10_000).cloned().collect()
            };
            if page.is_empty() {
                return seen;
            }
            from += page.len();
            seen += page.len() as u64;
        }
    }
}

/// The payload of one deposit, as the framework writes it.
#[must_use]
pub fn deposit_payload() -> String {
    cqrs_core::encode_message(&AccountEvent::Deposited { amount: 100 })
        .expect("encodes")
        .1
        .as_str()
        .to_owned()
}

/// The number of events for the 1M-event benchmarks: `CQRS_BENCH_EVENTS`, or 1,000,000.
#[must_use]
pub fn big_log_size() -> u64 {
    std::env::var("CQRS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Appends `count` deposits to the new stream `stream` in one append: the store side of the
/// append-batch benchmarks.
///
/// # Panics
///
/// Panics if the stream name is invalid or the append fails: a benchmark cannot go on.
pub async fn append_new_stream(
    store: &dyn cqrs_core::EventStore,
    stream: String,
    count: u64,
    payload: &str,
) {
    let stream = cqrs_core::StreamId::new(stream).expect("stream");
    let events = (0..count)
        .map(|_| {
            cqrs_core::NewEvent::new("account.deposited", cqrs_core::Json::from_stored(payload))
        })
        .collect();
    store
        .append(&stream, cqrs_core::ExpectedVersion::NoStream, events)
        .await
        .expect("append");
}

/// A read model that counts events, and its runner over `store` reading pages of 10,000:
/// what the rebuild benchmarks rebuild.
#[must_use]
pub fn counting_projection<S: cqrs_core::EventReader + 'static>(
    store: std::sync::Arc<S>,
) -> (
    std::sync::Arc<cqrs_core::MemoryProjection<u64>>,
    cqrs_core::ProjectionRunner,
) {
    let count = std::sync::Arc::new(cqrs_core::MemoryProjection::new("count", 0u64, |n, _| {
        *n += 1;
        Ok(())
    }));
    let runner = cqrs_core::ProjectionRunner::new(store, count.clone()).with_batch_size(10_000);
    (count, runner)
}

/// The runtime every benchmark runs on: two workers, as many as the machine's cores.
///
/// # Panics
///
/// Panics if tokio cannot start.
#[must_use]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The three stores a cross-store benchmark runs on: in memory, SQLite (a file `file` in
/// `dir`, `synchronous=FULL`) and, where there is one, PostgreSQL.
///
/// # Panics
///
/// Panics if a store cannot open.
pub fn stores(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    file: &str,
) -> Vec<(&'static str, std::sync::Arc<dyn cqrs_core::Storage>)> {
    let sqlite = rt
        .block_on(cqrs_store_sqlite::SqliteEventStore::open(dir.join(file)))
        .expect("store");
    let mut stores: Vec<(&'static str, std::sync::Arc<dyn cqrs_core::Storage>)> = vec![
        (
            "memory",
            std::sync::Arc::new(cqrs_core::InMemoryEventStore::new()),
        ),
        ("sqlite_full", std::sync::Arc::new(sqlite)),
    ];
    if let Some(pg) = postgres_store(rt) {
        stores.push(("postgres", std::sync::Arc::new(pg)));
    }
    stores
}

/// Pages through the whole global log as a reader does, 10,000 events a page; returns how
/// many events it saw.
///
/// # Panics
///
/// Panics if a read fails.
pub async fn read_whole_log(store: &dyn cqrs_core::EventReader) -> u64 {
    let mut from = cqrs_core::Position::START;
    let mut seen = 0u64;
    loop {
        let page = store.read_all(from, 10_000).await.expect("read");
        let Some(last) = page.last() else {
            return seen;
        };
        from = last.position.next();
        seen += page.len() as u64;
    }
}

/// The store's side of a whole-log group, beside the raw scan the caller added: `read_all`
/// over the log (`size` events) and a read model rebuilt from position 0, what a blue/green
/// upgrade pays.
pub fn store_log_benches<S: cqrs_core::EventReader + Clone + 'static>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    store: &S,
    size: u64,
) {
    group.bench_function("store_read_all", |b| {
        b.to_async(rt)
            .iter(|| async { assert_eq!(read_whole_log(store).await, size) });
    });
    let (count, runner) = counting_projection(std::sync::Arc::new(store.clone()));
    group.bench_function("store_projection_rebuild", |b| {
        b.to_async(rt).iter(|| async {
            runner.rebuild().await.expect("rebuild");
            assert_eq!(count.read(|n| *n), size);
        });
    });
}

/// Opens account `id` (a new aggregate): the command of the "new aggregate" benchmarks.
///
/// # Panics
///
/// Panics if the command fails: a benchmark cannot go on.
pub async fn open_account(accounts: &cqrs_core::Repository<Account>, id: String) {
    accounts
        .handle(
            &id,
            AccountCommand::Open {
                owner: "ana".into(),
            },
        )
        .await
        .expect("open");
}

/// Runs `op(n)` for `iters` fresh numbers `n` (taken from `counter`), spread over `tasks`
/// concurrent tasks, and returns the total time: criterion's time per iteration is then the
/// time per operation at that concurrency.
///
/// # Panics
///
/// Panics if an operation panics.
pub async fn in_parallel<F, Fut>(
    iters: u64,
    tasks: u64,
    counter: &std::sync::atomic::AtomicU64,
    op: F,
) -> std::time::Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let share = iters / tasks + u64::from(t < iters % tasks);
            let first = counter.fetch_add(share, std::sync::atomic::Ordering::Relaxed);
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..share {
                    op(first + i).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("task");
    }
    started.elapsed()
}

/// A PostgreSQL store on a fresh database of the throwaway server, with the server's durable
/// defaults, or `None` (with the test support's notice) where there is no PostgreSQL.
///
/// # Panics
///
/// Panics if the server is there but the store cannot open.
pub fn postgres_store(
    rt: &tokio::runtime::Runtime,
) -> Option<cqrs_store_postgres::PostgresEventStore> {
    let server =
        cqrs_store_postgres::testing::server(cqrs_store_postgres::testing::Durability::Durable)?;
    let url = rt.block_on(server.fresh_database());
    Some(
        rt.block_on(cqrs_store_postgres::PostgresEventStore::connect(&url))
            .expect("store"),
    )
}

/// A PostgreSQL store and a raw sqlx pool of `connections` on one fresh database of the
/// throwaway server (with the raw tables created), or `None` where there is no PostgreSQL.
///
/// # Panics
///
/// Panics if the server is there but the store or the pool cannot open.
pub fn postgres_pair(
    rt: &tokio::runtime::Runtime,
    connections: u32,
) -> Option<(cqrs_store_postgres::PostgresEventStore, sqlx::PgPool)> {
    let server =
        cqrs_store_postgres::testing::server(cqrs_store_postgres::testing::Durability::Durable)?;
    let url = rt.block_on(server.fresh_database());
    let store = rt
        .block_on(cqrs_store_postgres::PostgresEventStore::connect(&url))
        .expect("store");
    let raw = rt
        .block_on(
            sqlx::postgres::PgPoolOptions::new()
                // The store's pool settings: no ping before each use.
                .test_before_acquire(false)
                .max_connections(connections)
                .connect(&url),
        )
        .expect("raw pool");
    rt.block_on(raw_postgres::create(&raw));
    Some((store, raw))
}
