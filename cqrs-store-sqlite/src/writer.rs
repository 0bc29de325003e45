//! The writer thread: it owns the write connection and commits every waiting write in one
//! transaction (group commit), each write in its own savepoint so that one failure does not
//! spoil the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;

use cqrs_core::{CommitNotifier, StoreError};
use rusqlite::Connection;
use tokio::sync::oneshot;

/// The most writes one transaction takes, so that a flood of writers still sees commits.
const MAX_GROUP: usize = 1024;

/// A unit of work for the writer: runs inside the group transaction, in a savepoint.
pub(crate) struct Job {
    run: RunFn,
}

/// Given the connection, or why there is no transaction to run in.
type RunFn = Box<dyn FnOnce(Result<&Connection, String>) -> Ran + Send>;

/// What a job did.
struct Ran {
    /// Whether its writes stand (false rolls back its savepoint).
    ok: bool,
    /// Whether it appended events (subscribers are woken after the commit).
    appended: bool,
    /// Answers the caller once the transaction has ended: `Ok` if it committed.
    done: Box<dyn FnOnce(Result<(), String>) + Send>,
}

impl Job {
    /// A job running `f`, and the receiver of its result, which arrives only once its writes
    /// are durable (or have failed).
    pub(crate) fn new<T, F>(appends: bool, f: F) -> (Self, oneshot::Receiver<Result<T, StoreError>>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |conn: Result<&Connection, String>| {
            match conn
                .map_err(|why| StoreError::backend(CommitFailed(why)))
                .and_then(f)
            {
                Ok(value) => Ran {
                    ok: true,
                    appended: appends,
                    done: Box::new(move |committed: Result<(), String>| {
                        let _ = tx.send(
                            committed
                                .map(|()| value)
                                .map_err(|why| StoreError::backend(CommitFailed(why))),
                        );
                    }),
                },
                Err(err) => Ran {
                    ok: false,
                    appended: false,
                    done: Box::new(move |_| {
                        let _ = tx.send(Err(err));
                    }),
                },
            }
        });
        (Self { run }, rx)
    }
}

/// The group transaction failed to commit.
#[derive(Debug, thiserror::Error)]
#[error("the transaction failed to commit: {0}")]
struct CommitFailed(String);

/// The handle to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    stats: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    writes: AtomicU64,
    submitted: AtomicU64,
}

/// What the writer thread has done so far: how well group commit is grouping.
///
/// # Examples
///
/// ```
/// # tokio_test::block_on(async {
/// let store = cqrs_store_sqlite::SqliteEventStore::open_in_memory().await?;
/// let stats = store.writer_stats();
/// assert!(stats.transactions >= 1, "opening the store migrated its schema");
/// assert_eq!(stats.queued, 0);
/// # Ok::<(), cqrs_core::StoreError>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Transactions committed (or attempted).
    pub transactions: u64,
    /// Writes (appends and other jobs) run in them.
    pub writes: u64,
    /// Writes submitted and not yet picked up by the writer.
    pub queued: u64,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    ///
    /// # Errors
    ///
    /// The backend error if the thread cannot start.
    pub(crate) fn spawn(conn: Connection, notifier: CommitNotifier) -> Result<Self, StoreError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(Counters::default());
        // Opening the store ran its migration in a transaction of its own.
        stats.transactions.store(1, Ordering::Relaxed);
        let counters = Arc::clone(&stats);
        thread::Builder::new()
            .name("cqrs-sqlite-writer".into())
            .spawn(move || run(conn, &rx, &notifier, &counters))
            .map_err(StoreError::backend)?;
        Ok(Self { jobs, stats })
    }

    /// The writer's counters.
    pub(crate) fn stats(&self) -> WriterStats {
        let transactions = self.stats.transactions.load(Ordering::Acquire);
        let writes = self.stats.writes.load(Ordering::Acquire);
        let submitted = self.stats.submitted.load(Ordering::Acquire);
        WriterStats {
            transactions,
            writes,
            queued: submitted.saturating_sub(writes),
        }
    }

    /// Runs `f` on the writer and waits, without blocking the executor, for its durable result.
    ///
    /// # Errors
    ///
    /// [`StoreError::Closed`] if the writer has stopped, or `f`'s error.
    pub(crate) async fn write<T, F>(&self, appends: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, rx) = Job::new(appends, f);
        self.stats.submitted.fetch_add(1, Ordering::AcqRel);
        self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(conn: Connection, jobs: &mpsc::Receiver<Job>, notifier: &CommitNotifier, stats: &Counters) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    // The thread ends when every handle to the store is gone; dropping `conn` then closes the
    // file cleanly (and checkpoints the WAL).
    while let Ok(first) = jobs.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        stats.writes.fetch_add(group.len() as u64, Ordering::AcqRel);
        commit_group(&conn, &mut group, notifier);
        stats.transactions.fetch_add(1, Ordering::AcqRel);
    }
}

fn commit_group(conn: &Connection, group: &mut Vec<Job>, notifier: &CommitNotifier) {
    let size = group.len();
    let span = tracing::trace_span!("cqrs.sqlite.group_commit", jobs = size);
    let _enter = span.enter();
    if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Without a transaction nothing may run: every job fails alike.
        let why = format!("cannot begin a write transaction: {err}");
        tracing::error!(error = %why, "sqlite writer");
        for job in group.drain(..) {
            ((job.run)(Err(why.clone())).done)(Err(why.clone()));
        }
        return;
    }
    let mut ran = Vec::with_capacity(size);
    let mut appended = false;
    for job in group.drain(..) {
        let savepoint = conn.execute_batch("SAVEPOINT job");
        let outcome = match savepoint {
            Ok(()) => (job.run)(Ok(conn)),
            Err(err) => (job.run)(Err(format!("cannot open a savepoint: {err}"))),
        };
        let closed = if outcome.ok {
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        if let Err(err) = closed {
            tracing::error!(error = %err, "sqlite: cannot close a savepoint");
        }
        appended |= outcome.ok && outcome.appended;
        ran.push(outcome);
    }
    let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    if committed.is_ok() && appended {
        notifier.notify();
    }
    for outcome in ran {
        (outcome.done)(committed.clone());
    }
}
