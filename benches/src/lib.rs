//! Shared pieces of the benchmarks: a bank-account aggregate, and the raw SQLite baseline that
//! writes and reads the same rows as the store with no framework.
//!
//! Every benchmark measures the framework beside the raw engine doing the same work at the
//! same durability, in the same run, so that the ratio between them means something on any
//! machine.

pub mod interleave;
pub mod raw_nats;
pub mod raw_postgres;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use cqrs_core::{Aggregate, ApplyError, DomainEvent};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

/// A bank account: the workload of every command benchmark.
///
/// Its events are shaped like a real application's: a deposit carries about 200 bytes of
/// JSON (amount, currency, reference, counterparty, IBAN, memo, channel), and every command
/// carries about 100 bytes of metadata (correlation id, causation id, user).
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
    Open(Opening),
    /// Put money in.
    #[serde(rename = "account.deposit")]
    Deposit(Deposit),
}

/// An account's opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    /// The owner.
    pub owner: String,
    /// The owner's email.
    pub email: String,
    /// The account's currency.
    pub currency: String,
    /// The branch that opened it.
    pub branch: String,
    /// The pricing tier.
    pub tier: String,
}

/// A deposit as a bank records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    /// How much, in cents.
    pub amount: i64,
    /// The currency.
    pub currency: String,
    /// The payer's reference.
    pub reference: String,
    /// Who paid.
    pub counterparty: String,
    /// The payer's account.
    pub iban: String,
    /// The payer's memo.
    pub memo: String,
    /// How the money came.
    pub channel: String,
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// It was opened.
    #[serde(rename = "account.opened")]
    Opened(Opening),
    /// Money was put in.
    #[serde(rename = "account.deposited")]
    Deposited(Deposit),
}

impl DomainEvent for AccountEvent {}

impl AccountCommand {
    /// The opening every benchmark uses.
    #[must_use]
    pub fn open() -> Self {
        Self::Open(Opening::new())
    }

    /// A deposit of `amount` cents.
    #[must_use]
    pub fn deposit(amount: i64) -> Self {
        Self::Deposit(Deposit::of(amount))
    }
}

impl AccountEvent {
    /// The event [`AccountCommand::open`] causes.
    #[must_use]
    pub fn opened() -> Self {
        Self::Opened(Opening::new())
    }

    /// A deposit of `amount` cents.
    #[must_use]
    pub fn deposited(amount: i64) -> Self {
        Self::Deposited(Deposit::of(amount))
    }
}

impl Opening {
    /// The realistic opening every benchmark uses.
    #[must_use]
    pub fn new() -> Self {
        Self {
            owner: "Ana Lucía Fernández-Ortega".into(),
            email: "ana.fernandez-ortega@contoso.example".into(),
            currency: "EUR".into(),
            branch: "Amsterdam Zuidas, Gustav Mahlerlaan 10".into(),
            tier: "business-plus".into(),
        }
    }
}

impl Default for Opening {
    fn default() -> Self {
        Self::new()
    }
}

impl Deposit {
    /// A realistic deposit of `amount` cents.
    #[must_use]
    pub fn of(amount: i64) -> Self {
        Self {
            amount,
            currency: "EUR".into(),
            reference: "INV-2026-004211-7F3K2Q".into(),
            counterparty: "Contoso Ltd".into(),
            iban: "NL91ABNA0417164300".into(),
            memo: "Registration fee, DevConf 2026, order 7F3K2Q".into(),
            channel: "sepa_credit_transfer".into(),
        }
    }
}

/// The user every benchmark command runs as: the `user` header of the store's metadata, and
/// the `user` field of the minimal store's.
pub const USER: &str = "ana.fernandez";

/// The context every benchmark command runs in: a fresh command id and correlation id, and
/// the user, so the store keeps about as much metadata per event as the minimal store.
#[must_use]
pub fn command_context() -> cqrs_core::CommandContext {
    cqrs_core::CommandContext::new()
        .with_correlation_id(uuid::Uuid::now_v7())
        .with_header("user", USER)
}

/// Metadata of an event appended without a repository: correlation and causation ids and the
/// user, as a command would leave them.
#[must_use]
pub fn event_metadata() -> cqrs_core::Metadata {
    let command = uuid::Uuid::now_v7();
    let mut metadata = cqrs_core::Metadata::new();
    metadata.correlation_id = Some(uuid::Uuid::now_v7());
    metadata.causation_id = Some(command);
    metadata.command_id = Some(command);
    metadata.headers.insert("user".into(), USER.into());
    metadata
}

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
            (None, AccountCommand::Open(opening)) => Ok(vec![AccountEvent::Opened(opening)]),
            (Some(_), AccountCommand::Open(_)) => Err(AccountError::AlreadyOpen),
            (None, AccountCommand::Deposit(_)) => Err(AccountError::NotFound),
            (Some(_), AccountCommand::Deposit(deposit)) => {
                Ok(vec![AccountEvent::Deposited(deposit)])
            }
        }
    }

    fn apply(state: Option<Self>, event: &AccountEvent) -> Result<Self, ApplyError> {
        match (state, event) {
            (None, AccountEvent::Opened(_)) => Ok(Account { balance: 0 }),
            (Some(a), AccountEvent::Deposited(deposit)) => Ok(Account {
                balance: a.balance + deposit.amount,
            }),
            (state, event) => Err(ApplyError::unexpected(state.is_some(), event)),
        }
    }
}

/// The raw baseline of DESIGN.md §5: a minimal hand-written event store on rusqlite, with no
/// framework.
///
/// One row per event (global position, stream, version, type, payload, metadata as JSON text,
/// recorded-at) and `UNIQUE (stream, version)`; a single-event append is one autocommit
/// `INSERT` at the expected version + 1 (the unique index refuses a stale writer); a load is
/// one indexed `SELECT` on the calling thread, each payload decoded and folded; a command loads,
/// decides, and appends at the loaded version. It keeps no message log, no command ids and no
/// snapshots: whatever the store adds counts against the store.
pub struct RawSqlite {
    conn: Connection,
}

/// An event as the minimal store writes it.
#[derive(Debug, Clone)]
pub struct RawEvent {
    /// The type name.
    pub event_type: &'static str,
    /// The payload, JSON text.
    pub payload: String,
    /// The metadata, JSON text: correlation id, causation id, user.
    pub metadata: String,
}

/// A stale expected version: another writer got there first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawConflict;

/// One row of the minimal store's log, every field copied out.
#[derive(Debug, Clone)]
pub struct RawLogRow {
    /// The global position.
    pub position: i64,
    /// The stream.
    pub stream: String,
    /// The version in the stream.
    pub version: i64,
    /// The type name.
    pub event_type: String,
    /// The payload, JSON text.
    pub payload: String,
    /// The metadata, JSON text.
    pub metadata: String,
    /// When it was recorded, in microseconds since the epoch.
    pub recorded_at: i64,
}

#[derive(Serialize)]
struct RawMetadata<'a> {
    correlation_id: uuid::Uuid,
    causation_id: uuid::Uuid,
    user: &'a str,
}

impl RawEvent {
    /// What `command` on an account in `state` appends, as the minimal store writes it.
    ///
    /// # Panics
    ///
    /// Panics if the account rejects the command: benchmarks send only accepted ones.
    #[must_use]
    pub fn decide(state: Option<&Account>, command: &AccountCommand) -> Vec<Self> {
        Account::handle(state, &String::new(), command.clone())
            .expect("accepted")
            .iter()
            .map(Self::new)
            .collect()
    }

    /// `event` encoded as the minimal store keeps it, caused by a fresh command in a fresh
    /// flow, by [`USER`].
    ///
    /// # Panics
    ///
    /// Panics if the event does not encode.
    #[must_use]
    pub fn new(event: &AccountEvent) -> Self {
        let (event_type, payload) = cqrs_core::encode_message(event).expect("encodes");
        let metadata = serde_json::to_string(&RawMetadata {
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: uuid::Uuid::now_v7(),
            user: USER,
        })
        .expect("encodes");
        Self {
            event_type,
            payload: payload.as_str().to_owned(),
            metadata,
        }
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl RawSqlite {
    /// Opens `path` with WAL and `synchronous` (`"FULL"` or `"NORMAL"`), the store's pragmas.
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
             CREATE TABLE IF NOT EXISTS events (
                 position INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL,
                 event_type TEXT NOT NULL, payload TEXT NOT NULL, metadata TEXT NOT NULL,
                 recorded_at INTEGER NOT NULL, UNIQUE (stream, version));"
        ))
        .expect("schema");
        Self { conn }
    }

    /// Appends `events` to `stream` if it is at `expected`: one autocommit `INSERT` for one
    /// event, one transaction for several. Returns the new version.
    ///
    /// # Errors
    ///
    /// [`RawConflict`] if the stream is past `expected`.
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails otherwise.
    pub fn append(
        &self,
        stream: &str,
        expected: i64,
        events: &[RawEvent],
    ) -> Result<i64, RawConflict> {
        if let [event] = events {
            return self
                .insert(stream, expected + 1, event)
                .map(|()| expected + 1);
        }
        self.conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for (i, event) in events.iter().enumerate() {
            if let Err(conflict) = self.insert(
                stream,
                expected + 1 + i64::try_from(i).expect("small"),
                event,
            ) {
                self.conn.execute_batch("ROLLBACK").expect("rollback");
                return Err(conflict);
            }
        }
        self.conn.execute_batch("COMMIT").expect("commit");
        Ok(expected + i64::try_from(events.len()).expect("small"))
    }

    fn insert(&self, stream: &str, version: i64, event: &RawEvent) -> Result<(), RawConflict> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO events (stream, version, event_type, payload, metadata, recorded_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .expect("prepare")
            .execute(params![
                stream,
                version,
                event.event_type,
                event.payload,
                event.metadata,
                now_micros()
            ]);
        match inserted {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                Err(RawConflict)
            }
            Err(e) => panic!("insert: {e}"),
        }
    }

    /// Loads account `stream`: its rows in version order, each payload decoded and folded.
    /// Returns the state and the stream's version.
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails or the history does not fold.
    #[must_use]
    pub fn load(&self, stream: &str) -> (Option<Account>, i64) {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT version, event_type, payload FROM events WHERE stream = ?1 ORDER BY version",
            )
            .expect("prepare");
        let mut rows = select.query([stream]).expect("query");
        let (mut state, mut version) = (None, 0);
        while let Some(row) = rows.next().expect("row") {
            version = row.get(0).expect("version");
            let event_type = row.get_ref(1).expect("type").as_str().expect("text");
            let payload = row.get_ref(2).expect("payload").as_str().expect("text");
            let event: AccountEvent =
                cqrs_core::decode_message(event_type, payload).expect("decode");
            state = Some(Account::apply(state, &event).expect("apply"));
        }
        (state, version)
    }

    /// Handles `command` for account `stream` the hand-written way: load, decide, append at the
    /// loaded version (retried on a conflict). Returns the new version.
    ///
    /// # Panics
    ///
    /// Panics if the account rejects the command or SQLite fails.
    pub fn command(&self, stream: &str, command: &AccountCommand) -> i64 {
        loop {
            let (state, version) = self.load(stream);
            let events = RawEvent::decide(state.as_ref(), command);
            if let Ok(version) = self.append(stream, version, &events) {
                return version;
            }
        }
    }

    /// Appends `count` events to `stream` from version `first` in one transaction (for setting
    /// up loads and commands): version 1 opens the account, the others are deposits.
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails or a version exists.
    pub fn fill(&self, stream: &str, first: i64, count: i64) {
        let opened = RawEvent::new(&AccountEvent::opened());
        let deposit = RawEvent::new(&AccountEvent::deposited(100));
        self.conn.execute_batch("BEGIN").expect("begin");
        for v in first..first + count {
            let event = if v == 1 { &opened } else { &deposit };
            self.insert(stream, v, event).expect("a new version");
        }
        self.conn.execute_batch("COMMIT").expect("commit");
    }

    /// Replays the whole log in position order, each row's fields copied out, in pages of
    /// 10,000 as a reader that hands pages on does. Returns how many rows it saw.
    ///
    /// # Panics
    ///
    /// Panics if SQLite fails.
    #[must_use]
    pub fn scan(&self) -> u64 {
        let mut select = self
            .conn
            .prepare_cached(
                "SELECT position, stream, version, event_type, payload, metadata, recorded_at \
                 FROM events WHERE position > ?1 ORDER BY position LIMIT 10000",
            )
            .expect("prepare");
        let (mut from, mut seen) = (0_i64, 0);
        loop {
            let page: Vec<RawLogRow> = select
                .query_map([from], |row| {
                    Ok(RawLogRow {
                        position: row.get(0)?,
                        stream: row.get(1)?,
                        version: row.get(2)?,
                        event_type: row.get(3)?,
                        payload: row.get(4)?,
                        metadata: row.get(5)?,
                        recorded_at: row.get(6)?,
                    })
                })
                .expect("scan")
                .collect::<Result<_, _>>()
                .expect("row");
            let Some(last) = page.last() else {
                return seen;
            };
            from = last.position;
            seen += page.len() as u64;
        }
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
            if let Ok(AccountEvent::Deposited(deposit)) =
                cqrs_core::decode_message(&row.event_type, &row.payload)
            {
                balance += deposit.amount;
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
    cqrs_core::encode_message(&AccountEvent::deposited(100))
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
                .with_metadata(event_metadata())
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

/// Flushes every dirty page of the machine to disk (`sync`) before a measurement that syncs.
///
/// A measurement that pays for `fsync` also pays for whatever else the kernel must write back
/// at that moment: the files a build just wrote, a log filled or deleted by the benchmark
/// before. Measured on this project's 2-core VM, the first SQLite FULL append of a full run
/// (right after `cargo bench` built everything) took 195 µs per append, and the same append
/// 153 µs later in the run and 123–128 µs alone, while the minimal store, measured first,
/// held at 127–136 µs in all three. Each side of a comparison therefore starts from a flushed
/// disk; the flush is paid before the timer starts, and both sides pay it alike.
///
/// It also empties SQLite's page caches, for the same reason: what an earlier measurement
/// left in them must not slow the next. SQLite as rusqlite builds it
/// (`SQLITE_ENABLE_MEMORY_MANAGEMENT`) keeps one pool of cached pages for every connection
/// of the process, each connection's `cache_size` adding to its budget. A connection that
/// worked last takes the pages of one that waited, past its own share; when the one that
/// waited works again, below its share, SQLite gives it fresh pages rather than taking back
/// the idle ones, and with the pool at its budget drops each of them as soon as it is
/// released. Measured in `append.rs`: commands on a new aggregate in a filled SQLite file
/// took 47.2 µs, the writer reading almost every page it touched again (15 cache misses and
/// 2 hits per command), while the idle store of the correlation-index benchmark held three
/// times its share; 31–33 µs without it. The minimal store's connection suffers alike (38.3
/// against 27.8 µs). A benchmark binary holds both sides and several stores in one process,
/// as an application rarely does; each measurement therefore starts from an empty pool, and
/// both sides warm their caches in criterion's warm-up alike.
pub fn settle_disk() {
    match std::process::Command::new("sync").status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("settle_disk: `sync` exited with {status}"),
        Err(err) => eprintln!("settle_disk: cannot run `sync`: {err}"),
    }
    empty_sqlite_page_caches();
}

/// Drops every unused page of every SQLite connection in the process (see [`settle_disk`]).
///
/// One connection's `sqlite3_db_release_memory` empties the whole pool: the pool has a single
/// least-recently-used list, and releasing memory drains it.
fn empty_sqlite_page_caches() {
    static SPARE: std::sync::OnceLock<std::sync::Mutex<Option<Connection>>> =
        std::sync::OnceLock::new();
    let spare = SPARE.get_or_init(|| {
        // A file of its own, for a page cache in the pool. SQLite holds the file open from
        // here on, so its directory goes at once: a static is never dropped to remove it.
        let opened = tempfile::tempdir()
            .ok()
            .and_then(|dir| Connection::open(dir.path().join("spare.db")).ok());
        std::sync::Mutex::new(opened)
    });
    let spare = spare
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(conn) = spare.as_ref() else {
        eprintln!("settle_disk: cannot open a connection to empty SQLite's page caches");
        return;
    };
    if let Err(err) = conn.release_memory() {
        eprintln!("settle_disk: cannot empty SQLite's page caches: {err}");
    }
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
    settle_disk();
    group.bench_function("store_read_all", |b| {
        b.to_async(rt)
            .iter(|| async { assert_eq!(read_whole_log(store).await, size) });
    });
    let (count, runner) = counting_projection(std::sync::Arc::new(store.clone()));
    settle_disk();
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
        .handle_with(&id, AccountCommand::open(), command_context())
        .await
        .expect("open");
}

/// Runs `op(n)` for `iters` fresh numbers `n` (taken from `counter`), spread over `tasks`
/// concurrent tasks, and returns the total time: criterion's time per iteration is then the
/// time per operation at that concurrency.
///
/// Each operation takes its number from `counter` as it starts, so the numbers follow time
/// across tasks, as a clock-ordered id does (a new aggregate's id in a real application, the
/// reference app's UUIDv7s) and as a sequential run's do. Handing each task a block of numbers
/// instead would put sixteen tasks' new streams in sixteen places of a store's stream index,
/// a page each per commit, which neither the sequential baselines nor such an application has.
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
    use std::sync::atomic::{AtomicU64, Ordering};
    let first = counter.fetch_add(iters, Ordering::Relaxed);
    let taken = std::sync::Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let share = iters / tasks + u64::from(t < iters % tasks);
            let (op, taken) = (op.clone(), std::sync::Arc::clone(&taken));
            tokio::spawn(async move {
                for _ in 0..share {
                    op(first + taken.fetch_add(1, Ordering::Relaxed)).await;
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
    postgres_pair_with(
        rt,
        cqrs_store_postgres::PostgresOptions::default(),
        connections,
    )
}

/// As [`postgres_pair`], the store opened with `options`.
///
/// # Panics
///
/// Panics if the server is there but the store or the pool cannot open.
pub fn postgres_pair_with(
    rt: &tokio::runtime::Runtime,
    options: cqrs_store_postgres::PostgresOptions,
    connections: u32,
) -> Option<(cqrs_store_postgres::PostgresEventStore, sqlx::PgPool)> {
    let server =
        cqrs_store_postgres::testing::server(cqrs_store_postgres::testing::Durability::Durable)?;
    let url = rt.block_on(server.fresh_database());
    let store = rt
        .block_on(cqrs_store_postgres::PostgresEventStore::connect_with(
            &url, options,
        ))
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

/// Gives account `id` a history of `n` events in `store` ([`account_history`]).
///
/// # Panics
///
/// Panics if the stream exists or the store fails.
pub async fn fill_account<S: cqrs_core::EventStore + ?Sized>(store: &S, id: &str, n: u64) {
    let stream = <Account as cqrs_core::Aggregate>::stream_id(&id.to_owned()).expect("stream");
    store
        .append(
            &stream,
            cqrs_core::ExpectedVersion::NoStream,
            account_history(n),
        )
        .await
        .expect("fill");
}

/// The events of an account opened and given `n - 1` deposits, as a store is handed them.
///
/// # Panics
///
/// Panics if an event does not encode.
#[must_use]
pub fn account_history(n: u64) -> Vec<cqrs_core::NewEvent> {
    let event = |e: &AccountEvent| {
        let (event_type, payload) = cqrs_core::encode_message(e).expect("encodes");
        cqrs_core::NewEvent::new(event_type, payload).with_metadata(event_metadata())
    };
    let mut events = vec![event(&AccountEvent::opened())];
    events.extend((1..n).map(|_| event(&AccountEvent::deposited(100))));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workload is what the benchmarks claim: events of about 200 bytes of JSON and
    /// about 100 bytes of metadata.
    #[test]
    fn events_are_realistic() {
        let deposit = RawEvent::new(&AccountEvent::deposited(100));
        assert!(
            (180..=260).contains(&deposit.payload.len()),
            "{}",
            deposit.payload.len()
        );
        assert!(
            (90..=140).contains(&deposit.metadata.len()),
            "{}",
            deposit.metadata.len()
        );
        let opened = RawEvent::new(&AccountEvent::opened());
        assert!(
            (150..=280).contains(&opened.payload.len()),
            "{}",
            opened.payload.len()
        );
    }

    /// The minimal store refuses a stale writer and folds what it wrote.
    #[test]
    fn the_minimal_store_checks_versions() {
        let dir = tempfile::tempdir().expect("dir");
        let raw = RawSqlite::open(&dir.path().join("raw.db"), "NORMAL");
        assert_eq!(raw.command("account-a", &AccountCommand::open()), 1);
        assert_eq!(raw.command("account-a", &AccountCommand::deposit(250)), 2);
        let stale = RawEvent::new(&AccountEvent::deposited(1));
        assert_eq!(raw.append("account-a", 1, &[stale]), Err(RawConflict));
        assert_eq!(raw.load("account-a"), (Some(Account { balance: 250 }), 2));
        raw.fill("account-b", 1, 10);
        assert_eq!(raw.scan(), 12);
    }
}
